"""The diffusion actor as a TorchRL policy: rollouts, collectors, modes, Q selection."""

from __future__ import annotations

import pytest
import torch
from _factories import diffusion_actor, make_loss
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_bdpo import (
    BDPODiffusionActor,
    DiffusionSampler,
    NoiseNet,
    QEnsemble,
    QSelectionPolicy,
    VPSchedule,
    make_qvalue_operator,
)


def _hopper_actor():
    return BDPODiffusionActor(
        DiffusionSampler(NoiseNet(11, 3, hidden_sizes=(32, 32)), VPSchedule(5))
    )


@pytest.fixture(scope="module")
def hopper_env():
    from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv

    env = TransformedEnv(GymEnv("Hopper-v5"), DoubleToFloat())
    env.set_seed(0)
    yield env
    env.close()


def test_rollout_in_hopper(hopper_env):
    actor = _hopper_actor()
    with torch.no_grad():
        td = hopper_env.rollout(20, actor, break_when_any_done=False)
    assert td["action"].shape == (20, 3)
    assert (td["action"].abs() <= 1.0 + 1e-6).all()
    assert td["next", "reward"].shape == (20, 1)


def test_q_selection_rollout_in_hopper(hopper_env):
    actor = _hopper_actor()
    q = make_qvalue_operator(QEnsemble(11, 3, num_members=3, hidden_sizes=(16,)))
    with torch.no_grad():
        td = hopper_env.rollout(
            10, QSelectionPolicy(actor, q, num_candidates=10), break_when_any_done=False
        )
    assert td["action"].shape == (10, 3)


def test_collector(hopper_env):
    from torchrl.collectors import Collector
    from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv

    collector = Collector(
        lambda: TransformedEnv(GymEnv("Hopper-v5"), DoubleToFloat()),
        _hopper_actor(),
        frames_per_batch=16,
        total_frames=32,
    )
    sizes = [data.numel() for data in collector]
    collector.shutdown()
    assert sizes == [16, 16]


def test_modes():
    actor = diffusion_actor()
    td = TensorDict({"observation": torch.randn(5, 3)}, [5])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a = actor(td.clone())["action"]
        b = actor(td.clone())["action"]
    torch.testing.assert_close(a, b)
    with set_exploration_type(ExplorationType.RANDOM):
        c = actor(td.clone())["action"]
        d = actor(td.clone())["action"]
    assert not torch.allclose(c, d)


def test_clipping_switch():
    torch.manual_seed(0)
    clipped = diffusion_actor(clip=True)
    free = diffusion_actor(clip=False)
    free.load_state_dict(clipped.state_dict())
    obs = torch.randn(512, 3) * 5
    assert clipped.policy.sample(obs).abs().max() <= 1.0 + 1e-6
    assert free.policy.sample(obs).abs().max() > 1.0


def test_chain_and_single_step_outputs():
    actor = diffusion_actor(num_steps=5)
    obs = torch.randn(4, 3)
    chain = actor.sample_chain(obs)
    assert chain.states.shape == (6, 4, 2) and chain.noise_preds.shape == (5, 4, 2)
    torch.testing.assert_close(chain.states[0], chain.action)
    # one reverse step from (x_1, 1) is deterministic and reproduces x_0 from the chain
    x0, eps = actor.policy.reverse_step(obs, chain.states[1], torch.ones(4, dtype=torch.long))
    torch.testing.assert_close(x0, chain.states[0])
    torch.testing.assert_close(eps, chain.noise_preds[0])


def test_log_prob_is_not_defined():
    actor = diffusion_actor()
    dist = actor.get_dist(TensorDict({"observation": torch.randn(2, 3)}, [2]))
    with pytest.raises(NotImplementedError, match="intractable"):
        dist.log_prob(torch.zeros(2, 2))
    assert dist.rsample().shape == (2, 2)


def test_q_selection_picks_highest_mean_q():
    class Scripted(torch.nn.Module):
        num_members = 2

        def forward(self, obs, action):  # higher for larger first coordinate
            return torch.stack([action[..., 0], action[..., 0] + 1], -1)

    actor = diffusion_actor(clip=False)
    policy = QSelectionPolicy(actor, make_qvalue_operator(Scripted()), num_candidates=50)
    torch.manual_seed(0)
    picked = policy.select(torch.zeros(200, 3))
    torch.manual_seed(0)
    plain = actor.policy.sample(torch.zeros(200, 3))
    assert picked[:, 0].mean() > plain[:, 0].mean() + 0.5


def test_q_selection_with_target_params():
    loss = make_loss()
    policy = QSelectionPolicy(
        loss.actor_network,
        loss.qvalue_network,
        4,
        actor_params=loss.target_actor_network_params,
        qvalue_params=loss.target_qvalue_network_params,
    )
    assert policy.select(torch.randn(3, 3)).shape == (3, 2)


def _attr(module, key):
    for part in key:
        module = getattr(module, part)
    return module


