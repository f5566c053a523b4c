"""Progress and log output of the recipes that stays readable on a terminal, in a file and in sweeps.

* :class:`Progress` — a tqdm bar on a terminal; elsewhere (output redirected to a file or a
  pipe, or jobs of a multirun sweep sharing one terminal) one plain log line every
  ``interval`` seconds instead of hundreds of carriage-return refreshes.
* :func:`tag_job_log_lines` — prefixes every log line of a sweep job with the job
  (``[hopper-medium-v2 seed=1]``), so the interleaved lines of parallel jobs can be told apart.
* :func:`plain_torchrl_logging` — TorchRL's log lines through the root logger's handlers
  (TorchRL's own handler writes ANSI colour codes, also into files).
"""

from __future__ import annotations

import datetime
import logging
import sys
import time

from tqdm import tqdm

__all__ = ["Progress", "in_multirun", "plain_torchrl_logging", "tag_job_log_lines"]

log = logging.getLogger("bdpo")


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return False
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class Progress:
    """Counts updates; shows a bar on a terminal, else logs a plain line every ``interval`` s.

    Args:
        total: the count at the end.
        initial: the count at the start (a resumed run).
        desc: what is counted (the bar's label, the log line's prefix).
        unit: the name of one step in the log line.
        interval: seconds between two plain log lines (the first one comes at the start).
        bar: ``True``/``False`` forces the bar on/off; ``None`` shows it when stderr is a
            terminal and the process is not a sweep job (parallel jobs' bars would overwrite
            each other).
        logger: where the plain lines go.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str = "",
        unit: str = "update",
        interval: float = 60.0,
        bar: bool | None = None,
        logger: logging.Logger = log,
    ) -> None:
        if bar is None:
            bar = sys.stderr.isatty() and not in_multirun()
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.interval, self.logger = float(interval), logger
        self.postfix: dict[str, object] = {}
        self.bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=desc,
                dynamic_ncols=True,
                mininterval=1.0,
            )
            if bar
            else None
        )
        self._line_t, self._line_n = time.time(), self.n
        self.phase, self.phase_end = "", self.total
        if self.bar is None:
            self.log_line()

    def set_phase(self, name: str, end: int, start: int | None = None) -> None:
        """From now on the rate counts from ``start`` (default: the current count) and the
        plain line's ETA is that of phase ``name``, which ends at count ``end``."""
        self.phase, self.phase_end = name, int(end)
        self._line_t, self._line_n = time.time(), self.n if start is None else int(start)

    def exclude(self, seconds: float) -> None:
        """Leaves ``seconds`` spent on other work out of the rate of the next plain line."""
        self._line_t += seconds

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.time()
        if now - self._line_t >= self.interval:
            self.log_line(now)

    def set_postfix(self, **fields: object) -> None:
        """Fields shown after the count (the bar's postfix, the log line's ``k=v`` list)."""
        self.postfix = fields
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)

    def log_line(self, now: float | None = None) -> None:
        """Logs ``desc: unit n/total (p%), k=v, ..., ETA h:mm:ss`` (the rate since the last line;
        ``<phase> ends in h:mm:ss`` instead while a phase that ends before ``total`` runs)."""
        now = time.time() if now is None else now
        rate = (self.n - self._line_n) / max(now - self._line_t, 1e-9)
        self._line_t, self._line_n = now, self.n
        parts = [f"{self.unit} {self.n}/{self.total} ({100.0 * self.n / max(self.total, 1):.0f}%)"]
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        end = min(self.phase_end, self.total)
        if rate > 0 and self.n < end:
            eta = datetime.timedelta(seconds=round((end - self.n) / rate))
            parts.append(f"ETA {eta}" if end == self.total else f"{self.phase} ends in {eta}")
        self.logger.info("%s: %s", self.desc, ", ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _JobFormatter(logging.Formatter):
    """Puts ``[tag] `` in front of what the wrapped formatter writes."""

    def __init__(self, inner: logging.Formatter | None, tag: str) -> None:
        super().__init__()
        self.inner, self.tag = inner or logging.Formatter(), tag

    def format(self, record: logging.LogRecord) -> str:
        return f"[{self.tag}] {self.inner.format(record)}"


def tag_job_log_lines(tag: str) -> None:
    """Prefixes the lines of every handler of the root logger with ``[tag]``; idempotent."""
    for handler in logging.getLogger().handlers:
        inner = handler.formatter
        if isinstance(inner, _JobFormatter):
            inner = inner.inner
        handler.setFormatter(_JobFormatter(inner, tag))


def plain_torchrl_logging(level: int = logging.WARNING) -> None:
    """Sends the ``torchrl`` logger's records (``level`` and above) through the root handlers.

    TorchRL gives its logger a handler with ANSI colour codes and no propagation; its INFO
    lines (replay-buffer storage sizes) are library detail.
    """
    import torchrl._utils  # noqa: F401  (its import installs the handler: import it first)

    torchrl_log = logging.getLogger("torchrl")
    for handler in list(torchrl_log.handlers):
        torchrl_log.removeHandler(handler)
    torchrl_log.propagate = True
    torchrl_log.setLevel(level)
