"""Aggregate BDPO run summaries into the paper's results tables.

Every run of ``recipes/bdpo_offline.py`` writes a ``summary.json`` into its run directory;
Hydra multirun sweeps put them under ``multirun/<date>_<time>/<task>_seed<k>_<job_num>/``. This script
finds them all (recursively), groups them by task and settings (runs of one task whose
``settings`` differ, e.g. an ``loss.eta`` sweep, form separate rows labelled with the keys
that differ; the seed never splits a group) and prints Markdown tables:

* offline RL tasks: per task ``mean ± std`` over seeds of the final and of the best
  normalised score (raw return where a dataset has no reference scores), with one
  "sum" row per domain for ``locomotion`` and ``antmaze`` (the paper's sum rows);
* toy 2-D tasks: the distances of actor and behavior samples to the exact target and
  the mean rewards.

``std`` is the sample standard deviation (``ddof=1``) over runs; it is undefined (NaN, shown
as ``n/a``) for a single run. Runs that repeat a seed all count; the Seeds cell then says so
(``2 (3 runs: seed 0 ×2)``).

Usage::

    python recipes/aggregate_results.py multirun/2025-01-01 [more dirs] [--out results/table]

``--out PREFIX`` also writes ``PREFIX.md`` and ``PREFIX.csv`` (one row per task and settings
variant: task, domain, distinct seeds, runs, runs behind the means (``scored``), metric (``normalized_score``, or ``return`` for raw
returns of datasets without reference scores), final/best mean and std, the 2-D metrics' mean and
std; empty cells for missing values). A path that does not exist is one error line and exit
status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CSV_COLUMNS",
    "DOMAIN_ORDER",
    "SUM_DOMAINS",
    "TOY2D_METRICS",
    "TaskRow",
    "aggregate",
    "domain_sums",
    "find_summaries",
    "load_summaries",
    "main",
    "to_csv",
    "to_markdown",
]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
#: Order of the domains in the tables; unknown domains follow, alphabetically.
DOMAIN_ORDER: tuple[str, ...] = ("locomotion", "antmaze", "custom", "toy2d")
#: Domains that get a "sum of task means" row (as in the paper).
SUM_DOMAINS: tuple[str, ...] = ("locomotion", "antmaze")
#: Keys of a summary's ``toy2d`` block, in table order.
TOY2D_METRICS: tuple[str, ...] = (
    "energy_distance_actor",
    "energy_distance_behavior",
    "sliced_wasserstein_actor",
    "sliced_wasserstein_behavior",
    "mean_reward_actor",
    "mean_reward_behavior",
    "mean_reward_target",
)
CSV_COLUMNS: tuple[str, ...] = (
    "task",
    "domain",
    "seeds",
    "runs",
    "scored",
    "metric",
    "final_mean",
    "final_std",
    "best_mean",
    "best_std",
    *(f"{k}_{s}" for k in TOY2D_METRICS for s in ("mean", "std")),
)
_NAN = float("nan")


@dataclass
class TaskRow:
    """Statistics of one task over its runs (NaN where a value is missing).

    ``seeds`` counts distinct seeds, ``runs`` the runs (more when a seed was run twice; a run
    without a seed counts as its own seed), ``scored`` the runs behind the means (those with a
    final evaluation; for 2-D tasks, with 2-D metrics). ``metric`` is ``"normalized_score"`` or ``"return"`` (no reference scores).
    ``toy2d`` maps each of :data:`TOY2D_METRICS` present in the runs to ``(mean, std)``.
    """

    task: str
    domain: str
    seeds: int
    runs: int = 0
    final_mean: float = _NAN
    final_std: float = _NAN
    best_mean: float = _NAN
    best_std: float = _NAN
    metric: str = "normalized_score"
    seed_ids: list[Any] = field(default_factory=list)
    scored: int | None = None  # None: every run
    toy2d: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the settings that set this row apart from the task's other rows (``"k=v, ..."``)
    variant: str = ""

    @property
    def repeated_seeds(self) -> dict[Any, int]:
        """Seeds that appear in more than one run, with their number of runs."""
        counts: dict[Any, int] = {}
        for s in self.seed_ids:
            if s is not None:
                counts[s] = counts.get(s, 0) + 1
        return {s: n for s, n in sorted(counts.items(), key=lambda kv: str(kv[0])) if n > 1}

    @property
    def seeds_cell(self) -> str:
        """``"3"``; ``"2 (3 runs: seed 0 ×2)"`` when runs repeat a seed; ``"4 (3 scored)"`` when
        only 3 runs have an evaluation behind the means."""
        notes = []
        if self.runs > self.seeds:
            repeats = ", ".join(f"seed {s} ×{n}" for s, n in self.repeated_seeds.items())
            notes.append(f"{self.runs} runs: {repeats}")
        if self.scored is not None and self.scored < self.runs:
            notes.append(f"{self.scored} scored")
        return f"{self.seeds} ({'; '.join(notes)})" if notes else str(self.seeds)

    @property
    def label(self) -> str:
        return f"{self.task} [{self.variant}]" if self.variant else self.task


# --------------------------------------------------------------------------- discovery / loading
def _is_run_dir(d: Path) -> bool:
    """Whether ``d`` looks like a Hydra run directory (has a ``.hydra`` subfolder)."""
    return (d / ".hydra").is_dir()


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    """All ``summary.json`` files under ``paths`` (recursively; files are taken as they are).

    Hydra run directories (those with a ``.hydra`` folder) without a summary are skipped with
    a warning (unfinished or crashed runs). Raises ``FileNotFoundError`` for a missing path.
    """
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such file or directory: {p}")
        if p.is_file():
            found.add(p.resolve())
            continue
        found.update(f.resolve() for f in p.rglob(SUMMARY_NAME) if f.is_file())
        run_dirs = [h.parent for h in p.rglob(".hydra") if h.is_dir()]
        if _is_run_dir(p):
            run_dirs.append(p)
        for d in sorted(set(run_dirs)):
            if not (d / SUMMARY_NAME).is_file():
                logger.warning("skipping run without %s: %s", SUMMARY_NAME, d)
    return sorted(found)


def load_summaries(paths: Iterable[str | Path]) -> list[dict]:
    """Parse summary files; each dict gets its source file under ``"_path"``.

    Raises ``ValueError`` naming the file for malformed JSON or a summary without ``task``;
    skips, with a warning, the summaries of ``recipes/collect_dataset.py`` runs.
    """
    out = []
    for p in map(Path, paths):
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed summary file {p}: {e}") from e
        if isinstance(data, dict) and "task" not in data and {"env_id", "datasets"} <= set(data):
            # recipes/collect_dataset.py's summary (its runs default to runs/collect/...)
            logger.warning("skipping %s: a dataset collector's summary, not a BDPO run", p)
            continue
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            raise ValueError(f"malformed summary file {p}: expected an object with a 'task' string")
        data["_path"] = str(p)
        out.append(data)
    return out


# --------------------------------------------------------------------------- statistics
def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the finite values; NaN where undefined."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return _NAN, _NAN
    std = float(a.std(ddof=1)) if a.size >= 2 else _NAN
    return float(a.mean()), std


def _score(entry: dict | None, key: str) -> float | None:
    """``entry[key + '_mean']`` (``key`` is ``normalized_score`` or ``return``), None if absent."""
    if not entry:
        return None
    v = entry.get(f"{key}_mean")
    return None if v is None else float(v)


def _domain_key(domain: str) -> tuple[int, str]:
    idx = DOMAIN_ORDER.index(domain) if domain in DOMAIN_ORDER else len(DOMAIN_ORDER)
    return idx, domain


def _task_row(task: str, runs: list[dict]) -> TaskRow:
    domains = sorted({str(r.get("domain") or "custom") for r in runs})
    if len(domains) > 1:
        logger.warning(
            "task %s: runs disagree on the domain %s; using %s", task, domains, domains[0]
        )
    domain = domains[0]
    seed_ids = [r.get("seed") for r in runs]
    seeds = len({s for s in seed_ids if s is not None}) + sum(s is None for s in seed_ids)

    evals = [r.get("eval") or {} for r in runs]
    finals = [e.get("final") for e in evals]
    bests = [e.get("best") for e in evals]
    entries = [x for x in finals + bests if x]
    # Normalised score only if every available evaluation has one (otherwise mixing units).
    metric = "normalized_score"
    if entries and any(x.get("normalized_score_mean") is None for x in entries):
        metric = "return"
        if any(x.get("normalized_score_mean") is not None for x in entries):
            logger.warning("task %s: normalised score missing in some runs; using returns", task)

    row = TaskRow(
        task=task, domain=domain, seeds=seeds, runs=len(runs), metric=metric, seed_ids=seed_ids
    )
    if row.repeated_seeds:
        logger.warning(
            "task %s: seeds %s appear in more than one run; all %d runs are counted (the "
            "Seeds column says so)",
            task,
            list(row.repeated_seeds),
            row.runs,
        )
    final_vals = [_score(x, metric) for x in finals]
    best_vals = [_score(x, metric) for x in bests]
    row.final_mean, row.final_std = _mean_std(final_vals)
    row.best_mean, row.best_std = _mean_std(best_vals)
    row.scored = sum(v is not None for v in final_vals)
    if domain != "toy2d":
        for what, vals in (("final", final_vals), ("best", best_vals)):
            missing = sum(v is None for v in vals)
            if missing:
                logger.warning(
                    "task %s: %s score missing in %d of %d runs", task, what, missing, len(runs)
                )

    toys = [r.get("toy2d") for r in runs if r.get("toy2d")]
    if domain == "toy2d":
        row.scored = len(toys)
    if toys:
        for k in TOY2D_METRICS:
            vals = [t.get(k) for t in toys]
            if any(v is not None for v in vals):
                row.toy2d[k] = _mean_std([None if v is None else float(v) for v in vals])
    elif domain == "toy2d":
        logger.warning("task %s: toy2d domain but no run has toy2d metrics", task)
    return row


def _variants(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs of one task split by their ``settings`` (absent in older summaries: one group),
    keyed by the ``k=v`` list of the settings that differ between the groups."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[json.dumps(r.get("settings"), sort_keys=True)].append(r)
    if len(groups) == 1:
        return {"": runs}
    settings = {key: json.loads(key) or {} for key in groups}
    names = sorted({k for s in settings.values() for k in s})

    def shown(s: dict, k: str) -> str:  # an absent key differs from null; 1 from "1"
        return json.dumps(s[k]) if k in s else "<absent>"

    varying = [k for k in names if len({shown(s, k) for s in settings.values()}) > 1]
    out: dict[str, list[dict]] = {}
    for key, members in groups.items():
        label = ", ".join(f"{k}={shown(settings[key], k)}" for k in varying) or "no settings"
        out[label] = members
    return out


def aggregate(summaries: Iterable[dict]) -> list[TaskRow]:
    """Group summaries by task and settings; rows sorted by domain (:data:`DOMAIN_ORDER`),
    task name, then variant."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        by_task[s["task"]].append(s)
    rows = []
    for task, runs in by_task.items():
        for variant, members in _variants(runs).items():
            row = _task_row(task, members)
            row.variant = variant
            rows.append(row)
    return sorted(rows, key=lambda r: (_domain_key(r.domain), r.task, r.variant))


