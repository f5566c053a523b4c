"""Atomic, verified checkpoints and RNG-state capture, so that a run never loses finished work.

:class:`CheckpointStore` keeps the last two checkpoints of a run (``latest.pt`` and
``previous.pt``). Each carries a checksum of its content, verified when it is written (before
it replaces anything) and when it is loaded; a damaged file falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: state key holding the checksum of a checkpoint's other entries
CHECKSUM_KEY = "checksum"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``.

    A crash (even ``kill -9``) at any moment leaves either the previous file or
    the new one, never a half-written file. The file's mode follows the process
    umask, like any file the process creates (not ``mkstemp``'s 0600).

    Examples:
        >>> import tempfile, pathlib
        >>> p = atomic_save({"a": 1}, pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt")
        >>> torch.load(p)["a"]
        1
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path, lambda f: torch.save(obj, f))
    _replace(tmp, path)
    return path


def _write_temp(path: Path, write) -> Path:
    """``write(file)`` into ``.<name>.<random>.tmp`` next to ``path``, fsynced; its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------------------ content
def _items(obj: Any, name: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted name, leaf)`` pairs of a nested state (dicts, lists, tuples)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _items(v, f"{name}.{k}" if name else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _items(v, f"{name}.{i}" if name else str(i))
    else:
        yield name, obj


def _update(h, obj: Any) -> None:
    """Feeds the structure and content of ``obj`` (nested containers, tensors, arrays) to ``h``."""
    if isinstance(obj, dict):
        h.update(b"{%d" % len(obj))
        for k, v in obj.items():
            h.update(repr(k).encode() + b":")
            _update(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[%d" % len(obj) if isinstance(obj, list) else b"(%d" % len(obj))
        for v in obj:
            _update(h, v)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_checksum(state: dict) -> str:
    """SHA-256 of a checkpoint's entries (all but :data:`CHECKSUM_KEY`): structure, tensor bytes, values."""
    h = hashlib.sha256()
    _update(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def non_finite_entries(state: Any) -> list[str]:
    """Dotted names of the floating-point tensors of a nested state holding a NaN or an infinity.

    One host synchronisation per device.
    """
    by_device: dict[torch.device, tuple[list[str], list[torch.Tensor]]] = {}
    for name, leaf in _items(state):
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            names, flags = by_device.setdefault(leaf.device, ([], []))
            names.append(name)
            flags.append(torch.isfinite(leaf.detach()).all())
    bad = []
    for names, flags in by_device.values():
        bad += [n for n, good in zip(names, torch.stack(flags).tolist()) if not good]
    return bad


def tensordict_fingerprint(data, num_rows: int = 4096) -> dict[str, Any]:
    """What identifies a dataset cheaply: its size, keys and a hash of ``num_rows`` evenly spaced rows.

    Args:
        data: a TensorDict with one batch dimension ``[T]`` (transitions).

    Returns:
        ``{"size": T, "keys": [...], "sample_sha256": hex}``.
    """
    size = int(data.batch_size[0])
    idx = torch.linspace(0, max(size - 1, 0), min(size, num_rows)).round().long().unique()
    keys = sorted(
        ("/".join(k) if isinstance(k, tuple) else k)
        for k in data.keys(include_nested=True, leaves_only=True)
    )
    h = hashlib.sha256()
    for key in sorted(data.keys(include_nested=True, leaves_only=True), key=str):
        h.update(str(key).encode())
        _update(h, data.get(key)[idx.to(data.device)] if size else data.get(key))
    return {"size": size, "keys": keys, "sample_sha256": h.hexdigest()}


# ------------------------------------------------------------------------------- store
class CheckpointError(RuntimeError):
    """No usable checkpoint: every candidate is missing, unreadable or fails its checksum."""


class CheckpointStore:
    """The last two checkpoints of a run in ``directory``: ``latest.pt`` and ``previous.pt``.

    :meth:`save` adds a checksum, writes the new file beside the old ones, reads it back
    and verifies it, and only then moves ``latest.pt`` to ``previous.pt`` and the new file
    to ``latest.pt`` (``latest.pt`` exists at every moment). :meth:`load` returns the newest
    checkpoint that reads back complete and matches its checksum, warning about any newer
    one it had to skip.

    Args:
        directory: where the checkpoints live (created on the first save).
        required: entries a checkpoint must have to be complete.

    Examples:
        >>> import tempfile
        >>> store = CheckpointStore(tempfile.mkdtemp(), required=("step",))
        >>> _ = store.save({"step": 1}); _ = store.save({"step": 2})
        >>> store.load()[0]["step"], store.previous.exists()
        (2, True)
    """

    LATEST, PREVIOUS = "latest.pt", "previous.pt"

    def __init__(self, directory: str | os.PathLike, required: Iterable[str] = ()) -> None:
        self.directory = Path(directory)
        self.required = tuple(required)
        # whether latest.pt is known good (written or verified by this process): only a good
        # latest.pt may replace previous.pt
        self._latest_good = False

    @property
    def latest(self) -> Path:
        return self.directory / self.LATEST

    @property
    def previous(self) -> Path:
        return self.directory / self.PREVIOUS

    def exists(self) -> bool:
        return self.latest.exists() or self.previous.exists()

    def verify(self, path: Path, map_location=None) -> dict:
        """The checkpoint at ``path`` if it is complete and matches its checksum; else :class:`CheckpointError`."""
        if not path.exists():
            raise CheckpointError(f"{path.name}: missing")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path.name}: empty file")
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # noqa: BLE001 - a truncated/corrupt file raises many kinds
            raise CheckpointError(f"{path.name}: unreadable ({type(err).__name__})") from err
        if not isinstance(state, dict):
            raise CheckpointError(f"{path.name}: not a checkpoint")
        missing = [k for k in (*self.required, CHECKSUM_KEY) if k not in state]
        if missing:
            raise CheckpointError(f"{path.name}: incomplete (no {', '.join(missing)})")
        if state_checksum(state) != state[CHECKSUM_KEY]:
            raise CheckpointError(f"{path.name}: checksum mismatch (corrupted)")
        return state

    def save(self, state: dict) -> Path:
        """Writes ``state`` (plus its checksum) as ``latest.pt``, keeping the old one as ``previous.pt``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {**state, CHECKSUM_KEY: None}
        state[CHECKSUM_KEY] = state_checksum(state)
        tmp = _write_temp(self.latest, lambda f: torch.save(state, f))
        try:
            self.verify(tmp, map_location="cpu")
            if self._latest_good and self.latest.exists():
                # previous.pt <- latest.pt through a hard link: latest.pt never disappears
                fd, link = tempfile.mkstemp(
                    prefix=f".{self.PREVIOUS}.", suffix=".tmp", dir=self.directory
                )
                os.close(fd)
                os.unlink(link)
                os.link(self.latest, link)
                os.replace(link, self.previous)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _replace(tmp, self.latest)
        self._latest_good = True
        return self.latest

    def load(self, map_location=None) -> tuple[dict, Path]:
        """The newest good checkpoint and its path; :class:`CheckpointError` if there is none."""
        problems = []
        for path in (self.latest, self.previous):
            try:
                state = self.verify(path, map_location=map_location)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if problems:
                log.warning(
                    "Skipping a damaged checkpoint (%s); resuming from %s instead.",
                    "; ".join(problems),
                    path,
                )
            self._latest_good = path == self.latest
            return state, path
        raise CheckpointError("; ".join(problems))


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and CUDA) generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
