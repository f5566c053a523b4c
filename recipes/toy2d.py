"""2D synthetic bandit tasks of the BDPO paper (spec section 7).

Each task is a one-step bandit: a dummy state, a 2-D action ``x`` in about
``[-4.5, 4.5]^2`` drawn from a toy distribution ``p_data`` and a reward ``r(x)``
(the point's "energy"). The KL-regularised optimum has the closed form
``p_target(x) ∝ p_data(x) · exp(r(x) / η)``, so resampling a large data set with
weights ``softmax(r / η)`` gives ground-truth target samples, and
``η · log E_data[exp(r / η)]`` is the optimal regularised value.

Datasets and rewards (``x = (x1, x2)``):

============ ============================================================ ==========================================
name         data                                                         reward
============ ============================================================ ==========================================
swissroll    sklearn swiss roll (noise 1.0), coordinates [0, 2], / 5      ``‖x‖² / 9``
8gaussians   centres ``4·(cos kπ/4, sin kπ/4)``, k ~ U{0..7},             ``k* / 7``, k* = index of nearest centre
             + N(0, 0.5²) jitter, all / 1.414
moons        sklearn moons (noise 0.1) · 2 + (−1, −0.2)                   moon label (0 or 1)
rings        radius ~ U{3, 2.25, 1.5, 0.75}, angle ~ U[0, 2π),            by ``‖x‖²``: ≥ 8.5 → 2/3; [5, 8.5) → 1/3;
             + N(0, 0.08²)                                                [2, 5) → 1; < 2 → 0
checkerboard 4×4 checkerboard on [−2, 2]², · 2                            1 if ``0 < x1 ≤ 2`` or ``x1 ≤ −2`` else 0
2spirals     ``n = √U · 3π``, arm ±1 at random,                          ``clip(1 − n / 10, 0, 1)``
             ``x = ±(−n cos n, n sin n) / 3 + N(0, 0.1²)``
============ ============================================================ ==========================================

Points are drawn i.i.d. (mixture component / spiral arm chosen at random per
point). The spec's table writes the rings rewards rounded as 0.667 / 0.333; the
exact thirds are used here. For ``moons`` and ``2spirals`` the reward is a
property of the generating latent (label, spiral parameter ``n``), not of the
point; :func:`toy2d_reward` therefore needs a labelled ``reference`` sample for
those two and looks the reward up at the nearest reference point.

Example:
    >>> x, r = sample_toy2d("rings", 1000, seed=0)
    >>> x.shape, x.dtype, r.shape, r.dtype
    ((1000, 2), dtype('float32'), (1000,), dtype('float32'))
    >>> sorted({round(float(v), 3) for v in r})
    [0.0, 0.333, 0.667, 1.0]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict

__all__ = [
    "TOY2D_DATASETS",
    "exact_target_samples",
    "optimal_regularized_value",
    "sample_toy2d",
    "target_mean_reward",
    "target_weights",
    "toy2d_reward",
    "toy2d_transitions",
]

logger = logging.getLogger(__name__)

TOY2D_DATASETS: tuple[str, ...] = (
    "swissroll",
    "8gaussians",
    "moons",
    "rings",
    "checkerboard",
    "2spirals",
)

# Datasets whose reward depends on the generating latent, not on the point alone.
_LATENT_REWARD = ("moons", "2spirals")

_GAUSS_SCALE = 1.414
# [8, 2] raw centres: radius 4, centre k at angle k·45°.
_GAUSS_RAW = 4.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)
_GAUSS_CENTRES = _GAUSS_RAW / _GAUSS_SCALE  # centres in data coordinates
_RING_RADII = np.array([3.0, 2.25, 1.5, 0.75])


def _check_name(name: str) -> str:
    if name not in TOY2D_DATASETS:
        raise ValueError(f"unknown 2D dataset {name!r}; known: {', '.join(TOY2D_DATASETS)}")
    return name


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _sk_seed(rng: np.random.Generator) -> int:
    """An int seed for sklearn generators, drawn from ``rng``."""
    return int(rng.integers(0, 2**31 - 1))


def _as_points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"expected points of shape [n, 2], got {x.shape}")
    return x


# --------------------------------------------------------------------------- rewards
def _reward_swissroll(x: np.ndarray) -> np.ndarray:
    return (x**2).sum(-1) / 9.0


def _nearest_gaussian(x: np.ndarray) -> np.ndarray:
    """Index [n] of the nearest 8gaussians centre."""
    d2 = ((x[:, None, :] - _GAUSS_CENTRES[None]) ** 2).sum(-1)
    return d2.argmin(-1)


def _reward_8gaussians(x: np.ndarray) -> np.ndarray:
    return _nearest_gaussian(x) / 7.0


def _reward_rings(x: np.ndarray) -> np.ndarray:
    sq = (x**2).sum(-1)
    return np.select([sq >= 8.5, sq >= 5.0, sq >= 2.0], [2.0 / 3.0, 1.0 / 3.0, 1.0], 0.0)


def _reward_checkerboard(x: np.ndarray) -> np.ndarray:
    x1 = x[:, 0]
    return (((x1 > 0) & (x1 <= 2)) | (x1 <= -2)).astype(np.float64)


_POINT_REWARDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "swissroll": _reward_swissroll,
    "8gaussians": _reward_8gaussians,
    "rings": _reward_rings,
    "checkerboard": _reward_checkerboard,
}


def toy2d_reward(
    name: str,
    x: np.ndarray,
    *,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Reward of arbitrary points ``x`` [n, 2] for task ``name``; returns float32 [n].

    For swissroll, 8gaussians, rings and checkerboard the reward is a function of
    the point. For moons and 2spirals it is a property of the generating latent
    (moon label, spiral parameter), so a labelled ``reference = (points [m, 2],
    rewards [m])`` sample (e.g. from :func:`sample_toy2d`) is required; each point
    then gets the reward of its nearest reference point. Without it a
    ``ValueError`` is raised.

    Example:
        >>> toy2d_reward("checkerboard", np.array([[1.0, 0.0], [-1.0, 3.0]]))
        array([1., 0.], dtype=float32)
        >>> ref = sample_toy2d("moons", 500, seed=0)
        >>> toy2d_reward("moons", ref[0][:3], reference=ref).tolist() == ref[1][:3].tolist()
        True
    """
    _check_name(name)
    x = _as_points(x)
    if name in _POINT_REWARDS:
        return _POINT_REWARDS[name](x).astype(np.float32)
    if reference is None:
        raise ValueError(
            f"the {name!r} reward depends on the latent that generated each point "
            "(moon label / spiral parameter n), not on the point alone; use the rewards "
            "returned by sample_toy2d, or pass reference=(points, rewards) for a "
            "nearest-reference-point lookup"
        )
    from scipy.spatial import cKDTree

    ref_x, ref_r = _as_points(reference[0]), np.asarray(reference[1], dtype=np.float64)
    if ref_r.shape != (ref_x.shape[0],):
        raise ValueError(f"reference rewards must have shape [{ref_x.shape[0]}], got {ref_r.shape}")
    _, idx = cKDTree(ref_x).query(x)
    return ref_r[idx].astype(np.float32)


