"""Uniform replay buffer over a fixed offline dataset."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, RandomSampler, TensorDictReplayBuffer

__all__ = ["make_offline_replay_buffer"]


def make_offline_replay_buffer(
    data: TensorDictBase,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    max_size: int | None = None,
) -> TensorDictReplayBuffer:
    """Replay buffer holding all of ``data`` and sampling uniformly with replacement.

    Uses ``LazyTensorStorage`` (in memory, on ``device``; default: ``data``'s device, else
    CPU) of ``max_size`` rows (default: exactly the dataset's; TorchRL's storage is circular,
    so extending a full buffer overwrites its oldest rows, the dataset's: give a larger
    ``max_size`` to add online data beside it) and ``RandomSampler``; no prefetching (it slows sampling on small machines) and no
    prioritised sampler (its compiled extension does not load with torch 2.13).
    ``data`` itself is not modified (the buffer stores a copy). Samples are
    TensorDicts of batch size ``[batch_size]`` with the keys of ``data`` plus ``index``.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.randn(10, 3)}, batch_size=[10])
        >>> rb = make_offline_replay_buffer(td, batch_size=4)
        >>> rb.sample()["observation"].shape
        torch.Size([4, 3])
    """
    if data.batch_dims != 1:
        raise ValueError(f"data must have a 1-D batch size [T], got {list(data.batch_size)}")
    num = data.batch_size[0]
    if not 0 < batch_size <= num:
        raise ValueError(
            f"batch_size={batch_size} must be between 1 and the number of transitions ({num})"
        )
    if max_size is not None and max_size < num:
        raise ValueError(
            f"max_size={max_size} is smaller than the dataset ({num} transitions): the buffer "
            "would drop part of it"
        )
    if device is None:
        device = data.device if data.device is not None else "cpu"
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(max_size=num if max_size is None else max_size, device=device),
        sampler=RandomSampler(),
        batch_size=batch_size,
    )
    # extend() writes an "index" entry into the TensorDict it receives: give it a shallow copy.
    buffer.extend(data.copy())
    return buffer
