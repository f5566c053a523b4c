"""Q and V targets against explicit re-computations on tiny seeded cases."""

from __future__ import annotations

import pytest
import torch
from _factories import ACT, OBS, batch, make_loss


def _mean(schedule, x, n, eps):
    beta, alpha, abar = schedule.betas[n], schedule.alphas[n], schedule.alpha_bars[n]
    return (x - beta[..., None] / torch.sqrt(1 - abar[..., None]) * eps) / torch.sqrt(
        alpha[..., None]
    )


def _lcb(values, rho):
    mean = values.mean(-1)
    std = ((values - mean[..., None]) ** 2).mean(-1).sqrt()  # population std
    return mean - rho * std


def _q(loss, params, obs, act):
    with params.to_module(loss.qvalue_network):
        return loss.qvalue_network.module(obs, act)


def _eps(loss, module, params, obs, x, n):
    with params.to_module(module):
        return module.policy.noise_net(x, n, obs)


@pytest.mark.parametrize("placement", ["inside", "outside"])
@pytest.mark.parametrize("backup", ["mean", "max"])
def test_q_target_by_hand(placement, backup):
    big_n, m, b, rho, eta, gamma = 2, 3, 4, 0.7, 0.3, 0.9
    loss = make_loss(
        num_steps=big_n,
        clip=False,
        eta=eta,
        rho=rho,
        gamma=gamma,
        num_samples=m,
        penalty_placement=placement,
        backup=backup,
    )
    td = batch(b)
    td["next", "terminated"][0] = True
    torch.manual_seed(123)
    target, meta = loss.q_target(td)

    torch.manual_seed(123)
    sched = loss.schedule
    s = td["next", "observation"]
    x = torch.randn(b, m, ACT)
    penalty = torch.zeros(b, m)
    for step in range(big_n, 0, -1):
        n = torch.full((b, m), step)
        e_pi = _eps(
            loss,
            loss.actor_network,
            loss.target_actor_network_params,
            s[:, None].expand(b, m, OBS),
            x,
            n,
        )
        e_nu = _eps(
            loss,
            loss.behavior_network,
            loss.target_behavior_network_params,
            s[:, None].expand(b, m, OBS),
            x,
            n,
        )
        penalty += sched.kl_weights[step] * ((e_pi - e_nu) ** 2).sum(-1)
        mean = _mean(sched, x, n, e_pi)
        noise = torch.randn_like(mean)
        x = mean + (sched.betas[step].sqrt() * noise if step > 1 else 0.0)
    q = _q(loss, loss.target_qvalue_network_params, s[:, None].expand(b, m, OBS), x)  # [b, m, K]
    red = q.mean(1) if backup == "mean" else q.max(1).values
    boot = _lcb(red, rho)
    p = penalty.mean(1)
    r = td["next", "reward"][:, 0]
    nonterm = 1.0 - td["next", "terminated"][:, 0].float()
    expected = (
        r + gamma * nonterm * (boot - eta * p)
        if placement == "inside"
        else r + gamma * nonterm * boot - eta * p
    )
    torch.testing.assert_close(target, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(meta["penalty"], p.mean(), rtol=1e-4, atol=1e-6)
    assert target[0] != pytest.approx(
        float((r[0] + gamma * boot[0]).detach())
    )  # terminal row differs from bootstrap


def test_bandit_q_target_is_reward():
    loss = make_loss(bandit=True)
    td = batch(5, terminated=True)
    target, _ = loss.q_target(td)
    torch.testing.assert_close(target, td["next", "reward"][:, 0])
    # one-step data need no next state and no termination flags
    td = td.exclude(("next", "observation"), ("next", "terminated"), ("next", "done"))
    assert set(loss.in_keys) == {"observation", "action", ("next", "reward")}
    torch.testing.assert_close(loss.q_target(td)[0], td["next", "reward"][:, 0])
    assert set(loss(td).keys()) >= {"loss_qvalue", "loss_value", "loss_actor"}


def test_v_target_by_hand_bootstraps_from_q_at_n1():
    big_n, m, b, rho, eta = 2, 3, 32, 0.5, 0.4
    loss = make_loss(num_steps=big_n, clip=False, eta=eta, rho=rho, num_samples=m)
    td = batch(b)
    captured = {}
    orig = loss.value_network.module.forward

    def spy(obs, x, n):
        out = orig(obs, x, n)
        captured.setdefault("calls", []).append(
            (x.detach().clone(), n.clone(), out.detach().clone())
        )
        return out

    loss.value_network.module.forward = spy
    torch.manual_seed(7)
    _, meta = loss.value_loss(td)
    loss.value_network.module.forward = orig

    torch.manual_seed(7)
    sched = loss.schedule
    obs, act = td["observation"], td["action"]
    n = torch.randint(1, big_n + 1, (b,))
    eps0 = torch.randn_like(act)
    abar = sched.alpha_bars[n][:, None]
    x_n = abar.sqrt() * act + (1 - abar).sqrt() * eps0
    z = torch.randn(b, m, ACT)
    e_pi = _eps(loss, loss.actor_network, loss.target_actor_network_params, obs, x_n, n)
    e_nu = _eps(loss, loss.behavior_network, loss.target_behavior_network_params, obs, x_n, n)
    ell = sched.kl_weights[n] * ((e_pi - e_nu) ** 2).sum(-1)
    x_prev = (
        _mean(sched, x_n, n, e_pi)[:, None]
        + torch.where(n > 1, sched.betas[n].sqrt(), 0.0)[:, None, None] * z
    )
    q = _q(loss, loss.target_qvalue_network_params, obs[:, None].expand(b, m, OBS), x_prev)
    with loss.target_value_network_params.to_module(loss.value_network):
        v = orig(obs[:, None].expand(b, m, OBS), x_prev, (n - 1).clamp_min(1)[:, None].expand(b, m))
    nxt = torch.where((n == 1)[:, None, None], q, v)
    expected = _lcb(nxt.mean(1), rho) - eta * ell
    assert (n == 1).any() and (n == 2).any()
    torch.testing.assert_close(meta["target_v"], expected.mean(), rtol=1e-4, atol=1e-5)
    # the online V was evaluated at the forward-noised dataset action and its step
    x_pred, n_pred, _ = captured["calls"][-1]
    torch.testing.assert_close(x_pred, x_n)
    torch.testing.assert_close(n_pred, n)


@pytest.mark.parametrize("dtype", [torch.long, torch.uint8, torch.float32])
def test_q_target_reads_integer_and_float_terminal_flags_like_bool(dtype):
    loss = make_loss(num_steps=2)
    td = batch(6)
    td["next", "terminated"][::2] = True
    torch.manual_seed(5)
    expected, _ = loss.q_target(td)
    td["next", "terminated"] = td["next", "terminated"].to(dtype)
    torch.manual_seed(5)
    target, _ = loss.q_target(td)
    torch.testing.assert_close(target, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_q_loss_by_hand_reduces_members_by_element_reduction(reduction):
    loss = make_loss(num_steps=2, error_reduction=reduction)
    td = batch(8)
    torch.manual_seed(9)
    target, _ = loss.q_target(td)
    q = _q(loss, loss.qvalue_network_params, td["observation"], td["action"])  # [8, K]
    squared = (q - target[:, None]) ** 2
    expected = squared.mean() if reduction == "mean" else squared.sum(-1).mean()
    torch.manual_seed(9)
    value, _ = loss.qvalue_loss(td)
    torch.testing.assert_close(value, expected)


def test_v_loss_sum_is_k_times_mean():
    loss = make_loss(num_steps=3, error_reduction="mean")
    td = batch(8)
    torch.manual_seed(4)
    mean, _ = loss.value_loss(td)
    loss.error_reduction = "sum"
    torch.manual_seed(4)
    total, _ = loss.value_loss(td)
    k = loss.value_network.module(td["observation"], td["action"], torch.ones(8, dtype=torch.long))
    torch.testing.assert_close(total, mean * k.shape[-1])
