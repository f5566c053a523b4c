"""The VP schedule against the spec's table and an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchrl_bdpo import VPSchedule


def test_n5_matches_spec_table():
    s = VPSchedule(5)
    np.testing.assert_allclose(
        s.betas[1:].numpy(), [0.1959, 0.4588, 0.6358, 0.7549, 0.8350], atol=1e-4
    )
    np.testing.assert_allclose(
        s.alpha_bars[1:].numpy(), [0.804, 0.435, 0.159, 0.039, 0.0064], atol=1e-3
    )
    np.testing.assert_allclose(
        s.kl_weights[1:].numpy(), [0.622, 0.751, 1.037, 1.602, 2.547], atol=1e-3
    )
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1 and s.kl_weights[0] == 0


@pytest.mark.parametrize("big_n", [1, 2, 5, 50])
def test_against_numpy(big_n):
    b_min, b_max = 0.1, 10.0
    betas = [
        1 - np.exp(-b_min / big_n - 0.5 * (b_max - b_min) * (2 * n - 1) / big_n**2)
        for n in range(1, big_n + 1)
    ]
    abar = np.cumprod(1 - np.array(betas))
    weights = [betas[i] / (2 * (1 - betas[i]) * (1 - abar[i])) for i in range(big_n)]
    s = VPSchedule(big_n)
    np.testing.assert_allclose(s.betas[1:].numpy(), betas, rtol=1e-5)
    np.testing.assert_allclose(s.alpha_bars[1:].numpy(), abar, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(s.sigmas[1:].numpy() ** 2, betas, rtol=1e-5)
    np.testing.assert_allclose(s.kl_weights[1:].numpy(), weights, rtol=1e-4)


def test_q_sample_moments():
    s = VPSchedule(5)
    x0 = torch.full((200_000, 1), 0.7)
    n = torch.full((200_000,), 3)
    x = s.q_sample(x0, n)
    abar = float(s.alpha_bars[3])
    assert abs(x.mean().item() - abar**0.5 * 0.7) < 0.01
    assert abs(x.var().item() - (1 - abar)) < 0.01


def test_bad_settings():
    with pytest.raises(ValueError, match="num_steps"):
        VPSchedule(0)
    with pytest.raises(ValueError, match="beta_min"):
        VPSchedule(5, beta_min=0.0)
