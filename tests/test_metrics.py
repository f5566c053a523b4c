"""Tests for recipes/distribution_metrics.py against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from distribution_metrics import energy_distance, sliced_wasserstein


def _cramer_1d(u: np.ndarray, v: np.ndarray) -> float:
    """2 ∫ (F_u − F_v)² dz for empirical CDFs, by direct integration over the merged grid."""
    z = np.sort(np.concatenate([u, v]))
    fu = np.searchsorted(np.sort(u), z[:-1], side="right") / len(u)
    fv = np.searchsorted(np.sort(v), z[:-1], side="right") / len(v)
    return float(2 * np.sum((fu - fv) ** 2 * np.diff(z)))


def _wp_1d_replicated(u: np.ndarray, v: np.ndarray, p: int) -> float:
    """W_p between 1-D empirical measures by replicating both to lcm(n, m) atoms."""
    n, m = len(u), len(v)
    lcm = n * m // math.gcd(n, m)
    a = np.repeat(np.sort(u), lcm // n)
    b = np.repeat(np.sort(v), lcm // m)
    return float(np.mean(np.abs(a - b) ** p) ** (1 / p))


# --------------------------------------------------------------------------- energy distance
def test_energy_identical_sets_zero() -> None:
    x = np.random.default_rng(0).normal(size=(300, 2))
    assert energy_distance(x, x) == 0.0
    assert energy_distance(torch.from_numpy(x).float(), x) < 1e-6
    # the same empirical distribution with every point repeated twice
    assert energy_distance(x, np.concatenate([x, x])) < 1e-12


def test_energy_point_masses() -> None:
    # X ≡ a, Y ≡ b: 2‖a − b‖ − 0 − 0
    assert energy_distance(np.full((5, 1), 1.5), np.full((3, 1), -2.0)) == pytest.approx(7.0)
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[0.0, -2.0, 3.0]])
    assert energy_distance(np.repeat(a, 4, 0), b) == pytest.approx(2 * np.linalg.norm(a - b))


def test_energy_matches_scipy_1d() -> None:
    # scipy.stats.energy_distance(u, v) = sqrt(2) · (∫ (F_u − F_v)²)^{1/2}
    #                                   = (2E|X−Y| − E|X−X'| − E|Y−Y'|)^{1/2}
    # (Székely's identity, exact for empirical CDFs), i.e. the square root of our V-statistic.
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=157), rng.normal(0.4, 1.3, size=91)
    ours = energy_distance(u, v)
    assert ours == pytest.approx(scipy.stats.energy_distance(u, v) ** 2, rel=1e-10)
    assert ours == pytest.approx(_cramer_1d(u, v), rel=1e-10)
    # 1-D input and [n, 1] input agree; symmetric
    assert energy_distance(u[:, None], v[:, None]) == ours
    assert energy_distance(v, u) == pytest.approx(ours, rel=1e-12)


def test_energy_u_statistic() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(150, 2))
    u, v = energy_distance(x, y, unbiased=True), energy_distance(x, y)
    assert u < v
    # U − V = E_V‖X−X'‖ − E_U‖X−X'‖ + same for Y: direct recomputation
    dxx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    dyy = np.linalg.norm(y[:, None] - y[None], axis=-1)
    dxy = np.linalg.norm(x[:, None] - y[None], axis=-1)
    direct = 2 * dxy.mean() - dxx.sum() / (200 * 199) - dyy.sum() / (150 * 149)
    assert u == pytest.approx(direct, rel=1e-10)
    assert v == pytest.approx(2 * dxy.mean() - dxx.mean() - dyy.mean(), rel=1e-10)
    # unbiased: averaged over repeats from the same distribution it is ~0
    reps = [
        energy_distance(rng.normal(size=(40, 2)), rng.normal(size=(40, 2)), unbiased=True)
        for _ in range(200)
    ]
    assert abs(np.mean(reps)) < 3 * np.std(reps) / np.sqrt(len(reps))


def test_energy_subsampling_seeded() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2500, 2)), rng.normal(0.5, 1.0, size=(2200, 2))
    a = energy_distance(x, y, max_samples=500, seed=0)
    assert a == energy_distance(x, y, max_samples=500, seed=0)
    assert a != energy_distance(x, y, max_samples=500, seed=1)
    full = energy_distance(x, y, max_samples=None)
    assert a == pytest.approx(full, rel=0.3)
    # the default cap (2000 per side) stays close to the full computation
    assert full == pytest.approx(energy_distance(x, y), rel=0.1)


def test_energy_same_distribution_closer_than_shifted() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(800, 2)), rng.normal(size=(800, 2))
    z = rng.normal(size=(800, 2)) + [0.5, 0.0]
    assert energy_distance(x, y) < energy_distance(x, z)
    assert sliced_wasserstein(x, y) < sliced_wasserstein(x, z)


def test_errors() -> None:
    with pytest.raises(ValueError, match="dimension"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        sliced_wasserstein(np.zeros((0, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        energy_distance(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="p must"):
        sliced_wasserstein(np.zeros((3, 2)), np.zeros((3, 2)), p=0)


# --------------------------------------------------------------------------- sliced Wasserstein
def test_sw_identical_and_replicated_zero() -> None:
    x = np.random.default_rng(5).normal(size=(123, 2))
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, np.concatenate([x, x, x])) < 1e-12  # n != m, same measure


@pytest.mark.parametrize("p", [1, 2])
def test_sw_1d_equals_exact_wasserstein(p: int) -> None:
    # in 1-D every projection is ±1, so SW_p = W_p exactly (also for n != m)
    rng = np.random.default_rng(6)
    u, v = rng.normal(size=30), rng.exponential(size=45)
    sw = sliced_wasserstein(u, v, p=p, num_projections=8)
    assert sw == pytest.approx(_wp_1d_replicated(u, v, p), rel=1e-10)
    if p == 1:
        assert sw == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-10)


def test_sw_shift_relation() -> None:
    # y = x + s·e: each projection is shifted by s·θ·e, so W_p(θ) = s|θ·e| and
    # SW_2 = s·(E(θ·e)²)^{1/2} = s/√d, SW_1 = s·E|θ·e| = 2s/π in 2-D.
    x = np.random.default_rng(7).normal(size=(500, 2))
    s, e = 1.7, np.array([0.6, 0.8])
    y = x + s * e
    sw2 = sliced_wasserstein(x, y, num_projections=2048)
    sw1 = sliced_wasserstein(x, y, num_projections=2048, p=1)
    assert sw2 == pytest.approx(s / np.sqrt(2), rel=0.03)
    assert sw1 == pytest.approx(s * 2 / np.pi, rel=0.03)
    # 3-D: s/√3
    x3 = np.random.default_rng(8).normal(size=(300, 3))
    assert sliced_wasserstein(x3, x3 + [0.0, 0.0, s], num_projections=2048) == pytest.approx(
        s / np.sqrt(3), rel=0.04
    )


def test_sw_seeded_and_torch_input() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(170, 2))
    a = sliced_wasserstein(x, y, seed=3)
    assert a == sliced_wasserstein(x, y, seed=3)
    assert a == pytest.approx(sliced_wasserstein(torch.from_numpy(x), torch.from_numpy(y), seed=3))
    assert a != sliced_wasserstein(x, y, seed=4)
    # chunking does not change the result
    assert a == pytest.approx(sliced_wasserstein(x, y, seed=3, chunk=7), rel=1e-12)
