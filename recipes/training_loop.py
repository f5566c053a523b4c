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


#: updates whose outputs :class:`MetricWindow` and :class:`NonFiniteWatch` keep before folding them
FOLD_EVERY = 1024


def _kept(value: torch.Tensor, copy: bool) -> torch.Tensor:
    """A reference to an update's output for later reduction (a copy for CUDA-graph outputs, which
    the next update overwrites)."""
    if value.requires_grad:
        value = value.detach()
    return value.clone() if copy else value


class _Deferred:
    """Per-name lists of kept per-update items (``self.pending``), reduced by ``_fold(name)``
    every :data:`FOLD_EVERY` items and on demand (:meth:`_fold_all`)."""

    pending: dict[str, list]

    def _keep(self, name: str, item) -> None:
        entries = self.pending.setdefault(name, [])
        entries.append(item)
        if len(entries) >= FOLD_EVERY:
            self._fold(name)

    def _take(self, name: str) -> list:
        return self.pending.pop(name, None) or []

    def _fold_all(self) -> None:
        for name in list(self.pending):
            self._fold(name)

    def _fold(self, name: str) -> None:
        raise NotImplementedError


class MetricWindow(_Deferred):
    """Scalar outputs averaged between two log lines, handed to TorchRL's ``Logger.log_metrics``
    (one host sync per log line); an output produced only on some updates (the actor's) is averaged
    over those; a vector (``kl_per_step``) is logged entry by entry (``name/1..N``).

    No tensor op runs per update: :meth:`add` keeps references to the update's outputs, and one
    ``stack``/``sum`` per metric folds them at :meth:`flush` (and every :data:`FOLD_EVERY` updates).

    Args:
        logger: a TorchRL logger, or ``None`` (nothing is kept).
        every (int): log every ``every`` updates, and at ``boundaries`` (phase ends).
        boundaries: update counts that always get a log line.
        step (int): the update count at the start.
        copy (bool): keep copies of the outputs (CUDA graphs overwrite them at the next update).
    """

    def __init__(
        self, logger, every: int, boundaries: tuple[int, ...], step: int, copy: bool = False
    ) -> None:
        self.logger, self.every, self.boundaries = logger, max(1, int(every)), boundaries
        self.copy = copy
        self.pending: dict[str, list[torch.Tensor]] = {}
        self.sums: dict[str, list] = {}  # name -> [float32 sum (flat), count]
        self.t, self.step = time.time(), step

    def add(self, phase: str, outputs: dict[str, torch.Tensor]) -> None:
        if self.logger is None:
            return
        for key, value in outputs.items():
            self._keep(f"{phase}/{key}", _kept(value, self.copy))

    def _fold(self, name: str) -> None:
        entries = self._take(name)
        if not entries:
            return
        total = torch.stack(entries).float().reshape(len(entries), -1).sum(0)
        acc = self.sums.setdefault(name, [0.0, 0])
        acc[0], acc[1] = acc[0] + total, acc[1] + len(entries)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step in self.boundaries

    def state_dict(self) -> dict:
        """The open window's sums (for a checkpoint: a resumed run's first log line then averages
        the whole window, as an uninterrupted run's does); its rate restarts on resume."""
        self._fold_all()
        return {name: [total, count] for name, (total, count) in self.sums.items()}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {name: [total, int(count)] for name, (total, count) in state.items()}

    def exclude(self, seconds: float) -> None:
        """Leaves ``seconds`` (an evaluation, a checkpoint) out of the current window's rate."""
        self.t += seconds

    def flush(self, step: int, phase: str) -> None:
        """Logs the window's means and ``<phase>/updates_per_s``: the window's updates per second
        of its wall time, less what :meth:`exclude` left out (evaluations, checkpoints)."""
        now = time.time()
        rate = (step - self.step) / max(now - self.t, 1e-9)
        self.t, self.step = now, step
        self._fold_all()
        if self.logger is None:  # nothing to log (sums restored from a checkpoint included)
            self.sums.clear()
            return
        if not self.sums:
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


