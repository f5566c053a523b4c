"""Hydra callbacks of the BDPO recipe (``hydra.callbacks`` in ``config/config.yaml``).

:class:`SweepSummary` ends a multirun sweep with where its results are, the jobs that failed
and the command that aggregates the results into tables, and exits with status 1 when a job
failed:

    Sweep finished: 9 of 10 jobs wrote a summary.json under multirun/2026-01-01_10-00-00
      job 3 failed (exit 2): task=antmaze-large-play-v0 seed=1: Dataset 'antmaze-large-play-v0' is ...
    Aggregate them: python recipes/aggregate_results.py multirun/2026-01-01_10-00-00 --out ...

A job that fails records itself with :func:`record_failed_job` (the recipe does this instead
of ending the whole sweep), so the other jobs still run.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

AGGREGATE_SCRIPT = Path(__file__).resolve().parent / "aggregate_results.py"
#: the sweep directory's record of its failed jobs, one JSON object a line
FAILED_JOBS = "failed_jobs.jsonl"


def record_failed_job(
    sweep_dir: Path, job: int, overrides: list[str], run_dir: Path, code: int, error: str
) -> None:
    """Appends a failed job to ``sweep_dir``/:data:`FAILED_JOBS` (one ``O_APPEND`` write per
    job, so parallel jobs' lines do not interleave)."""
    line = json.dumps(
        {
            "job": int(job),
            "overrides": list(overrides),
            "run_dir": str(run_dir),
            "exit_code": int(code),
            "error": error,
        }
    )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(sweep_dir / FAILED_JOBS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def failed_jobs(sweep_dir: Path) -> list[dict]:
    """The records :func:`record_failed_job` wrote for ``sweep_dir``, by job number, less those
    of jobs that have a ``summary.json`` by now (a sweep run again into the same directory)."""
    path = sweep_dir / FAILED_JOBS
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = [r for r in records if not (Path(r["run_dir"]) / "summary.json").is_file()]
    return sorted(records, key=lambda r: r["job"])


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def sweep_report(sweep_dir: Path, shared: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The lines :class:`SweepSummary` prints for the sweep in ``sweep_dir``; a failed job is
    named by its overrides less the ``shared`` ones (the sweep's command-line overrides that
    every job got as they are)."""
    jobs = {h.parent.resolve() for h in sweep_dir.rglob(".hydra") if h.is_dir()}
    done = {p.parent.resolve() for p in sweep_dir.rglob("summary.json")}
    failed = failed_jobs(sweep_dir)
    failed_dirs = {Path(r["run_dir"]).resolve() for r in failed}
    shown = _shown(sweep_dir)
    total = len(jobs | done | failed_dirs)
    lines = [f"Sweep finished: {len(done)} of {total} jobs wrote a summary.json under {shown}"]
    common = set(shared)
    for r in failed:
        own = " ".join(o for o in r["overrides"] if o not in common) or "(no own overrides)"
        first = r["error"].splitlines()[0] if r["error"] else ""
        lines.append(f"  job {r['job']} failed (exit {r['exit_code']}): {own}: {first}")
    for job in sorted(jobs - done - failed_dirs):
        lines.append(f"  no summary.json (failed or interrupted): {_shown(job)}")
    out = os.path.join(shown, "results")
    cmd = ["python", _shown(AGGREGATE_SCRIPT), shown, "--out", out]
    lines.append(f"Aggregate them: {shlex.join(cmd)}   (writes {out}.md and {out}.csv)")
    return lines


class SweepSummary(Callback):
    """Prints :func:`sweep_report` when a multirun sweep ends; exit status 1 if a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        shared = list(config.hydra.overrides.task)
        print("\n".join(sweep_report(sweep_dir, shared)), flush=True)
        if failed_jobs(sweep_dir):
            sys.exit(1)
