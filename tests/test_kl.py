"""The per-step and pathwise KL of BDPO against independent computations."""

from __future__ import annotations

import torch
from _factories import OBS, diffusion_actor, make_loss, with_target_updaters
from torch.distributions import Independent, Normal, kl_divergence


def _mean(schedule, x, n, eps):
    """Unclipped DDPM mean, written independently from the library."""
    beta, alpha, abar = (schedule.betas[n], schedule.alphas[n], schedule.alpha_bars[n])
    return (x - beta / torch.sqrt(1 - abar) * eps) / torch.sqrt(alpha)


def test_per_step_kl_equals_gaussian_kl():
    torch.manual_seed(0)
    loss = make_loss(num_steps=5, clip=False)
    sched = loss.schedule
    obs, x = torch.randn(64, OBS), torch.randn(64, 2)
    for step in range(1, 6):
        n = torch.full((64,), step)
        e_pi = loss._noise(loss.actor_network, loss.actor_network_params, obs, x, n)
        e_nu = loss._noise(loss.behavior_network, loss.target_behavior_network_params, obs, x, n)
        sigma = sched.betas[step].sqrt()
        p = Independent(Normal(_mean(sched, x, step, e_pi), sigma), 1)
        q = Independent(Normal(_mean(sched, x, step, e_nu), sigma), 1)
        torch.testing.assert_close(
            loss._kl(e_pi, e_nu, loss.schedule.kl_weights[n]),
            kl_divergence(p, q),
            rtol=1e-4,
            atol=1e-5,
        )


def test_pathwise_penalty_matches_monte_carlo_log_ratio():
    """E_{path ~ pi}[log p_pi(path) - log p_nu(path)] = E[sum_n l_n] (no clipping)."""
    torch.manual_seed(1)
    big_n, paths = 4, 40_000
    pi, nu = diffusion_actor(big_n, clip=False), diffusion_actor(big_n, clip=False)
    sched = pi.policy.schedule
    obs = torch.randn(1, OBS).expand(paths, OBS)
    log_ratio = torch.zeros(paths)
    with torch.no_grad():
        x = torch.randn(paths, 2)  # x_N: same prior under both models, no contribution
        for step in range(big_n, 0, -1):
            n = torch.full((paths,), step)
            sigma = sched.betas[step].sqrt()  # a proper Gaussian path: noise at every step
            mu_pi = _mean(sched, x, step, pi.policy.predict_noise(obs, x, n))
            mu_nu = _mean(sched, x, step, nu.policy.predict_noise(obs, x, n))
            x = mu_pi + sigma * torch.randn_like(x)
            log_ratio += Normal(mu_pi, sigma).log_prob(x).sum(-1) - Normal(mu_nu, sigma).log_prob(
                x
            ).sum(-1)
    mc = log_ratio.mean()
    mc_se = log_ratio.std() / paths**0.5

    from tensordict import TensorDict

    from torchrl_bdpo import (
        BDPOLoss,
        DiffusionValueEnsemble,
        QEnsemble,
        make_qvalue_operator,
        make_value_operator,
    )

    loss = with_target_updaters(
        BDPOLoss(
            pi,
            make_qvalue_operator(QEnsemble(OBS, 2, num_members=2, hidden_sizes=(8,))),
            make_value_operator(DiffusionValueEnsemble(OBS, 2, num_members=2, hidden_sizes=(8,))),
            nu,
            eta=1.0,
            num_samples=paths // 8,
        )
    )
    td = TensorDict(
        {
            "next": {
                "observation": obs[:8],
                "reward": torch.zeros(8, 1),
                "terminated": torch.zeros(8, 1, dtype=torch.bool),
            }
        },
        [8],
    )
    _, meta = loss.q_target(td)
    assert abs(meta["penalty"] - mc) < 4 * mc_se + 0.02 * mc.abs(), (meta["penalty"], mc, mc_se)
    assert meta["kl_per_step"].shape == (big_n,)
    torch.testing.assert_close(meta["kl_per_step"].sum(), meta["penalty"], rtol=1e-4, atol=1e-5)


def test_penalty_zero_when_actor_equals_behavior():
    torch.manual_seed(2)
    loss = make_loss()
    loss.init_actor_from_behavior()
    from _factories import batch

    _, meta = loss.q_target(batch(16))
    assert meta["penalty"].abs() < 1e-10