# --------------------------------------------------------------------------- sampling
def _sample(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        x = make_swiss_roll(n, noise=1.0, random_state=_sk_seed(rng))[0][:, [0, 2]] / 5.0
        return x, _reward_swissroll(x)
    if name == "8gaussians":
        k = rng.integers(0, 8, size=n)
        x = (_GAUSS_RAW[k] + 0.5 * rng.standard_normal((n, 2))) / _GAUSS_SCALE
        return x, _reward_8gaussians(x)
    if name == "moons":
        from sklearn.datasets import make_moons

        x, label = make_moons(n, noise=0.1, random_state=_sk_seed(rng))
        return x * 2.0 + np.array([-1.0, -0.2]), label.astype(np.float64)
    if name == "rings":
        radius = _RING_RADII[rng.integers(0, 4, size=n)]
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        x = x + 0.08 * rng.standard_normal((n, 2))
        return x, _reward_rings(x)
    if name == "checkerboard":
        x1 = rng.uniform(size=n) * 4.0 - 2.0
        x2 = rng.uniform(size=n) - rng.integers(0, 2, size=n) * 2.0 + np.floor(x1) % 2
        x = np.stack([x1, x2], axis=1) * 2.0
        return x, _reward_checkerboard(x)
    if name == "2spirals":
        t = np.sqrt(rng.uniform(size=n)) * 3.0 * np.pi
        arm = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
        x = arm[:, None] * np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) / 3.0
        x = x + 0.1 * rng.standard_normal((n, 2))
        return x, np.clip(1.0 - t / 10.0, 0.0, 1.0)
    raise AssertionError(name)  # pragma: no cover - guarded by _check_name


