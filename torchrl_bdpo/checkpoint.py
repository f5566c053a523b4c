"""Verified checkpoints on TorchRL's ``torchrl.checkpoint``, so that a run never loses finished work.

:class:`CheckpointStore` keeps the last two checkpoints of a run (``latest.torchrl`` and
``previous.torchrl``), each a TorchRL :class:`~torchrl.checkpoint.Checkpoint` archive (a ZIP,
whose members carry CRCs) holding the run's state and a SHA-256 checksum of its content,
verified when it is written (before it replaces anything) and when it is loaded; a damaged file
falls back to the previous one. The process-global random state is TorchRL's
:class:`~torchrl.checkpoint.GlobalRNGState`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrl.checkpoint import Checkpoint
from torchrl.checkpoint import CheckpointError as TorchRLCheckpointError

log = logging.getLogger(__name__)

#: state key holding the checksum of a checkpoint's other entries
CHECKSUM_KEY = "checksum"


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    """Flushes a file's (or a directory's entries') writes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
class CheckpointError(TorchRLCheckpointError):
    """No usable checkpoint: every candidate is missing, unreadable or fails its checksum."""


class _RunState:
    """A run's state (a nested dict) as a checkpoint component: TorchRL's state-dict adapter
    stores its tensors in a TensorDict and the rest in a JSON schema."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state

    def state_dict(self) -> dict | None:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


class CheckpointStore:
    """The last two checkpoints of a run in ``directory``: ``latest.torchrl`` and ``previous.torchrl``.

    :meth:`save` adds a checksum, writes a TorchRL checkpoint archive beside the old ones,
    fsyncs it, reads it back and verifies it, and only then moves ``latest`` to ``previous``
    and the new file to ``latest`` (``latest`` exists at every moment). :meth:`load` returns
    the newest checkpoint that reads back complete and matches its checksum, warning about any
    newer one it had to skip. Checkpoints of version 0.1 (``latest.pt``, ``torch.save``) are
    still read when no newer ones exist.

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

    LATEST, PREVIOUS = "latest.torchrl", "previous.torchrl"
    LEGACY = ("latest.pt", "previous.pt")

    def __init__(self, directory: str | os.PathLike, required: Iterable[str] = ()) -> None:
        self.directory = Path(directory)
        self.required = tuple(required)
        # whether latest is known good (written or verified by this process): only a good
        # latest may replace previous
        self._latest_good = False

    @property
    def latest(self) -> Path:
        return self.directory / self.LATEST

    @property
    def previous(self) -> Path:
        return self.directory / self.PREVIOUS

    def _candidates(self) -> list[Path]:
        paths = [self.latest, self.previous]
        if not any(p.exists() for p in paths):
            paths += [
                self.directory / name for name in self.LEGACY if (self.directory / name).exists()
            ]
        return paths

    def exists(self) -> bool:
        return any(p.exists() for p in self._candidates())

    def verify(self, path: Path, map_location=None) -> dict:
        """The checkpoint at ``path`` if it is complete and matches its checksum; else :class:`CheckpointError`."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path.name}: missing")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path.name}: empty file")
        try:
            state = read_checkpoint(path, map_location=map_location)
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
        """Writes ``state`` (plus its checksum) as ``latest``, keeping the old one as ``previous``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {**state, CHECKSUM_KEY: None}
        state[CHECKSUM_KEY] = state_checksum(state)
        # a temporary name first: TorchRL's own publishing would move latest away for a moment
        tmp = self.directory / f".{self.LATEST}.{uuid.uuid4().hex}.tmp"
        try:
            write_checkpoint(tmp, state)
            _fsync(tmp)
            self.verify(tmp, map_location="cpu")
            if self._latest_good and self.latest.exists():
                # previous <- latest through a hard link: latest never disappears
                link = self.directory / f".{self.PREVIOUS}.{uuid.uuid4().hex}.tmp"
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
        for path in self._candidates():
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


def write_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Writes ``state`` as a TorchRL checkpoint archive at ``path`` (as it is: no checksum is
    added, nothing is verified; :meth:`CheckpointStore.save` does both)."""
    return Checkpoint(format="archive", run=_RunState(state)).save(path)


def read_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """The state stored in a checkpoint file, unverified (:meth:`CheckpointStore.verify` checks
    it): a TorchRL checkpoint archive, or a ``torch.save`` file of version 0.1, whose random
    state is converted to :class:`~torchrl.checkpoint.GlobalRNGState`'s layout."""
    path = Path(path)
    if path.suffix == ".pt":
        state = torch.load(path, map_location=map_location, weights_only=False)
        rng = state.get("rng") if isinstance(state, dict) else None
        if isinstance(rng, dict) and "torch" in rng:  # python/numpy/torch/cuda -> TorchRL's
            converted = {"python": rng["python"], "numpy": rng["numpy"], "torch_cpu": rng["torch"]}
            if "cuda" in rng:
                converted["torch_cuda"] = rng["cuda"]
            checksum_ok = state.get(CHECKSUM_KEY) == state_checksum(state)
            state["rng"] = converted
            if checksum_ok:  # the content was verified as read; keep it verifiable
                state[CHECKSUM_KEY] = state_checksum(state)
        return state
    holder = _RunState()
    Checkpoint(run=holder).load(path, map_location=map_location)
    return holder.state
