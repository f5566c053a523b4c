"""Fast paths give the same losses (and gradients) as the plain computation."""

from __future__ import annotations

import pytest
import torch
from _factories import ACT, OBS, batch, make_loss, with_target_updaters


@pytest.mark.parametrize("big_n", [1, 3, 5])
def test_partitioned_next_values_equal_plain(big_n):
    torch.manual_seed(0)
    loss = make_loss(num_steps=big_n, stratified_steps=True)
    b, m = 11, 3
    obs, x = torch.randn(b, OBS), torch.randn(b, m, ACT)
    n_prev = loss._sample_steps(b, "cpu") - 1
    fast = loss._next_values(obs, x, n_prev)
    loss.stratified_steps = False
    torch.testing.assert_close(fast, loss._next_values(obs, x, n_prev))


def test_stratified_steps_cover_every_step_evenly():
    loss = make_loss(num_steps=5, stratified_steps=True)
    counts = torch.bincount(loss._sample_steps(256, "cpu"), minlength=6)[1:]
    assert counts.min() >= 51 and counts.max() <= 52


@pytest.mark.parametrize(
    "method,group", [("value_loss", "value_network"), ("actor_loss", "actor_network")]
)
def test_stratified_losses_and_grads_equal_plain_path(method, group):
    torch.manual_seed(0)
    loss = make_loss(num_steps=4, stratified_steps=True)
    td = batch(13)

    def run():
        loss.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        value, _ = getattr(loss, method)(td)
        value.backward()
        grads = [
            p.grad.clone()
            for p in getattr(loss, f"{group}_params").values(True, True)
            if p.grad is not None
        ]
        return value.detach(), grads

    fast, fast_grads = run()
    stratified = loss._sample_steps

    def same_steps(b, device):  # the stratified steps (and RNG use), then the plain computation
        loss.stratified_steps = True
        try:
            return stratified(b, device)
        finally:
            loss.stratified_steps = False

    loss.stratified_steps = False
    loss._sample_steps = same_steps
    plain, plain_grads = run()
    torch.testing.assert_close(fast, plain)
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b)


def test_direct_module_call_equals_tensordict_path():
    """Plain TensorDictModules are called without building TensorDicts; any other TD module goes
    through TensorDicts. Both give the same losses."""
    from tensordict.nn import TensorDictSequential

    torch.manual_seed(0)
    loss = make_loss(num_steps=3)
    td = batch(6)
    torch.manual_seed(1)
    direct = loss(td)
    wrapped_q = TensorDictSequential(loss.qvalue_network)
    wrapped_v = TensorDictSequential(loss.value_network)
    assert type(wrapped_q) is not type(loss.qvalue_network)
    from torchrl_bdpo import BDPOLoss

    other = with_target_updaters(
        BDPOLoss(
            loss.actor_network, wrapped_q, wrapped_v, loss.behavior_network, eta=0.2, num_samples=3
        )
    )
    other.load_state_dict(loss.state_dict())
    torch.manual_seed(1)
    via_td = other(td)
    for key in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(direct[key], via_td[key])


def test_stratified_steps_reach_every_step_with_a_small_batch():
    """B - ceil(B/N) < N - 1: the cycle's random start still reaches every step over calls."""
    loss = make_loss(num_steps=5, stratified_steps=True)
    torch.manual_seed(0)
    steps = torch.cat([loss._sample_steps(3, "cpu") for _ in range(40)])
    assert set(steps.tolist()) == {1, 2, 3, 4, 5}