class NonFiniteWatch(_Deferred):
    """Per watched loss, the first update at which it or its gradient norm was non-finite, with no
    host sync and no tensor op per update: :meth:`add` keeps references to the update's 0-d values;
    every :data:`FOLD_EVERY` updates of a name, and in :meth:`first_bad`, one ``stack`` and a few
    reductions fold them into a first-bad-update tensor (``-1``: none) on their device (on a GPU
    the fold's update numbers are one small host-to-device copy).

    Args:
        copy (bool): keep copies of the values (CUDA graphs overwrite them at the next update).

    Examples:
        >>> watch = NonFiniteWatch()
        >>> for step, loss in enumerate([1.0, 2.0, float("nan"), float("inf")]):
        ...     watch.add(step, "loss_q", torch.tensor(loss), torch.tensor(0.5))
        >>> watch.first_bad()
        [(2, 'loss_q')]
    """

    NONE = -1

    def __init__(self, copy: bool = False) -> None:
        self.copy = copy
        self.pending: dict[str, list[tuple[int, tuple[torch.Tensor, ...]]]] = {}
        self.first: dict[str, torch.Tensor] = {}
        self.order: list[str] = []  # names in the order an update watches them

    def add(self, step: int, name: str, *values: torch.Tensor) -> None:
        """Watches ``values`` (0-d tensors: a loss and its gradient norms) of update ``step``."""
        if name not in self.order:
            self.order.append(name)
        self._keep(name, (step, tuple(_kept(v, self.copy) for v in values)))

    def _fold(self, name: str) -> None:
        entries = self._take(name)
        if not entries:
            return
        values = torch.stack([v.float() for _, vals in entries for v in vals])
        finite = torch.isfinite(values.reshape(len(entries), -1)).all(dim=1)
        steps = torch.tensor([s for s, _ in entries], device=values.device)
        never = torch.iinfo(steps.dtype).max
        first = torch.where(finite, never, steps).min()
        first = torch.where(first == never, self.NONE, first)
        previous = self.first.get(name)
        self.first[name] = (
            first if previous is None else torch.where(previous >= 0, previous, first)
        )

    def first_bad(self) -> list[tuple[int, str]]:
        """``(update, name)`` of every name that went non-finite, in watch order (one host sync)."""
        self._fold_all()
        names = [n for n in self.order if n in self.first]
        if not names:
            return []
        steps = torch.stack([self.first[n] for n in names]).tolist()
        return [(s, n) for s, n in zip(steps, names) if s >= 0]


@contextlib.contextmanager
def progress_display(
    total: int, initial: int, desc: str, phase_ends: dict[str, int] | None = None
) -> Iterator[callable]:
    """A bar on a terminal, a plain log line every minute elsewhere; yields ``advance(step,
    phase)``, which moves it by one update and refreshes the rate every ~2 s, and
    ``advance.exclude(seconds)``, which leaves time spent outside the updates (evaluations,
    checkpoints) out of the rates. The rates restart with each phase; ``phase_ends`` (phase ->
    its last update) makes the plain line's ETA that of the phase when it ends before ``total``.
    """
    bar = Progress(total, initial=initial, desc=desc)
    state = {"t": time.time(), "step": initial, "phase": None}
    ends = dict(phase_ends or {})

    def advance(step: int, phase: str) -> None:
        if phase != state["phase"]:  # a new phase: its own rate, from its first update
            state["phase"] = phase
            state["t"], state["step"] = time.time(), step
            bar.set_phase(phase, ends.get(phase, total), start=step)
        bar.update(1)
        now = time.time()
        if now - state["t"] >= 2.0:
            rate = (step - state["step"]) / (now - state["t"])
            bar.set_postfix(phase=phase, ups=f"{rate:.1f}/s")
            state["t"], state["step"] = now, step

    def exclude(seconds: float) -> None:
        state["t"] += seconds
        bar.exclude(seconds)

    advance.exclude = exclude

    # log lines print above the bar, not through it
    redirect = logging_redirect_tqdm() if bar.bar is not None else contextlib.nullcontext()
    with redirect:
        try:
            yield advance
        finally:
            bar.close()
