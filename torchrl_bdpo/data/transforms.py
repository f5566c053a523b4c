"""Dataset-level preprocessing of TED transitions (BDPO spec, section 6 "Data").

Each function returns a new TensorDict; the input is left unchanged (tensors that are
not modified are shared with it).

Examples:
    >>> from tensordict import TensorDict
    >>> td = TensorDict({"action": torch.tensor([[1.5], [-0.2]]),
    ...                  "episode": torch.tensor([0, 1]),
    ...                  "next": {"reward": torch.tensor([[2.0], [1.0]])}}, batch_size=[2])
    >>> clip_dataset_actions(td, limit=1.0)["action"].flatten().tolist()
    [1.0, -0.20000000298023224]
    >>> episode_returns(td).tolist()
    [2.0, 1.0]
    >>> scale_rewards_by_return_range(td, scale=10.0)["next", "reward"].flatten().tolist()
    [20.0, 10.0]
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

__all__ = [
    "clip_dataset_actions",
    "episode_returns",
    "return_range_scale",
    "scale_rewards",
    "scale_rewards_by_return_range",
]

_REWARD = ("next", "reward")


def clip_dataset_actions(data: TensorDictBase, limit: float = 1 - 1e-5) -> TensorDictBase:
    """Clip ``action`` to ``[-limit, limit]`` (keeps ``atanh``-style log-probs finite)."""
    if limit <= 0:
        raise ValueError(f"clip limit must be positive, got {limit}")
    out = data.copy()
    out.set("action", data.get("action").clamp(-limit, limit))
    return out


def episode_returns(data: TensorDictBase) -> torch.Tensor:
    """Undiscounted return of every episode, float64 ``[E]``.

    Episodes are the distinct values of the ``episode`` key ``[T]`` (any integers, in
    ascending order); rewards are ``next/reward`` ``[T, 1]``.
    """
    if "episode" not in data.keys():
        raise KeyError(
            "episode returns need an 'episode' key [T] (episode index of each transition); "
            f"present keys: {sorted(str(k) for k in data.keys(True, True))}"
        )
    ids, inverse = torch.unique(data.get("episode"), return_inverse=True)
    reward = data.get(_REWARD).reshape(-1).to(torch.float64)
    returns = torch.zeros(ids.numel(), dtype=torch.float64, device=reward.device)
    return returns.index_add_(0, inverse.to(reward.device), reward)


def return_range_scale(data: TensorDictBase, scale: float = 1000.0) -> float:
    """Reward factor ``scale / (max episode return - min episode return)``.

    Raises:
        ValueError: if every episode has the same return (the range is zero).
    """
    returns = episode_returns(data)
    if not torch.isfinite(returns).all():
        bad = int((~torch.isfinite(returns)).sum())
        raise ValueError(
            f"cannot scale rewards by the return range: {bad} of {returns.numel()} episode "
            "returns are not finite (NaN or inf rewards)"
        )
    span = float(returns.max() - returns.min())
    if not span > 0:
        raise ValueError(
            f"cannot scale rewards by the return range: all {returns.numel()} episodes "
            f"have the same return ({float(returns[0]):.6g})"
        )
    return scale / span


def scale_rewards_by_return_range(data: TensorDictBase, scale: float = 1000.0) -> TensorDictBase:
    """Rewards × ``scale / (max − min episode return)`` (BDPO locomotion setting)."""
    return scale_rewards(data, return_range_scale(data, scale))


def scale_rewards(data: TensorDictBase, factor: float) -> TensorDictBase:
    """Rewards × ``factor`` (BDPO AntMaze setting: ``factor=100``)."""
    out = data.copy()
    out.set(_REWARD, data.get(_REWARD) * factor)
    return out
