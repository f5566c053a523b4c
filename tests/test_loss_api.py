"""BDPOLoss as a TorchRL LossModule: gradient isolation, targets, keys, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from _factories import ACT, OBS, K, batch, diffusion_actor, make_loss, with_target_updaters
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_bdpo import (
    BDPOLoss,
    DiffusionValueEnsemble,
    GroupSoftUpdate,
    QEnsemble,
    make_qvalue_operator,
    make_value_operator,
)

GROUPS = ("actor_network", "behavior_network", "qvalue_network", "value_network")


def _zero_grads(loss):
    for p in loss.parameters():
        p.grad = None


def _has_grad(params) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values(True, True))


def test_actor_loss_touches_only_the_actor():
    loss = make_loss()
    loss.actor_loss(batch(16))[0].backward()
    assert _has_grad(loss.actor_network_params)
    for group in ("qvalue_network", "value_network", "behavior_network"):
        assert not _has_grad(getattr(loss, f"{group}_params")), group


def test_no_loss_makes_target_parameters_differentiable():
    """Targets stay plain tensors without gradients (swapping them into modules must not turn them into Parameters)."""
    loss = make_loss()
    for method in ("actor_loss", "qvalue_loss", "value_loss", "behavior_loss"):
        getattr(loss, method)(batch(8))[0].backward()
    for group in GROUPS:
        for key, value in getattr(loss, f"target_{group}_params").items(True, True):
            assert not value.requires_grad and value.grad is None, (group, key)
            assert not isinstance(value, torch.nn.Parameter), (group, key)


@pytest.mark.parametrize(
    "method,trained",
    [
        ("qvalue_loss", "qvalue_network"),
        ("value_loss", "value_network"),
        ("behavior_loss", "behavior_network"),
    ],
)
def test_critic_and_behavior_losses_touch_only_their_group(method, trained):
    loss = make_loss()
    getattr(loss, method)(batch(16))[0].backward()
    for group in GROUPS:
        assert _has_grad(getattr(loss, f"{group}_params")) == (group == trained), group


def test_targets_move_only_when_their_updater_steps():
    loss = make_loss()
    critics = GroupSoftUpdate(loss, groups=["qvalue_network", "value_network"], tau=0.5)
    actor = GroupSoftUpdate(loss, groups=["actor_network"], tau=0.5)
    snap = {g: getattr(loss, f"target_{g}_params").clone() for g in GROUPS}
    opt = torch.optim.SGD(loss.parameters(), lr=0.1)
    out = loss(batch(16))
    (
        out["loss_qvalue"]
        + out["loss_value"]
        + out["loss_actor"]
        + loss.behavior_loss(batch(16))[0]
    ).backward()
    opt.step()
    for g in GROUPS:  # an optimiser step moves no target
        assert (getattr(loss, f"target_{g}_params") == snap[g]).all(), g
    critics.step()
    for g in GROUPS:
        moved = not (getattr(loss, f"target_{g}_params") == snap[g]).all()
        assert moved == (g in ("qvalue_network", "value_network")), g
    # the Polyak rule, checked on one tensor
    key = next(k for k, v in loss.qvalue_network_params.items(True, True) if v.requires_grad)
    torch.testing.assert_close(
        loss.target_qvalue_network_params[key],
        0.5 * snap["qvalue_network"][key] + 0.5 * loss.qvalue_network_params[key],
    )
    actor.step()
    assert not (loss.target_actor_network_params == snap["actor_network"]).all()
    assert (loss.target_behavior_network_params == snap["behavior_network"]).all()


def test_group_updater_rejects_unknown_group():
    with pytest.raises(KeyError, match="no target parameters"):
        GroupSoftUpdate(make_loss(), groups=["critic"], tau=0.1)


def test_init_actor_from_behavior_copies_ema():
    loss = make_loss()
    loss.init_actor_from_behavior()
    for key, value in loss.target_behavior_network_params.items(True, True):
        torch.testing.assert_close(loss.actor_network_params[key], value)
        torch.testing.assert_close(loss.target_actor_network_params[key], value)


def test_set_keys_renaming():
    loss = make_loss()
    loss.set_keys(observation="obs", action="act", reward="rew", terminated="term")
    td = batch(8)
    renamed = TensorDict(
        {
            "obs": td["observation"],
            "act": td["action"],
            "next": {
                "obs": td["next", "observation"],
                "rew": td["next", "reward"],
                "term": td["next", "terminated"],
            },
        },
        [8],
    )
    out = loss(renamed)
    assert torch.isfinite(out["loss_qvalue"]) and torch.isfinite(out["loss_actor"])
    assert ("next", "rew") in loss.in_keys


def test_critic_with_another_output_key_needs_set_keys():
    """A critic writing ``"q"`` fails with an error that says which key and how to set it."""
    q = make_qvalue_operator(QEnsemble(OBS, ACT, num_members=K, hidden_sizes=(16,)), out_key="q")
    v = make_value_operator(DiffusionValueEnsemble(OBS, ACT, num_members=K, hidden_sizes=(16,)))
    loss = with_target_updaters(
        BDPOLoss(diffusion_actor(), q, v, diffusion_actor(), eta=0.2, num_samples=3)
    )
    with pytest.raises(KeyError, match=r"wrote no 'state_action_value'.*set_keys"):
        loss(batch(4))
    loss.set_keys(state_action_value="q")
    assert torch.isfinite(loss(batch(4))["loss_qvalue"])


def test_networks_of_different_sizes_are_refused_at_construction():
    q = make_qvalue_operator(QEnsemble(OBS + 1, ACT, num_members=K, hidden_sizes=(16,)))
    v = make_value_operator(DiffusionValueEnsemble(OBS, ACT, num_members=K, hidden_sizes=(16,)))
    with pytest.raises(ValueError, match=r"different sizes: .*qvalue_network \(obs 4, act 2\)"):
        BDPOLoss(diffusion_actor(), q, v, diffusion_actor(), eta=0.2)
    q = make_qvalue_operator(QEnsemble(OBS, ACT, num_members=K, hidden_sizes=(16,)))
    with pytest.raises(ValueError, match=r"behavior_network \(obs 3, act 3\)"):
        BDPOLoss(diffusion_actor(), q, v, diffusion_actor(act_dim=ACT + 1), eta=0.2)


def test_missing_keys_error_names_keys_and_set_keys():
    loss = make_loss()
    td = batch(4).exclude(("next", "reward"))
    with pytest.raises(KeyError, match=r"set_keys") as err:
        loss(td)
    assert "reward" in str(err.value)


@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_batch_shapes(shape):
    out = make_loss()(batch(*shape))
    for key in ("loss_qvalue", "loss_value", "loss_actor", "penalty"):
        assert out[key].shape == () and torch.isfinite(out[key]), key
    assert out["kl_per_step"].shape == (5,)


def test_loss_sampling_stays_stochastic_in_deterministic_mode():
    loss = make_loss()
    td = batch(8)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a = loss.q_target(td)[0]
        b = loss.q_target(td)[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eta": 0.0}, "eta"),
        ({"rho": -1.0}, "rho"),
        ({"num_samples": 0}, "num_samples"),
        ({"backup": "median"}, "backup"),
        ({"penalty_placement": "middle"}, "penalty_placement"),
        ({"aggregation": "max"}, "aggregation"),
        ({"eta": "0.2"}, "eta must be a finite number"),
        ({"eta": float("inf")}, "eta must be a finite number"),
        ({"rho": float("nan")}, "rho"),
        ({"reduction": "median"}, "reduction"),
        (
            {"bandit": True, "penalty_placement": "outside"},
            "penalty_placement='outside' cannot be used with bandit=True",
        ),
    ],
)
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss(**kwargs)


def test_batch_of_another_dtype_is_named():
    loss = make_loss()
    td = batch(4)
    td["observation"] = td["observation"].double()
    with pytest.raises(TypeError, match="observation.*float64 but the networks are torch.float32"):
        loss.qvalue_loss(td)


def test_float64_loss_on_a_float64_batch():
    """The advice of the dtype error works: a loss cast with .double() runs on float64 data
    (float terminal flags of another dtype are accepted too)."""
    loss = make_loss().double()
    td = batch(4).to(torch.float64)
    td["next", "terminated"] = torch.zeros(4, 1, dtype=torch.float32)
    out = loss(td)
    for key in ("loss_qvalue", "loss_value", "loss_actor"):
        assert out[key].dtype == torch.float64 and torch.isfinite(out[key]), key
    assert loss.behavior_loss(td)[0].dtype == torch.float64


def test_same_module_for_actor_and_behavior_is_rejected():
    from _factories import diffusion_actor

    from torchrl_bdpo import BDPOLoss

    actor = diffusion_actor()
    with pytest.raises(ValueError, match="distinct"):
        BDPOLoss(actor, None, None, actor, eta=1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_behavior_loss_matches_hand_computation(reduction):
    loss = make_loss(error_reduction=reduction)
    td = batch(32)
    torch.manual_seed(3)
    value, _ = loss.behavior_loss(td)
    torch.manual_seed(3)
    policy = loss.behavior_network.policy
    n = torch.randint(1, 6, (32,))
    eps = torch.randn(32, 2)
    abar = policy.schedule.alpha_bars[n][:, None]
    x = abar.sqrt() * td["action"] + (1 - abar).sqrt() * eps
    with loss.behavior_network_params.to_module(loss.behavior_network):
        squared = (policy.noise_net(x, n, td["observation"]) - eps) ** 2  # [32, A]
    expected = squared.sum() / (32 * (2 if reduction == "mean" else 1))
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize(
    "key,value,error,match",
    [
        (
            "observation",
            torch.randn(4, 5),
            ValueError,
            r"'observation' must have shape \[\*batch, 3\].*\(4, 5\)",
        ),
        (
            ("next", "observation"),
            torch.randn(4, 2),
            ValueError,
            r"\('next', 'observation'\) must have shape",
        ),
        ("action", torch.rand(4, 3) - 0.5, ValueError, r"'action' must have shape \[\*batch, 2\]"),
        (
            ("next", "reward"),
            torch.randn(4, 2),
            ValueError,
            r"'reward'\) must hold one value per row.*\[4, 2\]",
        ),
        ("action", torch.zeros(4, 2, dtype=torch.bool), TypeError, r"'action' is torch.bool"),
        (
            "action",
            torch.zeros(4, 2, dtype=torch.bfloat16),
            TypeError,
            r"'action' is torch.bfloat16",
        ),
        (
            ("next", "terminated"),
            torch.full((4, 1), 2.0),
            ValueError,
            r"'terminated'\) must hold 0/1",
        ),
        (
            "action",
            torch.full((4, 2), 1.5),
            ValueError,
            r"'action' has values outside the action box",
        ),
    ],
)
def test_bad_inputs_are_named(key, value, error, match):
    loss = make_loss()
    td = batch(4)
    td.set(key, value)
    with pytest.raises(error, match=match):
        loss(td)


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty"):
        make_loss()(batch(0))


def test_value_checks_can_be_turned_off():
    loss = make_loss(validate_inputs=False)
    td = batch(4)
    td["action"] = torch.full((4, 2), 1.5)
    assert torch.isfinite(loss(td)["loss_qvalue"])


def _padded(valid: TensorDict, pad: int) -> TensorDict:
    garbage = batch(pad)
    garbage["next", "reward"] = torch.full((pad, 1), 1e6)
    td = torch.cat([valid, garbage], 0)
    td["collector", "mask"] = torch.arange(len(td)).unsqueeze(-1) < len(valid)
    return td


def test_loss_mask_rows_do_not_count():
    """TorchRL's ("collector", "mask"): padded rows change neither the losses nor the diagnostics.
    A bandit Q target (the reward) has no random draws, so the masked loss must equal the loss of
    the valid rows alone exactly."""
    loss = make_loss(bandit=True)
    valid = batch(8)
    padded = _padded(valid, 4)
    expected, meta_valid = loss.qvalue_loss(valid)
    masked, meta_masked = loss.qvalue_loss(padded)
    torch.testing.assert_close(masked, expected)
    for key in ("q_mean", "q_std", "target_q"):
        torch.testing.assert_close(meta_masked[key], meta_valid[key])
    loss.loss_mask_key = None  # masking off: the garbage counts
    assert loss.qvalue_loss(padded)[0] > 1e9


def test_loss_mask_in_every_loss_and_reduction_none():
    loss = make_loss(reduction="none")
    padded = _padded(batch(6), 3)
    out = loss(padded)
    for key in ("loss_qvalue", "loss_value", "loss_actor"):
        assert out[key].shape == (9,), key
        assert (out[key][6:] == 0).all() and (out[key][:6] != 0).all(), key
    assert loss.behavior_loss(padded)[0].shape == (9,)
    mean_loss = make_loss(reduction="mean")
    mean_loss.load_state_dict(loss.state_dict())
    torch.manual_seed(0)
    per_row = loss.actor_loss(padded)[0]
    torch.manual_seed(0)
    torch.testing.assert_close(mean_loss.actor_loss(padded)[0], per_row[:6].mean())
    target_q = loss.qvalue_loss(padded)[1]["target_q"]
    assert target_q.abs() < 1e5  # the padded rows' 1e6 rewards are not in the diagnostics


def test_reset_parameters_recursive_redraws_every_critic_tensor():
    loss = make_loss()
    for group in ("qvalue_network", "value_network"):
        params = getattr(loss, f"{group}_params")
        with torch.no_grad():
            for p in params.values(True, True):
                p.add_(1.0)
    before = {g: getattr(loss, f"{g}_params").clone() for g in ("qvalue_network", "value_network")}
    loss.reset_parameters_recursive()
    for group, snap in before.items():
        for key, p in getattr(loss, f"{group}_params").items(True, True):
            assert not torch.equal(p, snap[key]), (group, key)
    with loss.qvalue_network_params.to_module(loss.qvalue_network):
        layer = loss.qvalue_network.module.mlp.layers[0]
        w = layer.weight[0]  # re-drawn with the authors' init: orthogonal, gain sqrt(2)
        torch.testing.assert_close(w @ w.T, 2 * torch.eye(w.shape[0]), atol=1e-5, rtol=0)
        assert (layer.bias == 0).all()


def test_discount_is_set_the_torchrl_way():
    from torchrl_bdpo import BDPOLoss

    with pytest.raises(TypeError, match=r"make_value_estimator\(gamma=0.9\)"):
        BDPOLoss(None, None, None, None, eta=0.2, gamma=0.9)
    loss = make_loss()
    assert loss.gamma == 0.99  # TorchRL's default
    assert loss.make_value_estimator(gamma=0.9) is loss and loss.gamma == 0.9
    with pytest.raises(ValueError, match="gamma"):
        loss.make_value_estimator(gamma=1.5)
    with pytest.raises(NotImplementedError, match="gamma"):
        loss.make_value_estimator(lmbda=0.9)
    # a one-element tensor discount, as TorchRL losses accept it
    assert loss.make_value_estimator(gamma=torch.tensor(0.95)).gamma == pytest.approx(0.95)
    assert isinstance(loss.gamma, float)
    # no TorchRL value estimator: the attribute is None (hasattr works), not an error
    assert loss.value_estimator is None and hasattr(loss, "value_estimator")


def test_loss_config_without_a_discount_keeps_the_default():
    from _factories import diffusion_actor

    from torchrl_bdpo import (
        BDPOLossConfig,
        DiffusionValueEnsemble,
        QEnsemble,
        make_qvalue_operator,
        make_value_operator,
    )

    loss = BDPOLossConfig(eta=0.2, gamma=None).build(
        diffusion_actor(),
        make_qvalue_operator(QEnsemble(OBS, ACT, num_members=2, hidden_sizes=(8,))),
        make_value_operator(DiffusionValueEnsemble(OBS, ACT, num_members=2, hidden_sizes=(8,))),
        diffusion_actor(),
    )
    assert loss.gamma == 0.99


def test_actions_outside_the_box_are_accepted_without_sampler_clipping():
    """2D tasks: no sampler clipping, so the box is not part of the model and wide actions train."""
    loss = make_loss(clip=False)
    td = batch(4)
    td["action"] = torch.full((4, 2), 3.0)
    assert torch.isfinite(loss(td)["loss_actor"])
