"""Hydra callbacks of the BDPO recipe (``hydra.callbacks`` in ``config/config.yaml``).

:class:`SweepSummary` ends a multirun sweep with where its results are and the command that
aggregates them into tables:

    Sweep finished: 10 of 10 jobs wrote a summary.json under multirun/2026-01-01_10-00-00
    Aggregate them: python recipes/aggregate_results.py multirun/2026-01-01_10-00-00 --out ...
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

AGGREGATE_SCRIPT = Path(__file__).resolve().parent / "aggregate_results.py"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def sweep_report(sweep_dir: Path) -> list[str]:
    """The lines :class:`SweepSummary` prints for the sweep in ``sweep_dir``."""
    jobs = {h.parent for h in sweep_dir.rglob(".hydra") if h.is_dir()}
    done = {p.parent for p in sweep_dir.rglob("summary.json")}
    shown = _shown(sweep_dir)
    lines = [
        f"Sweep finished: {len(done)} of {len(jobs | done)} jobs wrote a summary.json under {shown}"
    ]
    for job in sorted(jobs - done):
        lines.append(f"  no summary.json (failed or interrupted): {_shown(job)}")
    out = os.path.join(shown, "results")
    cmd = ["python", _shown(AGGREGATE_SCRIPT), shown, "--out", out]
    lines.append(f"Aggregate them: {shlex.join(cmd)}   (writes {out}.md and {out}.csv)")
    return lines


class SweepSummary(Callback):
    """Prints :func:`sweep_report` when a multirun sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print("\n".join(sweep_report(Path(str(config.hydra.sweep.dir)))), flush=True)