def domain_sums(rows: Iterable[TaskRow]) -> dict[str, dict[str, float]]:
    """Per :data:`SUM_DOMAINS` domain: sums of the task means (``final``, ``best``) and ``tasks``.

    Only tasks reported in normalised score are summed; a missing task mean makes the sum NaN.
    """
    out: dict[str, dict[str, float]] = {}
    for domain in SUM_DOMAINS:
        rs = [r for r in rows if r.domain == domain]
        if not rs:
            continue
        if any(r.variant for r in rs):
            logger.warning("no %s sum: some tasks have runs with different settings", domain)
            continue
        raw = [r.task for r in rs if r.metric != "normalized_score"]
        if raw:
            logger.warning("%s sum leaves out tasks without normalised scores: %s", domain, raw)
        rs = [r for r in rs if r.metric == "normalized_score"]
        out[domain] = {
            "final": float(sum(r.final_mean for r in rs)),
            "best": float(sum(r.best_mean for r in rs)),
            "tasks": len(rs),
        }
    return out


# --------------------------------------------------------------------------- output
def _fmt_sum(total: float) -> str:
    """A domain sum: ``"n/a"`` when a task mean is missing (the sum is NaN)."""
    return f"{total:.1f}" if math.isfinite(total) else "n/a"


def _fmt(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    s = f"{mean:.{digits}f}"
    return f"{s} ± {std:.{digits}f}" if math.isfinite(std) else f"{s} ± n/a"


def to_markdown(rows: Sequence[TaskRow]) -> str:
    """Markdown tables: offline RL tasks with domain sums, then toy 2-D tasks (if any)."""
    parts: list[str] = []
    rl_rows = [r for r in rows if r.domain != "toy2d"]
    toy_rows = [r for r in rows if r.domain == "toy2d"]
    if rl_rows:
        sums = domain_sums(rl_rows)
        lines = [
            "## Offline RL results",
            "",
            "Normalised score (raw return for tasks marked †): mean ± sample std (ddof=1) over "
            "runs (one per seed unless the Seeds cell says otherwise); final = last evaluation, "
            "best = best evaluation during training.",
            "",
            "| Task | Domain | Seeds | Final | Best |",
            "|---|---|---:|---:|---:|",
        ]
        for i, r in enumerate(rl_rows):
            name = r.label + (" †" if r.metric == "return" else "")
            lines.append(
                f"| {name} | {r.domain} | {r.seeds_cell} | "
                f"{_fmt(r.final_mean, r.final_std, 1)} | {_fmt(r.best_mean, r.best_std, 1)} |"
            )
            last_of_domain = i + 1 == len(rl_rows) or rl_rows[i + 1].domain != r.domain
            if last_of_domain and r.domain in sums:
                s = sums[r.domain]
                n = int(s["tasks"])
                lines.append(
                    f"| **{r.domain} sum** | {r.domain} | {n} task{'s' if n != 1 else ''} | "
                    f"{_fmt_sum(s['final'])} | {_fmt_sum(s['best'])} |"
                )
        parts.append("\n".join(lines))
    if toy_rows:
        headers = ["ED actor", "ED behavior", "SW actor", "SW behavior"]
        headers += ["Reward actor", "Reward behavior", "Reward target"]
        lines = [
            "## Toy 2-D tasks",
            "",
            "Distances to the exact regularised target (ED = energy distance, SW = sliced "
            "Wasserstein) and mean rewards: mean ± sample std (ddof=1) over runs (one per seed "
            "unless the Seeds cell says otherwise).",
            "",
            "| Task | Seeds | " + " | ".join(headers) + " |",
            "|---|---:|" + "---:|" * len(headers),
        ]
        for r in toy_rows:
            cells = []
            for k in TOY2D_METRICS:
                m, s = r.toy2d.get(k, (_NAN, _NAN))
                cells.append(_fmt(m, s, 2 if k.startswith("mean_reward") else 4))
            lines.append(f"| {r.label} | {r.seeds_cell} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    if not parts:
        return "_No runs found._\n"
    return "\n\n".join(parts) + "\n"


def _cell(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ""


def to_csv(rows: Iterable[TaskRow], path: str | Path) -> None:
    """Write one row per task (and settings variant) with :data:`CSV_COLUMNS` (empty cell for a
    missing value: the score columns of 2-D tasks, the 2-D columns of offline RL tasks)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in rows:
            toy = [v for k in TOY2D_METRICS for v in r.toy2d.get(k, (_NAN, _NAN))]
            w.writerow(
                [r.label, r.domain, r.seeds, r.runs, r.runs if r.scored is None else r.scored]
                + ["" if r.domain == "toy2d" else r.metric]
                + [_cell(v) for v in (r.final_mean, r.final_std, r.best_mean, r.best_std, *toy)]
            )
    logger.info("wrote %s", path)


# --------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the Markdown tables and returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write PREFIX.md and PREFIX.csv"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:  # a mistyped sweep directory: one line, the usage error status
        logger.error("no such directory: %s", ", ".join(missing))
        return 2
    try:
        files = find_summaries(args.dirs)
        summaries = load_summaries(files)
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 1
    if not summaries:
        logger.error("no %s found under %s", SUMMARY_NAME, ", ".join(map(str, args.dirs)))
        return 1
    logger.info("aggregating %d runs", len(summaries))
    rows = aggregate(summaries)
    md = to_markdown(rows)
    print(md, end="")
    if args.out is not None:
        md_path = args.out.with_name(args.out.name + ".md")
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md)
        logger.info("wrote %s", md_path)
        to_csv(rows, args.out.with_name(args.out.name + ".csv"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
