"""Learning curves of a BDPO run: ``curves.png`` from the run directory's scalars.

The recipe draws it at the end of every run; redraw it (e.g. for a run still going, or an
older one) with::

    python recipes/plots.py runs/<task>/seed0_<time> [more run dirs]

Panels (those with data): behavior loss, critic losses, actor loss, Q/V batch means, KL terms
(the Q target's penalty, the actor's KL, the per-step terms ``kl_per_step/n``), the
evaluations (normalised score and return for control tasks; energy distance and mean reward for
2-D tasks, with the behavior data's and the exact target's values dashed) and the update rate,
all against the update counter, with the end of behavior pre-training marked. Training scalars
come from the CSV logs (``logger.backend=csv``, the default); the evaluations also from
``summary.json`` when the run logged elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["PANELS", "curve_panels", "main", "plot_learning_curves", "read_scalars"]

logger = logging.getLogger(__name__)

#: (title, scalar keys; a trailing ``/*`` takes every entry of a vector, log scale if positive)
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("behavior loss (noise prediction)", ("pretrain/loss_behavior", "train/loss_behavior"), True),
    ("critic losses", ("train/loss_qvalue", "train/loss_value"), True),
    ("actor loss", ("train/loss_actor",), False),
    (
        "Q and V (batch means)",
        ("train/q_mean", "train/target_q", "train/v_mean", "train/target_v", "train/actor_value"),
        False,
    ),
    ("KL terms", ("train/penalty", "train/actor_kl", "train/kl_per_step/*"), True),
    ("evaluation: normalised score", ("eval/normalized_score_mean",), False),
    ("evaluation: return", ("eval/return_mean",), False),
    (
        "evaluation: energy distance to the target",
        ("eval/energy_distance_actor", "eval/energy_distance_behavior"),
        False,
    ),
    (
        "evaluation: mean reward",
        ("eval/mean_reward_actor", "eval/mean_reward_behavior", "eval/mean_reward_target"),
        False,
    ),
    ("updates per second", ("pretrain/updates_per_s", "train/updates_per_s"), False),
)


def _dashed(key: str) -> bool:
    """Reference lines: the behavior data's and exact target's evaluations, the TD targets."""
    name = key.rsplit("/", 1)[-1]
    return (key.startswith("eval/") and name.endswith(("_behavior", "_target"))) or (
        name.startswith("target_")
    )


def _log_scale(values: np.ndarray) -> bool:
    """Log y for positive values spanning more than a decade."""
    values = values[np.isfinite(values)]
    return values.size > 0 and values.min() > 0 and values.max() > 10 * values.min()


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    rows: dict[float, float] = {}
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) == 2:
            try:  # a resumed run logs some steps twice: the last value wins
                rows[float(parts[0])] = float(parts[1])
            except ValueError:
                continue
    if not rows:
        return None
    steps = np.array(sorted(rows))
    return steps, np.array([rows[s] for s in steps])


def read_scalars(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train/loss_qvalue": (updates, values), ...}`` of a run directory.

    From the CSV logs (``<run dir>/logs/<name>/scalars/**.csv``); the ``eval/...`` curves from
    ``summary.json``'s evaluations when the CSV logs have none (another logger backend).
    """
    run_dir = Path(run_dir)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for scalars in sorted((run_dir / "logs").glob("*/scalars")):
        for path in sorted(scalars.rglob("*.csv")):
            data = _read_csv(path)
            if data is not None:
                out[path.relative_to(scalars).with_suffix("").as_posix()] = data
    summary = run_dir / "summary.json"
    if not any(k.startswith("eval/") for k in out) and summary.is_file():
        evals = json.loads(summary.read_text()).get("evaluations") or []
        keys = {k for e in evals for k, v in e.items() if isinstance(v, (int, float))}
        for key in sorted(keys - {"step", "train_step", "episodes"}):
            pts = [(e["step"], e[key]) for e in evals if isinstance(e.get(key), (int, float))]
            if pts:
                steps, values = zip(*pts)
                out[f"eval/{key}"] = (np.asarray(steps, float), np.asarray(values, float))
    return out