def test_q_selection_binds_the_given_params_and_sees_in_place_updates():
    loss = make_loss()
    policy = QSelectionPolicy(
        loss.actor_network,
        loss.qvalue_network,
        4,
        actor_params=loss.target_actor_network_params,
        qvalue_params=loss.target_qvalue_network_params,
    )
    for bound, params in (
        (policy._qvalue, loss.target_qvalue_network_params),
        (policy._actor, loss.target_actor_network_params),
    ):
        for key, value in params.items(True, True):
            # shared storage: EMA steps on the targets show through
            assert _attr(bound, key).data_ptr() == value.data_ptr(), key
    # the loss's own (online) modules keep their parameters
    for key, value in loss.qvalue_network_params.items(True, True):
        assert _attr(loss.qvalue_network, key).data_ptr() == value.data_ptr(), key


def test_selection_policy_from_a_loss_binds_the_ema_parameters():
    from _factories import make_loss

    loss = make_loss()
    actor = QSelectionPolicy.from_loss(loss, 4)
    behavior = QSelectionPolicy.from_loss(loss, 4, model="behavior")
    obs = torch.randn(3, 3)
    with torch.no_grad():  # an EMA step on the loss is seen by the policy (shared storage)
        for value in loss.target_actor_network_params.values(True, True):
            value.zero_()
    torch.manual_seed(0)
    a = actor.select(obs)
    torch.manual_seed(0)
    b = behavior.select(obs)
    assert a.shape == b.shape == (3, 2) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="model"):
        QSelectionPolicy.from_loss(loss, 4, model="critic")


@pytest.mark.parametrize("kind", [ExplorationType.MEAN, ExplorationType.MODE])
def test_mean_and_mode_are_refused_not_averaged(kind, hopper_env):
    """tensordict's MEAN fallback would average 1000 sampled chains: refused instead."""
    actor = diffusion_actor()
    td = TensorDict({"observation": torch.randn(5, 3)}, [5])
    calls = []
    original = actor.policy.sample
    actor.policy.sample = lambda *a, **k: calls.append(1) or original(*a, **k)
    with set_exploration_type(kind), pytest.raises(NotImplementedError, match=kind.name):
        actor(td)
    assert calls == [] and "action" not in td.keys()
    with set_exploration_type(kind), pytest.raises(NotImplementedError, match="RANDOM"):
        hopper_env.rollout(3, _hopper_actor())
    with pytest.raises(NotImplementedError, match=kind.name):
        BDPODiffusionActor(actor.policy, default_interaction_type=kind)
    # the supported interaction types still run
    for ok in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
        with set_exploration_type(ok):
            assert actor(td.clone())["action"].shape == (5, 2)


def test_q_selection_follows_the_exploration_type():
    """TorchRL's evaluation idiom: DETERMINISTIC gives noise-free chains, MEAN is refused."""
    actor = diffusion_actor()
    q = make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(16,)))
    policy = QSelectionPolicy(actor, q, num_candidates=4)
    td = TensorDict({"observation": torch.randn(6, 3)}, [6])
    noise_free = actor.policy.sample(td["observation"], deterministic=True)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        torch.testing.assert_close(policy(td.clone())["action"], noise_free)
    # no type set: the constructor's choice (stochastic by default)
    assert not torch.allclose(policy(td.clone())["action"], noise_free)
    quiet = QSelectionPolicy(actor, q, num_candidates=4, stochastic=False)
    torch.testing.assert_close(quiet(td.clone())["action"], noise_free)
    with set_exploration_type(ExplorationType.RANDOM):
        assert not torch.allclose(quiet(td.clone())["action"], noise_free)
    with (
        set_exploration_type(ExplorationType.MEAN),
        pytest.raises(NotImplementedError, match="MEAN"),
    ):
        policy(td.clone())


def test_action_spec_must_match_the_sampler_box():
    from torchrl.data import Bounded

    policy = DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(8,)), VPSchedule(5))
    with pytest.raises(ValueError, match=r"not the sampler's \(low \[-1.0, -1.0\]"):
        BDPODiffusionActor(policy, spec=Bounded(-2.0, 2.0, shape=(2,)))
    actor = BDPODiffusionActor(policy, spec=Bounded(-1.0, 1.0, shape=(2,)))
    assert actor.spec["action"].space.high.tolist() == [1.0, 1.0]
    wide = DiffusionSampler(
        NoiseNet(3, 2, hidden_sizes=(8,)), VPSchedule(5), action_low=-2.0, action_high=2.0
    )
    BDPODiffusionActor(wide, spec=Bounded(-2.0, 2.0, shape=(2,)))
    # a sampler that does not clip leaves a bounded spec to the user
    loose = DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(8,)), VPSchedule(5), clip_sample=False)
    BDPODiffusionActor(loose, spec=Bounded(-2.0, 2.0, shape=(2,)))
