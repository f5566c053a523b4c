"""Episodes (Minari layout) to flat TED-format transitions.

An *episode* is a mapping with numpy arrays::

    observations  [L + 1, *obs_shape]   (or a dict of such arrays, see flatten_observation)
    actions       [L, *act_shape]
    rewards       [L]
    terminations  [L]   bool
    truncations   [L]   bool

Transitions follow TorchRL's TED convention, batch size ``[T]`` with ``T = sum(L)``:

    observation            float32 [T, obs_dim]
    action                 float32 [T, act_dim]
    episode                int64   [T]      index of the episode in the input sequence
    next/observation       float32 [T, obs_dim]
    next/reward            float32 [T, 1]
    next/terminated        bool    [T, 1]
    next/truncated         bool    [T, 1]
    next/done              bool    [T, 1]   terminated | truncated
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from .errors import DatasetValidationError

__all__ = ["GOAL_OBSERVATION_KEYS", "TED_KEYS", "episodes_to_ted", "flatten_observation"]

#: Entries of a goal-conditioned (dict) observation, in the order they are concatenated.
#: ``achieved_goal`` first: gymnasium-robotics' AntMaze keeps the ant's x, y there and only
#: the rest of its state in ``observation``, so ``[achieved_goal, observation]`` is D4RL's
#: 29-entry AntMaze state; ``desired_goal`` last.
GOAL_OBSERVATION_KEYS: tuple[str, ...] = ("achieved_goal", "observation", "desired_goal")

#: Keys every transition TensorDict produced by this package holds.
TED_KEYS: tuple = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
)


def flatten_observation(obs: Any) -> np.ndarray:
    """Flatten episode observations to a float array ``[L + 1, obs_dim]``.

    Array observations ``[L + 1, *shape]`` are reshaped. Dict observations
    (goal-conditioned, AntMaze style) become ``concat(obs["achieved_goal"],
    obs["observation"], obs["desired_goal"])`` along the last axis
    (:data:`GOAL_OBSERVATION_KEYS`; the goals only when present, other keys dropped).
    ``achieved_goal`` is state: AntMaze's ``observation`` lacks the ant's x, y.

    Examples:
        >>> obs = {"observation": np.zeros((3, 4)), "desired_goal": np.ones((3, 2)),
        ...        "achieved_goal": np.ones((3, 2))}
        >>> flatten_observation(obs).shape
        (3, 8)
    """
    if isinstance(obs, Mapping):
        if "observation" not in obs:
            raise DatasetValidationError(
                "dict observations need an 'observation' entry (optionally 'achieved_goal' "
                f"and 'desired_goal'); got keys {sorted(obs)}"
            )
        parts = [obs[k] for k in GOAL_OBSERVATION_KEYS if k in obs]
        if any(isinstance(p, Mapping) for p in parts):
            raise DatasetValidationError("nested dict observations are not supported")
        arrays = [np.asarray(p) for p in parts]
        length = arrays[0].shape[0]
        return np.concatenate([a.reshape(length, -1) for a in arrays], axis=-1)
    arr = np.asarray(obs)
    if arr.ndim == 0:
        raise DatasetValidationError("observations must have a time dimension, got a scalar")
    return arr.reshape(arr.shape[0], -1)


def _check_numeric(arr: np.ndarray, name: str, index: int) -> None:
    if arr.dtype.kind not in "biuf":
        raise DatasetValidationError(
            f"episode {index}: {name} have dtype {arr.dtype}, expected numbers (float, int or bool)"
        )


def _as_flags(x: Any, length: int, name: str, index: int) -> np.ndarray:
    from .validation import check_flag_values  # validation imports TED_KEYS from here

    arr = np.asarray(x)
    if arr.shape != (length,):
        raise DatasetValidationError(
            f"episode {index}: {name} has shape {arr.shape}, expected ({length},)"
        )
    check_flag_values(arr, name, episode=index)
    return arr.astype(bool)


def episodes_to_ted(episodes: Sequence[Mapping[str, Any]]) -> TensorDict:
    """Stack episodes into one TED TensorDict of transitions (see the module docstring).

    Args:
        episodes: episodes in the Minari layout, ``L >= 1`` steps each.

    Returns:
        TensorDict with batch size ``[sum(L)]``. Every episode ends with ``done``: a last
        step with neither flag (the data stop there) becomes a truncation.

    Raises:
        DatasetValidationError: no episodes, an episode whose arrays disagree in length, or
            termination/truncation flags other than 0/1.

    Examples:
        >>> ep = dict(observations=np.arange(6.0).reshape(3, 2), actions=np.zeros((2, 1)),
        ...           rewards=np.array([1.0, 2.0]), terminations=np.array([False, True]),
        ...           truncations=np.array([False, False]))
        >>> td = episodes_to_ted([ep, ep])
        >>> td.batch_size, td["next", "observation"][0].tolist(), td["episode"].tolist()
        (torch.Size([4]), [2.0, 3.0], [0, 0, 1, 1])
    """
    if len(episodes) == 0:
        raise DatasetValidationError("no episodes to convert (empty dataset)")
    obs, next_obs, actions, rewards, terms, truncs, ep_ids = [], [], [], [], [], [], []
    for i, ep in enumerate(episodes):
        missing = [
            k
            for k in ("observations", "actions", "rewards", "terminations", "truncations")
            if k not in ep
        ]
        if missing:
            raise DatasetValidationError(f"episode {i} lacks {missing}; has {sorted(ep)}")
        ep_obs = flatten_observation(ep["observations"])
        ep_act = np.asarray(ep["actions"])
        for key, arr in (("observations", ep_obs), ("actions", ep_act)):
            _check_numeric(arr, key, i)
        length = ep_act.shape[0] if ep_act.ndim else 0
        if length == 0:
            raise DatasetValidationError(f"episode {i} has no steps (actions {ep_act.shape})")
        if ep_obs.shape[0] != length + 1:
            raise DatasetValidationError(
                f"episode {i}: {ep_obs.shape[0]} observations for {length} actions; "
                "expected one more observation than actions (the final next observation)"
            )
        ep_rew = np.asarray(ep["rewards"])
        _check_numeric(ep_rew, "rewards", i)
        if ep_rew.shape != (length,):
            raise DatasetValidationError(
                f"episode {i}: rewards have shape {ep_rew.shape}, expected ({length},)"
            )
        if obs and (ep_obs.shape[1] != obs[0].shape[1] or ep_act[0].size != actions[0].shape[1]):
            raise DatasetValidationError(
                f"episode {i}: observation/action sizes {ep_obs.shape[1]}/{ep_act[0].size} "
                f"differ from episode 0's {obs[0].shape[1]}/{actions[0].shape[1]}"
            )
        obs.append(ep_obs[:-1])
        next_obs.append(ep_obs[1:])
        actions.append(ep_act.reshape(length, -1))
        rewards.append(ep_rew)
        ep_term = _as_flags(ep["terminations"], length, "terminations", i)
        ep_trunc = _as_flags(ep["truncations"], length, "truncations", i)
        if not (ep_term[-1] or ep_trunc[-1]):  # the data end there: a truncation (as for D4RL)
            ep_trunc = ep_trunc.copy()
            ep_trunc[-1] = True
        terms.append(ep_term)
        truncs.append(ep_trunc)
        ep_ids.append(np.full(length, i, dtype=np.int64))

    def cat(parts: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts, axis=0)).to(dtype)

    terminated = cat(terms, torch.bool).unsqueeze(-1)
    truncated = cat(truncs, torch.bool).unsqueeze(-1)
    num = terminated.shape[0]
    return TensorDict(
        {
            "observation": cat(obs, torch.float32),
            "action": cat(actions, torch.float32),
            "episode": cat(ep_ids, torch.int64),
            "next": {
                "observation": cat(next_obs, torch.float32),
                "reward": cat(rewards, torch.float32).unsqueeze(-1),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        batch_size=[num],
    )