def _run_info(run_dir: Path) -> tuple[str, int | None]:
    """The title (task, seed, run directory) and the number of pre-training updates."""
    task, seed, pretrain = None, None, None
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        task, seed = s.get("task"), s.get("seed")
        if s.get("dataset") and s["dataset"] != task:  # task=custom: name the data
            task = f"{task} ({s['dataset']})"
        pretrain = (s.get("steps") or {}).get("pretrain")
    elif (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(run_dir / "config.yaml")
        task, seed = cfg.get("task_name"), cfg.get("seed")
        pretrain = OmegaConf.select(cfg, "optim.pretrain_steps")
    name = f"{task or run_dir.name}" + (f" seed {seed}" if seed is not None else "")
    return f"{name}: learning curves ({run_dir})", None if pretrain is None else int(pretrain)


def _series(scalars: dict, pattern: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not pattern.endswith("/*"):
        return [(pattern, *scalars[pattern])] if pattern in scalars else []
    prefix = pattern[:-1]
    keys = [k for k in scalars if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    return [(k, *scalars[k]) for k in sorted(keys, key=lambda k: int(k[len(prefix) :]))]


def curve_panels(scalars: dict) -> list[tuple[str, list, bool]]:
    """The :data:`PANELS` with data: ``(title, [(key, updates, values), ...], log_scale)``."""
    panels = []
    for title, patterns, log_scale in PANELS:
        series = [s for p in patterns for s in _series(scalars, p)]
        if series:
            panels.append((title, series, log_scale))
    return panels


def plot_learning_curves(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Writes ``curves.png`` (or ``path``) for ``run_dir``; ``None`` when it has no scalars."""
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir)
    panels = curve_panels(scalars)
    if not panels:
        logger.warning("no scalars to plot in %s (logger.backend=csv logs them)", run_dir)
        return None
    title, pretrain = _run_info(run_dir)
    if not any(k.startswith(("train/", "pretrain/")) for k in scalars):
        title += "\ntraining scalars are only in the CSV logs (logger.backend=csv)"
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained"
    )
    last = max(float(steps[-1]) for steps, _ in scalars.values())
    for ax, (name, series, log_scale) in zip(axes.flat, panels):
        vector = [s for s in series if s[0].rsplit("/", 1)[-1].isdigit()]
        colour_of: dict[str, str] = {}
        colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(len(vector), 1)))
        for key, steps, values in series:
            style = {"marker": "o", "markersize": 3} if len(steps) <= 20 else {}
            if key in (v[0] for v in vector):  # kl_per_step/n: a colour ramp over n, two labels
                i = [v[0] for v in vector].index(key)
                label = key if i in (0, len(vector) - 1) else None
                ax.plot(steps, values, color=colours[i], lw=0.8, label=label, **style)
                continue
            # a TD target in the colour of its estimate (target_q with q_mean)
            base = key.replace("target_", "").removesuffix("_mean")
            colour = colour_of.setdefault(base, f"C{len(colour_of)}")
            ax.plot(
                steps,
                values,
                ls="--" if _dashed(key) else "-",
                lw=1.2,
                color=colour,
                label=key,
                **style,
            )
        if log_scale and _log_scale(np.concatenate([s[2] for s in series])):
            ax.set_yscale("log")
        ax.set_xlim(0, last * 1.02)  # one update axis for all panels
        if pretrain and pretrain > 0:
            ax.axvline(pretrain, color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.25)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if pretrain:
        title += "\ndotted line: end of behavior pre-training"
    fig.suptitle(title, fontsize=10)
    path = Path(path) if path is not None else run_dir / "curves.png"
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    logger.info("saved %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: (re)draws ``curves.png`` in each run directory; exit status 2 for a missing one."""
    parser = argparse.ArgumentParser(description="Draw curves.png of BDPO run directories.")
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    missing = [str(d) for d in args.run_dirs if not d.is_dir()]
    if missing:
        logger.error("no such run directory: %s", ", ".join(missing))
        return 2
    written = [plot_learning_curves(d) for d in args.run_dirs]
    for p in written:
        if p is not None:
            print(p)
    return 0 if all(written) else 1


if __name__ == "__main__":
    sys.exit(main())
