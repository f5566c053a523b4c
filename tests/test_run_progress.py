"""Recipe output off a terminal: plain progress lines, job-tagged sweep lines, no colour codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

from run_progress import Progress, plain_torchrl_logging, tag_job_log_lines  # noqa: E402


def test_off_a_terminal_progress_is_plain_log_lines(caplog, capsys):
    logger = logging.getLogger("test_progress")
    with caplog.at_level(logging.INFO, logger="test_progress"):
        bar = Progress(
            100, initial=10, desc="task", interval=0.0, logger=logger
        )  # stderr: captured
        assert bar.bar is None
        bar.set_postfix(phase="train")
        bar.update(40)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "task: update 10/100 (10%)"  # one line at the start
    assert lines[1].startswith("task: update 50/100 (50%), phase=train, ETA ")
    assert "\r" not in capsys.readouterr().err  # no bar refreshes


def test_plain_line_eta_is_the_phase_s_while_an_earlier_phase_runs(caplog, monkeypatch):
    """Pre-training's fast rate does not predict training's: its line says when *it* ends."""
    import run_progress

    now = [0.0]
    monkeypatch.setattr(run_progress.time, "time", lambda: now[0])
    logger = logging.getLogger("test_progress")
    with caplog.at_level(logging.INFO, logger="test_progress"):
        bar = Progress(1100, desc="task", interval=0.0, logger=logger)
        bar.set_phase("pretrain", 1000, start=0)
        now[0] = 10.0
        bar.update(500)  # 50 updates/s
        bar.set_phase("train", 1100)
        now[0] = 30.0
        bar.exclude(10.0)  # an evaluation
        bar.update(20)  # 2 updates/s over the 10 s of updates
    lines = [r.getMessage() for r in caplog.records]
    assert lines[1] == "task: update 500/1100 (45%), pretrain ends in 0:00:10"
    assert lines[2] == "task: update 520/1100 (47%), ETA 0:04:50"


def test_plain_lines_come_once_per_interval(caplog):
    logger = logging.getLogger("test_progress")
    with caplog.at_level(logging.INFO, logger="test_progress"):
        bar = Progress(10_000, desc="task", interval=3600.0, logger=logger)
        for _ in range(10_000):
            bar.update()
    assert len(caplog.records) == 1  # the start line; the next is an hour away


def test_job_tag_prefixes_every_root_handler_once():
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
    root.addHandler(handler)
    try:
        tag_job_log_lines("hopper seed=1")
        tag_job_log_lines("hopper seed=1")  # idempotent: one prefix
        record = logging.LogRecord("bdpo", logging.INFO, __file__, 1, "eval", None, None)
        assert handler.format(record) == "[hopper seed=1] INFO - eval"
    finally:
        root.removeHandler(handler)


def test_torchrl_lines_go_through_the_root_handlers():
    torchrl_log = logging.getLogger("torchrl")
    state = (list(torchrl_log.handlers), torchrl_log.propagate, torchrl_log.level)
    try:
        plain_torchrl_logging()
        assert torchrl_log.handlers == [] and torchrl_log.propagate
        assert not torchrl_log.isEnabledFor(logging.INFO)  # library detail stays out
    finally:
        torchrl_log.handlers[:] = state[0]
        torchrl_log.propagate, torchrl_log.level = state[1], state[2]


@pytest.mark.parametrize("tty", [True, False])
def test_bar_only_on_a_terminal(monkeypatch, tty):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    bar = Progress(5, desc="task")
    assert (bar.bar is not None) == tty
    bar.close()


def test_evaluation_line_keeps_large_returns_readable():
    """HalfCheetah's returns are in the ten thousands: no exponent notation in the log line."""
    from run_summary import eval_line

    result = {"step": 900, "return_mean": 12140.52, "return_std": 97.31, "eval_time_s": 0.12345}
    line = eval_line({**result, "normalized_score_mean": None, "metric": "return"})
    assert line == (
        "step=900, return_mean=12140.5, return_std=97.31, eval_time_s=0.1235 "
        "(raw returns: no reference scores)"
    )
