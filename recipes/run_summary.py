"""What a finished run reports: ``summary.json`` and the one-line evaluation log."""

from __future__ import annotations

from typing import Any

from bdpo_utils import TaskData, run_settings
from omegaconf import DictConfig

#: evaluation entries that are counters (the x axis), not metrics
EVAL_COUNTERS = ("step", "train_step", "episodes")
#: what ``summary.json`` reports of an environment evaluation
_ENV_FIELDS = (
    "step",
    "return_mean",
    "return_std",
    "normalized_score_mean",
    "normalized_score_std",
    "episodes",
)


def _number(value: float) -> str:
    """4 significant digits, without an exponent for returns in the thousands and above."""
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def eval_line(result: dict) -> str:
    """``key=value`` pairs of an evaluation, saying when the scores are raw returns."""
    text = ", ".join(
        f"{k}={_number(v)}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.items()
        if v is not None and k != "metric"
    )
    raw = result.get("metric") == "return"
    return text + (" (raw returns: no reference scores)" if raw else "")


def run_summary(
    cfg: DictConfig,
    task: TaskData,
    evals: list[dict],
    *,
    wall_time_s: float,
    updates_per_s: dict[str, float | None],
) -> dict[str, Any]:
    """The content of ``summary.json``: task, seed, settings, steps, timings (``wall_time_s``: the
    whole run; ``updates_per_s``: per phase, updates per second of update time, evaluations and
    checkpoints left out; ``None`` for a phase without updates), the final and the
    best evaluation of the training phase (D4RL-normalised scores, or raw returns labelled as
    such when the dataset has no reference scores; 2D distances for 2D tasks) and every
    evaluation."""
    trained = [e for e in evals if e.get("train_step", 0) > 0]
    final = trained[-1] if trained else None
    summary: dict[str, Any] = {
        "task": str(cfg.task_name),
        "domain": task.domain,
        "dataset": task.name,
        "seed": int(cfg.seed),
        "settings": run_settings(cfg),
        "steps": {"pretrain": int(cfg.optim.pretrain_steps), "train": int(cfg.optim.train_steps)},
        "wall_time_s": wall_time_s,
        "updates_per_s": updates_per_s,
        "eval": None,
        "toy2d": None,
        "evaluations": evals,
    }
    if task.domain == "toy2d":
        skip = ("step", "train_step", "eval_time_s")
        summary["toy2d"] = {k: v for k, v in (final or {}).items() if k not in skip}
    elif final is not None:
        key = (
            "normalized_score_mean"
            if final.get("normalized_score_mean") is not None
            else "return_mean"
        )
        best = max(trained, key=lambda e: e[key])
        refs = None
        if task.has_reference_scores:
            refs = {"min": task.ref_min_score, "max": task.ref_max_score}
        summary["eval"] = {
            # "normalized_score" (D4RL-style, from the reference scores) or "return" (raw
            # undiscounted returns: the dataset has no reference scores)
            "metric": task.score_metric,
            "reference_scores": refs,
            "final": {k: final.get(k) for k in _ENV_FIELDS},
            "best": {k: best.get(k) for k in _ENV_FIELDS},
        }
    return summary
