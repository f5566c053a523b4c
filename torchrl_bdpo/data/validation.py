"""Checks that transitions are usable for offline RL, with messages that name the problem."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tensordict import TensorDictBase

from .errors import DatasetValidationError
from .ted import TED_KEYS

__all__ = ["MAX_ABS_VALUE", "DatasetValidationError", "check_flag_values", "validate_transitions"]

_FLOAT_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"))
_FLAG_KEYS = (("next", "terminated"), ("next", "truncated"), ("next", "done"))
#: Largest magnitude accepted for observations and rewards by default. One reward of 1e30
#: would make the return-range reward scale ~1e-27 (every other reward becomes ~0), and such
#: observations overflow float32 activations; real control data stay far below this.
MAX_ABS_VALUE = 1e6
_BOUNDED_KEYS = ("observation", ("next", "observation"), ("next", "reward"))


def _name(key) -> str:
    return key if isinstance(key, str) else "/".join(key)


def _episode_step(row: int, episode: torch.Tensor | None) -> str:
    """``"episode E, step S (transition row)"`` for a row of transitions with an ``episode`` key."""
    if episode is None:
        return f"transition {row}"
    ep = episode[row]
    step = int((episode[:row] == ep).sum())
    return f"episode {int(ep)}, step {step} (transition {row})"


def _rows_at(rows: torch.Tensor, episode: torch.Tensor | None) -> str:
    """``"N transitions, the first at episode E, step S (transition row)"`` for a mask ``[T]``."""
    first = int(rows.reshape(-1).nonzero()[0, 0])
    return f"{int(rows.sum())} transitions, the first at {_episode_step(first, episode)}"


def check_flag_values(
    flags,
    name: str,
    *,
    episode: int | None = None,
    episode_ends=None,
) -> None:
    """Refuse termination/truncation flags other than 0/1 (``False``/``True``).

    ``bool(2)`` or ``bool(0.5)`` is ``True``, so such flags would silently become
    terminals; they are refused with the first offending step.

    Args:
        flags: ``[L]`` array-like of one episode (``episode`` given) or of consecutive rows
            (``episode_ends`` ``[L]`` bool marks the rows that end an episode).
        name: what the flags are, for the message (e.g. ``"terminations"``).
        episode: index of the episode the flags belong to.
        episode_ends: rows ending an episode, to name the episode and step of a flat array.

    Raises:
        DatasetValidationError: a non-numeric dtype or a value other than 0 and 1.
    """
    arr = np.asarray(flags).reshape(-1)
    if arr.dtype == np.bool_:
        return
    if arr.dtype.kind not in "iuf":
        raise DatasetValidationError(f"{name} has dtype {arr.dtype}, expected bool or 0/1")
    bad = ~((arr == 0) | (arr == 1))
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    if episode is not None:
        where = f"episode {episode}, step {row}"
    elif episode_ends is not None:
        ends = np.flatnonzero(np.asarray(episode_ends).reshape(-1)[:row])
        start = int(ends[-1]) + 1 if ends.size else 0
        where = f"row {row} (episode {ends.size}, step {row - start})"
    else:
        where = f"row {row}"
    raise DatasetValidationError(
        f"{name} is {arr[row].item()!r} at {where} ({int(bad.sum())} values other than 0/1 in "
        "all); termination and truncation flags must be 0 or 1 (False/True)"
    )


def _bound(value: float | Sequence[float] | torch.Tensor, act_dim: int) -> torch.Tensor:
    bound = torch.as_tensor(value, dtype=torch.float64).flatten()
    if bound.numel() not in (1, act_dim):
        raise DatasetValidationError(
            f"action bound has {bound.numel()} entries, expected 1 or act_dim={act_dim}"
        )
    return bound.expand(act_dim)


def validate_transitions(
    data: TensorDictBase,
    *,
    action_low: float | Sequence[float] | torch.Tensor = -1.0,
    action_high: float | Sequence[float] | torch.Tensor = 1.0,
    tolerance: float = 1e-3,
    obs_dim: int | None = None,
    max_abs: float | None = MAX_ABS_VALUE,
) -> None:
    """Raise :class:`DatasetValidationError` on the first problem found in ``data``.

    Checks, in order: non-empty 1-D batch; the TED keys are present; shapes
    (``observation``/``next/observation`` ``[T, obs_dim]``, ``action`` ``[T, act_dim]``,
    reward and flags ``[T, 1]``, ``episode`` ``[T]`` integer when present); float dtypes for
    observations/actions/rewards and bool for flags; ``done == terminated | truncated``;
    finite values; observations and rewards within ``±max_abs``; actions inside
    ``[action_low, action_high]`` up to ``tolerance``; observation size equal to ``obs_dim``
    (the evaluation environment's) when given. Value problems name the first offending
    episode and step.

    Args:
        data: transitions with batch size ``[T]``.
        action_low, action_high: action box, scalars or ``[act_dim]``; infinite bounds
            are not checked.
        tolerance: allowed excess beyond the box.
        obs_dim: expected observation size, or ``None`` to skip that check.
        max_abs: largest magnitude of observations and rewards (default
            :data:`MAX_ABS_VALUE`), or ``None`` to skip that check.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.zeros(2, 3)}, batch_size=[2])
        >>> validate_transitions(td)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchrl_bdpo.data.errors.DatasetValidationError: transitions lack keys ['action', ...
    """
    if data.batch_dims != 1:
        raise DatasetValidationError(
            f"transitions need a 1-D batch size [T], got batch_size={list(data.batch_size)}"
        )
    num = data.batch_size[0]
    if num == 0:
        raise DatasetValidationError("dataset is empty (0 transitions)")

    present = set(data.keys(include_nested=True, leaves_only=True))
    missing = [_name(k) for k in TED_KEYS if k not in present]
    if missing:
        have = sorted(_name(k) for k in present)
        raise DatasetValidationError(f"transitions lack keys {missing}; present keys: {have}")

    obs, action = data["observation"], data["action"]
    if obs.ndim != 2 or action.ndim != 2:
        raise DatasetValidationError(
            "observation and action must be [T, dim] (2-D), got "
            f"observation {list(obs.shape)} and action {list(action.shape)}"
        )
    if data["next", "observation"].shape != obs.shape:
        raise DatasetValidationError(
            f"next/observation has shape {list(data['next', 'observation'].shape)} but "
            f"observation has {list(obs.shape)}"
        )
    for key in (("next", "reward"), *_FLAG_KEYS):
        if data[key].shape != (num, 1):
            raise DatasetValidationError(
                f"{_name(key)} has shape {list(data[key].shape)}, expected [{num}, 1]"
            )
    if "episode" in data.keys():
        episode = data["episode"]
        if episode.shape != (num,) or episode.is_floating_point() or episode.dtype == torch.bool:
            raise DatasetValidationError(
                f"episode must be an integer tensor of shape [{num}], got "
                f"{episode.dtype} {list(episode.shape)}"
            )

    for key in _FLOAT_KEYS:
        if not data[key].is_floating_point():
            raise DatasetValidationError(
                f"{_name(key)} must be floating point, got {data[key].dtype}"
            )
    for key in _FLAG_KEYS:
        if data[key].dtype != torch.bool:
            raise DatasetValidationError(f"{_name(key)} must be bool, got {data[key].dtype}")
    inconsistent = data["next", "done"] != (data["next", "terminated"] | data["next", "truncated"])
    episode = data["episode"] if "episode" in data.keys() else None
    if inconsistent.any():
        raise DatasetValidationError(
            f"next/done differs from terminated | truncated in {_rows_at(inconsistent, episode)}"
        )

    for key in _FLOAT_KEYS:
        bad = ~torch.isfinite(data[key]).reshape(num, -1)
        if bad.any():
            raise DatasetValidationError(
                f"{_name(key)} has {int(bad.sum())} non-finite entries (NaN or inf) "
                f"in {_rows_at(bad.any(-1), episode)}"
            )
    if max_abs is not None:
        for key in _BOUNDED_KEYS:
            flat = data[key].detach().reshape(num, -1)
            magnitude = flat.abs().amax(-1)
            row = int(magnitude.argmax())
            if float(magnitude[row]) > max_abs:
                value = float(flat[row, flat[row].abs().argmax()])
                count = int((magnitude > max_abs).sum())
                raise DatasetValidationError(
                    f"{_name(key)} reaches {value:.6g} at {_episode_step(row, episode)} ({count} "
                    f"transitions beyond ±{max_abs:g}); values this large wreck the reward "
                    "scaling and the networks' inputs: fix or remove those episodes"
                )

    act_dim = action.shape[-1]
    low, high = _bound(action_low, act_dim), _bound(action_high, act_dim)
    act64 = action.double()
    excess = torch.maximum(act64 - high, low - act64)
    excess = torch.where(torch.isfinite(excess), excess, torch.zeros_like(excess))
    worst = float(excess.max())
    if worst > tolerance:
        raise DatasetValidationError(
            f"actions leave the box [{low.min().item():g}, {high.max().item():g}] by up to "
            f"{worst:.6g} (tolerance {tolerance:g}) in "
            f"{_rows_at((excess > tolerance).any(-1), episode)}"
        )

    if obs_dim is not None and obs.shape[-1] != obs_dim:
        raise DatasetValidationError(
            f"observation size {obs.shape[-1]} does not match the environment's obs_dim={obs_dim}"
        )
