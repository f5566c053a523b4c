"""The parts of the recipe's training loop that are not BDPO: signals, the metric window, the
progress display. ``BDPOTrainer.train`` reads as updates, logging, evaluation and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator

import torch
from run_progress import Progress
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("bdpo")


class StopRequest:
    """Set by SIGINT/SIGTERM inside :func:`stop_on_signals`: the signal number, or ``None``."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """The first SIGINT/SIGTERM asks the loop to stop after its current update (with a
    checkpoint); a second one stops the process at once (exit status 128 + signal)."""
    request = StopRequest()

    def on_signal(signum, _frame):
        if request.signum is not None:  # a second signal: the default action, now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        request.signum = signum
        log.warning(
            "%s: stopping after the current update with a checkpoint (send it again to "
            "stop at once without one).",
            signal.Signals(signum).name,
        )

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class MetricWindow:
    """Scalar outputs summed on the device between two log lines, logged as their means (an
    output produced only on some updates, e.g. the actor's, is averaged over those), handed to
    TorchRL's ``Logger.log_metrics`` (one host sync per log line); a vector (``kl_per_step``) is
    logged entry by entry (``name/1..N``).

    Args:
        logger: a TorchRL logger, or ``None`` (nothing is accumulated).
        every (int): log every ``every`` updates, and at ``boundaries`` (phase ends).
        boundaries: update counts that always get a log line.
    """

    def __init__(self, logger, every: int, boundaries: tuple[int, ...], step: int) -> None:
        self.logger, self.every, self.boundaries = logger, max(1, int(every)), boundaries
        self.sums: dict[str, list] = {}
        self.t, self.step = time.time(), step

    def add(self, phase: str, outputs: dict[str, torch.Tensor]) -> None:
        if self.logger is None:
            return
        for key, value in outputs.items():
            acc = self.sums.setdefault(f"{phase}/{key}", [0.0, 0])
            acc[0], acc[1] = acc[0] + value.detach().float().reshape(-1), acc[1] + 1

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step in self.boundaries

    def flush(self, step: int, phase: str) -> None:
        """Logs the window's means and the update rate since the last flush."""
        now = time.time()
        rate = (step - self.step) / max(now - self.t, 1e-9)
        self.t, self.step = now, step
        if self.logger is None or not self.sums:
            return
        metrics: dict = {}
        for name, (total, count) in self.sums.items():
            mean = total / count
            if mean.numel() == 1:
                metrics[name] = mean[0]
            else:  # kl_per_step/1 .. kl_per_step/N (step n's mean KL term)
                metrics.update({f"{name}/{i + 1}": x for i, x in enumerate(mean.unbind())})
        metrics[f"{phase}/updates_per_s"] = rate
        self.sums.clear()
        self.logger.log_metrics(metrics, step=step)  # TorchRL's: one host sync for all values


@contextlib.contextmanager
def progress_display(total: int, initial: int, desc: str) -> Iterator[callable]:
    """A bar on a terminal, a plain log line every minute elsewhere; yields ``advance(step,
    phase)``, which moves it by one update and refreshes the rate every ~2 s."""
    bar = Progress(total, initial=initial, desc=desc)
    state = {"t": time.time(), "step": initial}

    def advance(step: int, phase: str) -> None:
        bar.update(1)
        now = time.time()
        if now - state["t"] >= 2.0:
            rate = (step - state["step"]) / (now - state["t"])
            bar.set_postfix(phase=phase, ups=f"{rate:.1f}/s")
            state["t"], state["step"] = now, step

    # log lines print above the bar, not through it
    redirect = logging_redirect_tqdm() if bar.bar is not None else contextlib.nullcontext()
    with redirect:
        try:
            yield advance
        finally:
            bar.close()
