"""The recipe loop's metric window and non-finite watch: deferred reductions give the plain values."""

from __future__ import annotations

import math

import pytest
import torch
import training_loop
from training_loop import MetricWindow, NonFiniteWatch


class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.lines.append((step, {k: float(v) for k, v in metrics.items()}))


@pytest.mark.parametrize("fold_every", [2, 3, 1024])
def test_metric_window_logs_the_means_of_each_window(monkeypatch, fold_every):
    monkeypatch.setattr(training_loop, "FOLD_EVERY", fold_every)
    logger = RecordingLogger()
    window = MetricWindow(logger, every=5, boundaries=(7,), step=0)
    losses = [float(i) ** 1.5 for i in range(1, 11)]
    for step, value in enumerate(losses, start=1):
        out = {"loss_q": torch.tensor(value), "kl_per_step": torch.tensor([value, 2 * value])}
        if step % 2 == 0:  # produced on some updates only (the actor's)
            out["loss_actor"] = torch.tensor(-value, requires_grad=True) * 1.0
        window.add("train", out)
        if window.due(step):
            window.flush(step, "train")
    assert [s for s, _ in logger.lines] == [5, 7, 10]
    for (_step, line), rows in zip(logger.lines, [range(0, 5), range(5, 7), range(7, 10)]):
        expected = sum(losses[i] for i in rows) / len(rows)
        assert line["train/loss_q"] == pytest.approx(expected, rel=1e-6)
        assert line["train/kl_per_step/1"] == pytest.approx(expected, rel=1e-6)
        assert line["train/kl_per_step/2"] == pytest.approx(2 * expected, rel=1e-6)
        actor = [-losses[i] for i in rows if (i + 1) % 2 == 0]
        assert line["train/loss_actor"] == pytest.approx(sum(actor) / len(actor), rel=1e-6)
        assert line["train/updates_per_s"] > 0


def test_metric_window_rate_leaves_out_excluded_time(monkeypatch):
    """An evaluation or a checkpoint between two log lines does not count as update time."""
    clock = iter([100.0, 110.0, 130.0])  # window start, first flush, second flush
    monkeypatch.setattr(training_loop.time, "time", lambda: next(clock))
    logger = RecordingLogger()
    window = MetricWindow(logger, every=10, boundaries=(), step=0)
    window.add("train", {"loss_q": torch.tensor(1.0)})
    window.flush(10, "train")  # 10 updates in 10 s
    window.add("train", {"loss_q": torch.tensor(1.0)})
    window.exclude(15.0)  # an evaluation took 15 of the next 20 s
    window.flush(20, "train")
    assert [line["train/updates_per_s"] for _, line in logger.lines] == [1.0, 2.0]


def test_metric_window_state_round_trip_and_without_a_logger_nothing_lingers():
    logger = RecordingLogger()
    window = MetricWindow(logger, every=10, boundaries=(), step=0)
    for value in (1.0, 3.0):
        window.add("train", {"loss_q": torch.tensor(value)})
    state = window.state_dict()  # a checkpoint between two log lines
    resumed = MetricWindow(logger, every=10, boundaries=(), step=2)
    resumed.load_state_dict(state)
    resumed.add("train", {"loss_q": torch.tensor(5.0)})
    resumed.flush(3, "train")
    assert logger.lines[-1][1]["train/loss_q"] == pytest.approx(3.0)  # (1 + 3 + 5) / 3
    # resumed with logging off: the restored sums are dropped at the next line, not carried on
    quiet = MetricWindow(None, every=10, boundaries=(), step=2)
    quiet.load_state_dict(state)
    quiet.flush(10, "train")
    assert quiet.state_dict() == {}


def test_metric_window_keeps_copies_when_outputs_are_overwritten():
    logger = RecordingLogger()
    window = MetricWindow(logger, every=3, boundaries=(), step=0, copy=True)
    buffer = torch.zeros(())  # a CUDA-graph output: the same memory every update
    for step in range(1, 4):
        buffer.fill_(float(step))
        window.add("pretrain", {"loss_behavior": buffer})
    window.flush(3, "pretrain")
    assert logger.lines[0][1]["pretrain/loss_behavior"] == pytest.approx(2.0)


def test_metric_window_without_logger_keeps_nothing():
    window = MetricWindow(None, every=1, boundaries=(), step=0)
    window.add("train", {"loss_q": torch.tensor(1.0)})
    assert window.pending == {} and window.sums == {}
    window.flush(1, "train")


@pytest.mark.parametrize("fold_every", [2, 3, 1024])
def test_non_finite_watch_finds_the_first_bad_update_per_name(monkeypatch, fold_every):
    monkeypatch.setattr(training_loop, "FOLD_EVERY", fold_every)
    watch = NonFiniteWatch()
    ok = torch.tensor(1.0)
    for step in range(12):
        watch.add(step, "loss_behavior", ok, ok)
        q = torch.tensor(math.inf if step in (7, 9) else 1.0)
        watch.add(step, "loss_qvalue/loss_value", ok, q, ok, ok)
        actor_norm = torch.tensor(math.nan if step >= 7 else 0.5)
        watch.add(step, "loss_actor", ok, actor_norm)
    # both at update 7, in the order an update watches them
    assert watch.first_bad() == [(7, "loss_qvalue/loss_value"), (7, "loss_actor")]
    assert watch.first_bad() == [(7, "loss_qvalue/loss_value"), (7, "loss_actor")]  # kept


def test_non_finite_watch_all_finite_and_copies():
    watch = NonFiniteWatch(copy=True)
    value = torch.zeros(())
    for step in range(5):
        value.fill_(math.nan if step == 4 else 0.0)  # overwritten in place after being watched
        watch.add(step, "loss_behavior", value)
        value.fill_(math.inf)
    assert watch.first_bad() == [(4, "loss_behavior")]
    assert NonFiniteWatch().first_bad() == []
