"""Tests for recipes/toy2d.py (2-D bandit datasets, exact target) and recipes/toy2d_evaluation.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from toy2d import (
    TOY2D_DATASETS,
    exact_target_samples,
    optimal_regularized_value,
    sample_toy2d,
    target_mean_reward,
    target_weights,
    toy2d_reward,
    toy2d_transitions,
)

N = 4000


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: sample_toy2d(name, N, seed=123) for name in TOY2D_DATASETS}


# --------------------------------------------------------------------------- sampling basics
def test_dataset_names() -> None:
    assert TOY2D_DATASETS == (
        "swissroll",
        "8gaussians",
        "moons",
        "rings",
        "checkerboard",
        "2spirals",
    )


@pytest.mark.parametrize("name", TOY2D_DATASETS)
def test_shapes_dtypes_support(name: str, samples) -> None:
    x, r = samples[name]
    assert x.shape == (N, 2) and x.dtype == np.float32
    assert r.shape == (N,) and r.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(r))
    assert np.abs(x).max() <= 4.5
    # the data fill a good part of the box, not a degenerate blob
    assert x.std(0).min() > 0.5


@pytest.mark.parametrize("name", TOY2D_DATASETS)
def test_seeded_determinism(name: str) -> None:
    a = sample_toy2d(name, 64, seed=7)
    b = sample_toy2d(name, 64, seed=7)
    c = sample_toy2d(name, 64, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(
        sample_toy2d(name, 16, seed=g1)[0], sample_toy2d(name, 16, seed=g2)[0]
    )
    # a Generator is consumed: a second draw differs
    assert not np.array_equal(sample_toy2d(name, 16, seed=g1)[0], sample_toy2d(name, 16, seed=3)[0])


def test_odd_and_single_sizes() -> None:
    for name in TOY2D_DATASETS:
        assert sample_toy2d(name, 1, seed=0)[0].shape == (1, 2)
        assert sample_toy2d(name, 7, seed=0)[1].shape == (7,)


def test_errors() -> None:
    with pytest.raises(ValueError, match="known: swissroll, 8gaussians"):
        sample_toy2d("spiral", 10)
    with pytest.raises(ValueError, match="unknown"):
        toy2d_reward("nope", np.zeros((1, 2)))
    with pytest.raises(ValueError, match="unknown"):
        toy2d_transitions("nope", 3)
    with pytest.raises(ValueError, match="positive integer"):
        sample_toy2d("moons", 0)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        toy2d_reward("rings", np.zeros((3, 3)))


# --------------------------------------------------------------------------- rewards vs spec
@pytest.mark.parametrize("name", ["swissroll", "8gaussians", "rings", "checkerboard"])
def test_point_reward_matches_sample(name: str, samples) -> None:
    x, r = samples[name]
    np.testing.assert_allclose(toy2d_reward(name, x), r, atol=1e-6)


def test_swissroll_reward(samples) -> None:
    x, r = samples["swissroll"]
    np.testing.assert_allclose(r, (x.astype(np.float64) ** 2).sum(1) / 9, rtol=1e-5)
    assert r.min() >= 0 and r.max() < 2.0


def test_8gaussians_reward_is_nearest_centre_index(samples) -> None:
    x, r = samples["8gaussians"]
    k = r * 7
    np.testing.assert_allclose(k, np.round(k), atol=1e-5)
    # independent recomputation: centre k sits at angle k·45°, so the nearest centre of
    # a point is its angle rounded to the nearest multiple of 45°
    k_angle = np.round(np.arctan2(x[:, 1], x[:, 0]) / (np.pi / 4)).astype(int) % 8
    np.testing.assert_array_equal(np.round(k).astype(int), k_angle)
    counts = np.bincount(k_angle, minlength=8)
    assert counts.min() > N / 8 * 0.8
    # modes at radius 4 / 1.414
    np.testing.assert_allclose(np.median(np.linalg.norm(x, axis=1)), 4 / 1.414, atol=0.1)


def test_moons_reward_is_label(samples) -> None:
    x, r = samples["moons"]
    assert set(np.unique(r).tolist()) == {0.0, 1.0}
    assert abs(r.mean() - 0.5) < 0.01
    # label 0: upper moon centred at x ≈ -1; label 1: lower moon centred at x ≈ +1
    up, low = x[r == 0], x[r == 1]
    assert up[:, 0].mean() < -0.5 and low[:, 0].mean() > 0.5
    assert up[:, 1].mean() > low[:, 1].mean() + 0.5


def test_rings_reward_bands(samples) -> None:
    x, r = samples["rings"]
    allowed = np.array([0.0, 1 / 3, 2 / 3, 1.0], dtype=np.float32)
    assert np.isin(np.unique(r), allowed).all()
    sq = (x.astype(np.float64) ** 2).sum(1)
    expected = np.full(N, np.nan)
    expected[sq >= 8.5] = 2 / 3
    expected[(sq >= 5) & (sq < 8.5)] = 1 / 3
    expected[(sq >= 2) & (sq < 5)] = 1.0
    expected[sq < 2] = 0.0
    np.testing.assert_allclose(r, expected, atol=1e-6)
    # four rings of radii 3, 2.25, 1.5, 0.75 with ~equal mass
    rad = np.sqrt(sq)
    for r0 in (3.0, 2.25, 1.5, 0.75):
        frac = np.mean(np.abs(rad - r0) < 0.3)
        assert 0.2 < frac < 0.3, (r0, frac)


def test_checkerboard_reward_and_support(samples) -> None:
    x, r = samples["checkerboard"]
    x1 = x[:, 0]
    rule = ((x1 > 0) & (x1 <= 2)) | (x1 <= -2)
    np.testing.assert_array_equal(r, rule.astype(np.float32))
    assert abs(r.mean() - 0.5) < 0.05
    assert np.abs(x).max() <= 4.0
    # points lie on the 8 "black" 2×2 squares of the 4×4 board
    cell = np.floor(x / 2).astype(int)
    assert np.all((cell.sum(1) % 2) == 0)
    assert len({tuple(c) for c in cell}) == 8


def test_2spirals_reward(samples) -> None:
    x, r = samples["2spirals"]
    lo = 1 - 3 * np.pi / 10
    assert r.min() >= lo - 1e-6 and r.max() <= 1.0
    # the latent n = 10 (1 - r) is the spiral parameter; the radius is n / 3 + noise
    n = 10 * (1 - r.astype(np.float64))
    radius = np.linalg.norm(x, axis=1)
    assert np.abs(radius - n / 3).max() < 0.6
    assert np.abs(radius - n / 3).mean() < 0.12
    # n = sqrt(U)·3π: P(n <= 3π/2) = 1/4
    assert abs(np.mean(n <= 1.5 * np.pi) - 0.25) < 0.03


@pytest.mark.parametrize("name", ["moons", "2spirals"])
def test_latent_reward_needs_reference(name: str, samples) -> None:
    with pytest.raises(ValueError, match="latent"):
        toy2d_reward(name, np.zeros((2, 2)))
    ref = samples[name]
    x, r = sample_toy2d(name, 500, seed=99)
    looked_up = toy2d_reward(name, x, reference=ref)
    assert looked_up.dtype == np.float32 and looked_up.shape == (500,)
    if name == "moons":
        assert np.mean(looked_up == r) > 0.95
    else:
        assert np.median(np.abs(looked_up - r)) < 0.05


# --------------------------------------------------------------------------- TED layout
def test_transitions_ted_layout() -> None:
    td = toy2d_transitions("rings", 32, seed=5)
    x, r = sample_toy2d("rings", 32, seed=5)
    assert td.batch_size == torch.Size([32])
    assert td["observation"].shape == (32, 1) and td["observation"].dtype == torch.float32
    assert torch.all(td["observation"] == 0) and torch.all(td["next", "observation"] == 0)
    assert td["next", "observation"].shape == (32, 1)
    assert td["action"].dtype == torch.float32
    np.testing.assert_array_equal(td["action"].numpy(), x)
    assert td["next", "reward"].shape == (32, 1) and td["next", "reward"].dtype == torch.float32
    np.testing.assert_array_equal(td["next", "reward"].squeeze(-1).numpy(), r)
    for key, val in (("terminated", True), ("truncated", False), ("done", True)):
        flag = td["next", key]
        assert flag.shape == (32, 1) and flag.dtype == torch.bool
        assert bool((flag == val).all())
    expected = {
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "terminated"),
        ("next", "truncated"),
        ("next", "done"),
    }
    assert set(td.keys(include_nested=True, leaves_only=True)) == expected


def test_transitions_in_replay_buffer() -> None:
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    td = toy2d_transitions("moons", 100, seed=0)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=16)
    rb.extend(td)
    batch = rb.sample()
    assert batch["action"].shape == (16, 2) and batch["next", "reward"].shape == (16, 1)


# --------------------------------------------------------------------------- exact target
def test_weights_stable_and_normalised() -> None:
    r = np.array([0.0, 1.0, 1.0, 0.5])
    w = target_weights(r, 1e-4)  # exp(1e4) would overflow without max-subtraction
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w, [0, 0.5, 0.5, 0], atol=1e-12)
    w = target_weights(r, 0.5)
    np.testing.assert_allclose(w, np.exp(r / 0.5) / np.exp(r / 0.5).sum())


def test_target_large_eta_is_data(samples) -> None:
    x, r = samples["rings"]
    t = exact_target_samples(x, r, 1e6, 20000, seed=0)
    assert t.shape == (20000, 2) and t.dtype == x.dtype
    # resampling uniformly: each data point picked ~5 times, reward mean matches the data
    assert abs(toy2d_reward("rings", t).mean() - r.mean()) < 0.02
    assert abs(target_mean_reward(r, 1e6) - r.mean()) < 1e-5
    assert abs(optimal_regularized_value(r, 1e6) - r.mean()) < 1e-5


@pytest.mark.parametrize("name", TOY2D_DATASETS)
def test_target_small_eta_concentrates_on_max(name: str, samples) -> None:
    x, r = samples[name]
    t = exact_target_samples(x, r, 1e-5, 300, seed=1)
    idx = np.flatnonzero(r == r.max())
    best = {tuple(p) for p in x[idx]}
    assert all(tuple(p) in best for p in t)
    assert abs(target_mean_reward(r, 1e-5) - r.max()) < 1e-6
    # value -> max r − η·log(n / #argmax)
    expect = r.max() - 1e-5 * np.log(len(r) / len(idx))
    np.testing.assert_allclose(optimal_regularized_value(r, 1e-5), expect, atol=1e-6)


@pytest.mark.parametrize("eta", [0.05, 0.2, 1.0, 5.0])
def test_optimal_value_and_target_mean_direct(eta: float, samples) -> None:
    _, r = samples["2spirals"]
    r64 = r.astype(np.float64)
    direct = eta * np.log(np.mean(np.exp(r64 / eta)))  # no overflow for these η
    np.testing.assert_allclose(optimal_regularized_value(r, eta), direct, rtol=1e-10)
    w = np.exp(r64 / eta) / np.exp(r64 / eta).sum()
    np.testing.assert_allclose(target_mean_reward(r, eta), (w * r64).sum(), rtol=1e-10)
    # Gibbs variational identity: V* = E_target[r] − η·KL(target ‖ data)
    kl = np.sum(w * np.log(w * len(r)))
    np.testing.assert_allclose(
        optimal_regularized_value(r, eta), (w * r64).sum() - eta * kl, rtol=1e-8
    )
    # the value lies between the data mean and the max
    assert r64.mean() <= optimal_regularized_value(r, eta) <= r64.max()


def test_target_sample_frequencies_match_weights() -> None:
    data = np.arange(8, dtype=np.float32).reshape(4, 2)
    r = np.array([0.0, 0.1, 0.2, 0.3])
    t = exact_target_samples(data, r, 0.1, 40000, seed=0)
    freq = np.array([(t[:, 0] == data[i, 0]).mean() for i in range(4)])
    np.testing.assert_allclose(freq, target_weights(r, 0.1), atol=0.01)
    np.testing.assert_array_equal(t[:5], exact_target_samples(data, r, 0.1, 40000, seed=0)[:5])


def test_target_errors() -> None:
    x, r = sample_toy2d("moons", 10, seed=0)
    with pytest.raises(ValueError, match="eta"):
        exact_target_samples(x, r, 0.0, 5)
    with pytest.raises(ValueError, match="eta"):
        optimal_regularized_value(r, -1.0)
    with pytest.raises(ValueError, match="n = len"):
        exact_target_samples(x[:5], r, 0.1, 5)
    with pytest.raises(ValueError, match="finite"):
        target_mean_reward(np.array([0.0, np.nan]), 0.1)
    with pytest.raises(ValueError, match="num"):
        exact_target_samples(x, r, 0.1, 0)


# --------------------------------------------------------------------------- plots (smoke)
def _load_plots():
    path = Path(__file__).resolve().parents[1] / "recipes" / "toy2d_evaluation.py"
    spec = importlib.util.spec_from_file_location("toy2d_evaluation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plots_write_png(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    open_before = set(plt.get_fignums())  # figures another test may have left open
    plots = _load_plots()
    x, r = sample_toy2d("moons", 300, seed=0)
    t = exact_target_samples(x, r, 0.06, 300, seed=0)
    out = tmp_path / "sub" / "samples.png"
    plots.plot_toy2d_samples(x, t, t, out, title="moons")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vals = np.random.default_rng(0).normal(size=(3, 16, 16))
    out2 = tmp_path / "landscape.png"
    plots.plot_value_landscape(vals, [10, 1, 0], (-4.5, 4.5, -4.5, 4.5), out2, samples=[x, x, None])
    assert out2.stat().st_size > 1000
    assert set(plt.get_fignums()) <= open_before  # its figures closed
    with pytest.raises(ValueError, match="steps"):
        plots.plot_value_landscape(vals, [1, 0], (-1, 1, -1, 1), out2)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        plots.plot_toy2d_samples(x[:, :1], t, t, out)
