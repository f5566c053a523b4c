"""``BDPOLoss`` through the checks TorchRL's own ``test/objectives`` apply to every loss.

Reset of every parameter group, an input TensorDict left unchanged, state-dict round trips,
the keyword call of ``tensordict.nn.dispatch``, ``set_keys``, TorchRL's reductions and devices.
The math is tested elsewhere (``test_kl.py``, ``test_targets.py``, ``test_parity_flowrl.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _factories import ACT, OBS, batch, make_loss
from tensordict import TensorDict, assert_allclose_td

from torchrl_bdpo import GroupSoftUpdate

#: the recipe's settings (scripts/export_upstream.py points this at sota-implementations/bdpo)
RECIPE_CONFIG = Path(__file__).parents[1] / "recipes" / "config" / "config.yaml"
GROUPS = ("actor_network", "behavior_network", "qvalue_network", "value_network")
LOSSES = ("loss_qvalue", "loss_value", "loss_actor")


def devices() -> list[torch.device]:
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda:0"))
    return out


def bdpo(device: torch.device | None = None, **kwargs):
    loss = make_loss(**kwargs).to(device or "cpu")
    for group in GROUPS:  # one EMA updater per group, as the recipe builds them
        GroupSoftUpdate(loss, groups=[group], tau=0.005)
    return loss


class TestBDPO:
    seed = 0

    def test_reset_parameters_recursive(self):
        """Every online and target weight of every group is re-drawn (TorchRL's reset test);
        constant buffers (the schedule, the action box) are not parameters and stay."""
        loss = bdpo()
        before = {}
        for group in GROUPS:
            weights = [
                k for k, v in getattr(loss, f"{group}_params").items(True, True) if v.requires_grad
            ]
            assert weights, group
            for prefix in ("", "target_"):
                td = getattr(loss, f"{prefix}{group}_params")
                with torch.no_grad():
                    for key in weights:
                        td.get(key).add_(1000.0)
                        before[(prefix + group, key)] = td.get(key).clone()
        loss.reset_parameters_recursive()
        for (name, key), old in before.items():
            assert (getattr(loss, f"{name}_params").get(key) != old).any(), (name, key)

    @pytest.mark.parametrize("device", devices())
    def test_bdpo(self, device):
        torch.manual_seed(self.seed)
        loss = bdpo(device)
        td = batch(16).to(device)
        before = td.clone()
        out = loss(td)
        assert_allclose_td(td, before)  # the input is left as it was
        assert set(out.keys()) == set(loss.out_keys)
        for key in LOSSES:
            assert out[key].shape == () and torch.isfinite(out[key]) and out[key].device == device
        sum(out[key] for key in LOSSES).backward()
        trained = {"qvalue_network", "value_network", "actor_network"}
        for group in GROUPS:
            grads = [p.grad for p in getattr(loss, f"{group}_params").values(True, True)]
            assert any(g is not None and g.abs().sum() > 0 for g in grads) == (group in trained)
            for value in getattr(loss, f"target_{group}_params").values(True, True):
                assert value.grad is None

    @pytest.mark.parametrize("device", devices())
    def test_bdpo_state_dict(self, device):
        loss, other = bdpo(device), bdpo(device)
        other.load_state_dict(loss.state_dict())
        td = batch(8).to(device)
        torch.manual_seed(self.seed)
        expected = loss(td)
        torch.manual_seed(self.seed)
        assert_allclose_td(other(td), expected)

    def test_bdpo_notensordict(self):
        """The keyword call of ``tensordict.nn.dispatch``: flat names, a tuple of out_keys back."""
        loss = bdpo()
        td = batch(8)
        kwargs = {
            "observation": td["observation"],
            "action": td["action"],
            "next_observation": td["next", "observation"],
            "next_reward": td["next", "reward"],
            "next_terminated": td["next", "terminated"],
        }
        torch.manual_seed(self.seed)
        values = loss(**kwargs)
        torch.manual_seed(self.seed)
        out = loss(td)
        assert len(values) == len(loss.out_keys)
        for key, value in zip(loss.out_keys, values):
            torch.testing.assert_close(value, out[key], msg=key)
        loss.select_out_keys("loss_qvalue", "loss_actor")
        torch.manual_seed(self.seed)
        loss_q, loss_a = loss(**kwargs)
        torch.testing.assert_close(loss_q, out["loss_qvalue"])
        torch.testing.assert_close(loss_a, out["loss_actor"])

    @pytest.mark.parametrize("key", ["observation", "action", "reward", "terminated"])
    def test_bdpo_tensordict_keys(self, key):
        loss = bdpo()
        default = loss.tensor_keys
        assert (default.observation, default.action, default.reward, default.terminated) == (
            "observation",
            "action",
            "reward",
            "terminated",
        )
        td = batch(8)
        name = f"{key}2"
        if key in ("reward", "terminated"):
            td["next", name] = td["next"].pop(key)
        elif key == "observation":
            td[name] = td.pop("observation")
            td["next", name] = td["next"].pop("observation")
        else:
            td[name] = td.pop(key)
        with pytest.raises(KeyError, match="set_keys"):
            loss(td)
        loss.set_keys(**{key: name})
        assert getattr(loss.tensor_keys, key) == name
        assert all(torch.isfinite(loss(td)[k]) for k in LOSSES)

    @pytest.mark.parametrize("reduction", [None, "none", "mean", "sum"])
    def test_bdpo_reduction(self, reduction):
        kwargs = {} if reduction is None else {"reduction": reduction}
        loss = bdpo(**kwargs)
        td = batch(2, 3)
        out = loss(td)
        for key in LOSSES:
            assert out[key].shape == (td.shape if reduction == "none" else ()), key
        assert loss.behavior_loss(td)[0].shape == (td.shape if reduction == "none" else ())
        if reduction == "sum":
            mean = bdpo(reduction="mean")
            mean.load_state_dict(loss.state_dict())
            torch.manual_seed(self.seed)
            total = loss.actor_loss(td)[0]
            torch.manual_seed(self.seed)
            torch.testing.assert_close(total, mean.actor_loss(td)[0] * td.numel())

    def test_bdpo_batch_layouts(self):
        """TensorDicts without a batch size, and with one, give the same losses."""
        loss = bdpo()
        td = batch(6)
        flat = TensorDict(td.to_dict())  # batch_size []
        torch.manual_seed(self.seed)
        expected = loss(td)
        torch.manual_seed(self.seed)
        out = loss(flat)
        for key in LOSSES:
            torch.testing.assert_close(out[key], expected[key], msg=key)
        assert (OBS, ACT) == (td["observation"].shape[-1], td["action"].shape[-1])


def test_group_updaters_leave_the_missing_updater_warning_to_the_other_groups():
    """TorchRL losses warn while a target group has no updater; one group's updater must not
    silence the warning for the others."""
    import warnings

    loss = make_loss(updaters=False)
    assert not any(loss._has_update_associated.values())
    td = batch(4)
    GroupSoftUpdate(loss, groups=["qvalue_network", "value_network"], eps=0.995)
    with pytest.warns(UserWarning, match="target network"):
        loss(td)
    for group in ("actor_network", "behavior_network"):
        GroupSoftUpdate(loss, groups=[group], tau=0.005)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loss(td)  # every group has its updater now


def test_group_updater_takes_eps_or_tau_like_soft_update():
    loss = make_loss()
    by_eps = GroupSoftUpdate(loss, groups=["value_network"], eps=0.995)
    by_tau = GroupSoftUpdate(loss, groups=["value_network"], tau=0.005)
    assert by_eps.eps == pytest.approx(by_tau.eps) == pytest.approx(0.995)
    for bad in ({}, {"tau": 0.1, "eps": 0.9}):
        with pytest.raises(ValueError, match="one of tau and eps"):
            GroupSoftUpdate(loss, groups=["value_network"], **bad)


def test_loss_config_holds_every_keyword_and_instantiates_with_hydra():
    """BDPOLossConfig mirrors BDPOLoss's keywords (TorchRL's *LossConfig convention) and the recipe's
    loss section; hydra.utils.instantiate builds the loss with its discount."""
    import dataclasses
    import inspect

    from _factories import diffusion_actor
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from torchrl_bdpo import (
        BDPOLoss,
        BDPOLossConfig,
        DiffusionValueEnsemble,
        QEnsemble,
        make_qvalue_operator,
        make_value_operator,
    )

    keywords = {
        name
        for name, p in inspect.signature(BDPOLoss.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    fields = {f.name for f in dataclasses.fields(BDPOLossConfig)}
    settings = {f for f in fields if not f.endswith("_network") and not f.startswith("_")}
    assert settings == keywords  # gamma: a keyword that the config hands to make_value_estimator
    for name in keywords - {"gamma"}:
        default = inspect.signature(BDPOLoss.__init__).parameters[name].default
        if default is not inspect.Parameter.empty:
            assert getattr(BDPOLossConfig(), name) == default, name
    recipe = OmegaConf.load(RECIPE_CONFIG)
    assert set(recipe.loss) <= settings
    cfg = OmegaConf.structured(BDPOLossConfig(eta=0.3, gamma=0.9, num_samples=2))
    loss = instantiate(
        cfg,
        actor_network=diffusion_actor(),
        qvalue_network=make_qvalue_operator(QEnsemble(OBS, ACT, num_members=2, hidden_sizes=(8,))),
        value_network=make_value_operator(
            DiffusionValueEnsemble(
                OBS, ACT, num_members=2, hidden_sizes=(8,), embed_dim=8, step_hidden=(8, 8)
            )
        ),
        behavior_network=diffusion_actor(),
    )
    assert isinstance(loss, BDPOLoss) and (loss.eta, loss.gamma, loss.num_samples) == (0.3, 0.9, 2)
