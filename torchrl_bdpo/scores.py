"""D4RL reference returns and normalised scores.

The normalised score of an undiscounted episode return ``R`` is
``100 * (R - ref_min) / (ref_max - ref_min)``, where ``ref_min`` is the return of a
random policy and ``ref_max`` the return of an expert (D4RL's ``infos.py``; the
same numbers for every dataset version of an environment).

Examples:
    >>> ref_min, ref_max = d4rl_reference("hopper-medium-v2")
    >>> round(normalized_score(3234.3, ref_min=ref_min, ref_max=ref_max), 6)
    100.0
    >>> normalized_score(0.5, ref_min=0.0, ref_max=1.0)
    50.0
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import numpy as np
import torch

__all__ = ["D4RL_REF_SCORES", "ReferenceScores", "d4rl_reference", "normalized_score"]


class ReferenceScores(NamedTuple):
    """Reference returns of one environment: ``(random, expert)``."""

    random: float
    expert: float


#: D4RL reference returns per environment family (the prefix of a D4RL dataset name).
D4RL_REF_SCORES: dict[str, ReferenceScores] = {
    "hopper": ReferenceScores(-20.272305, 3234.3),
    "halfcheetah": ReferenceScores(-280.178953, 12135.0),
    "walker2d": ReferenceScores(1.629008, 4592.3),
    "ant": ReferenceScores(-325.6, 3879.7),
    "antmaze": ReferenceScores(0.0, 1.0),
}

_Returns = TypeVar("_Returns", float, np.ndarray, torch.Tensor)


def normalized_score(returns: _Returns, *, ref_min: float, ref_max: float) -> _Returns:
    """Normalised score ``100 * (returns - ref_min) / (ref_max - ref_min)``.

    Args:
        returns: undiscounted episode return(s): a float, a numpy array or a tensor
            of any shape (lists are converted to numpy arrays).
        ref_min: reference return of a random policy (score 0).
        ref_max: reference return of an expert policy (score 100).

    Returns:
        Same type and shape as ``returns`` (a float for scalar inputs).

    Raises:
        ValueError: if ``ref_max == ref_min``.
    """
    ref_min, ref_max = float(ref_min), float(ref_max)
    if ref_max == ref_min:
        raise ValueError(f"normalized_score needs ref_max != ref_min, got both equal to {ref_min}")
    if isinstance(returns, (list, tuple)):
        returns = np.asarray(returns, dtype=np.float64)
    if isinstance(returns, torch.Tensor) and not returns.is_floating_point():
        returns = returns.double()
    if isinstance(returns, (int, float, np.integer, np.floating)):
        returns = float(returns)
    return 100.0 * (returns - ref_min) / (ref_max - ref_min)


def d4rl_reference(name: str) -> ReferenceScores:
    """Reference ``(random, expert)`` returns for a D4RL dataset or environment name.

    Args:
        name: a D4RL dataset name such as ``"hopper-medium-v2"`` or
            ``"antmaze-large-diverse-v0"``, or a bare environment family (``"walker2d"``).

    Raises:
        KeyError: if the environment prefix (text before the first ``-``) is unknown.
    """
    env = name.strip().lower().split("-", 1)[0]
    try:
        return D4RL_REF_SCORES[env]
    except KeyError:
        raise KeyError(
            f"no D4RL reference scores for {name!r} (environment prefix {env!r}); "
            f"known prefixes: {sorted(D4RL_REF_SCORES)}"
        ) from None