def sample_toy2d(
    name: str, n: int, *, seed: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points of dataset ``name`` with their rewards.

    Returns ``(x, r)``: float32 arrays of shapes [n, 2] and [n]. ``seed`` is an
    int, a ``np.random.Generator`` (consumed) or None (fresh entropy).

    Example:
        >>> x, r = sample_toy2d("8gaussians", 4, seed=1)
        >>> x.shape, r.shape
        ((4, 2), (4,))
        >>> bool(np.array_equal(x, sample_toy2d("8gaussians", 4, seed=1)[0]))
        True
    """
    _check_name(name)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    x, r = _sample(name, int(n), _rng(seed))
    logger.debug("sampled %d points of %s", n, name)
    return x.astype(np.float32), r.astype(np.float32)


def toy2d_transitions(
    name: str, n: int, *, seed: int | np.random.Generator | None = None
) -> TensorDict:
    """One-step bandit transitions of dataset ``name`` in TorchRL TED layout.

    Batch size [n]. Keys: ``observation`` float32 [n, 1] zeros (dummy state),
    ``action`` float32 [n, 2], ``("next", "observation")`` zeros [n, 1],
    ``("next", "reward")`` float32 [n, 1], ``("next", "terminated")`` and
    ``("next", "done")`` True bool [n, 1], ``("next", "truncated")`` False.

    Example:
        >>> td = toy2d_transitions("moons", 8, seed=0)
        >>> td.batch_size, td["action"].shape, td["next", "reward"].shape
        (torch.Size([8]), torch.Size([8, 2]), torch.Size([8, 1]))
        >>> bool(td["next", "done"].all())
        True
    """
    x, r = sample_toy2d(name, n, seed=seed)
    n = x.shape[0]
    ones = torch.ones(n, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": torch.zeros(n, 1),
            "action": torch.from_numpy(x),
            "next": {
                "observation": torch.zeros(n, 1),
                "reward": torch.from_numpy(r).unsqueeze(-1),
                "terminated": ones.clone(),
                "truncated": torch.zeros(n, 1, dtype=torch.bool),
                "done": ones.clone(),
            },
        },
        batch_size=[n],
    )


# --------------------------------------------------------------------------- exact target
def _check_rewards_eta(rewards: np.ndarray, eta: float) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-D array, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive finite float, got {eta!r}")
    return r


def target_weights(rewards: np.ndarray, eta: float) -> np.ndarray:
    """Self-normalised target weights ``softmax(r / η)`` [n], float64 (stable).

    Example:
        >>> target_weights(np.array([0.0, 0.0]), 0.1).tolist()
        [0.5, 0.5]
    """
    z = _check_rewards_eta(rewards, eta) / eta
    w = np.exp(z - z.max())
    return w / w.sum()


def exact_target_samples(
    data: np.ndarray,
    rewards: np.ndarray,
    eta: float,
    num: int,
    *,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Ground-truth samples [num, 2] of ``p_target ∝ p_data · exp(r / η)``.

    Resamples ``data`` [n, 2] (with replacement) with weights ``softmax(r / η)``
    where ``rewards`` [n] are the data's rewards. Exact as n → ∞; for small η the
    effective sample size ``1 / Σ w²`` can be far below n (many repeats), so use a
    large data pool (e.g. 10⁵–10⁶ points).

    Example:
        >>> x, r = sample_toy2d("checkerboard", 2000, seed=0)
        >>> t = exact_target_samples(x, r, 0.01, 500, seed=0)
        >>> t.shape, bool((toy2d_reward("checkerboard", t) == 1).all())
        ((500, 2), True)
    """
    data = np.asarray(data)
    w = target_weights(rewards, eta)
    if data.ndim != 2 or data.shape[0] != w.shape[0]:
        raise ValueError(
            f"data must be [n, d] with n = len(rewards) = {w.shape[0]}, got {data.shape}"
        )
    if int(num) != num or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    logger.debug(
        "exact target: eta=%g, effective sample size %.1f of %d", eta, 1.0 / np.sum(w**2), w.size
    )
    idx = _rng(seed).choice(w.shape[0], size=int(num), replace=True, p=w)
    return data[idx]


def optimal_regularized_value(rewards: np.ndarray, eta: float) -> float:
    """Optimal KL-regularised value ``η · log mean exp(r / η)`` (log-sum-exp stable).

    Equals ``max_π E_π[r] − η · KL(π ‖ p_data)`` for the empirical ``p_data``.

    Example:
        >>> round(optimal_regularized_value(np.array([0.0, 1.0]), 1e-3), 3)
        0.999
    """
    z = _check_rewards_eta(rewards, eta) / eta
    m = z.max()
    return float(eta * (m + np.log(np.mean(np.exp(z - m)))))


def target_mean_reward(rewards: np.ndarray, eta: float) -> float:
    """Mean reward under the exact target, ``Σ softmax(r / η) · r``.

    Example:
        >>> round(target_mean_reward(np.array([0.0, 1.0]), 1e6), 6)
        0.5
    """
    r = _check_rewards_eta(rewards, eta)
    return float(np.dot(target_weights(r, eta), r))
