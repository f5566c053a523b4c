"""Small BDPO components for tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from torchrl_bdpo import (
    BDPODiffusionActor,
    BDPOLoss,
    DiffusionSampler,
    DiffusionValueEnsemble,
    GroupSoftUpdate,
    NoiseNet,
    QEnsemble,
    VPSchedule,
    make_qvalue_operator,
    make_value_operator,
)

OBS, ACT, K = 3, 2, 4


def diffusion_actor(
    num_steps: int = 5,
    clip: bool = True,
    obs_dim: int = OBS,
    act_dim: int = ACT,
    *,
    hidden_sizes: tuple[int, ...] = (16, 16),
    embed_dim: int = 8,
):
    return BDPODiffusionActor(
        DiffusionSampler(
            NoiseNet(
                obs_dim,
                act_dim,
                hidden_sizes=hidden_sizes,
                embed_dim=embed_dim,
                step_hidden=(embed_dim,),
            ),
            VPSchedule(num_steps),
            clip_sample=clip,
        )
    )


def make_loss(
    num_steps: int = 5, clip: bool = True, *, updaters: bool = True, **kwargs
) -> BDPOLoss:
    kwargs.setdefault("eta", 0.2)
    kwargs.setdefault("num_samples", 3)
    q = make_qvalue_operator(QEnsemble(OBS, ACT, num_members=K, hidden_sizes=(16,)))
    v = make_value_operator(
        DiffusionValueEnsemble(
            OBS, ACT, num_members=K, hidden_sizes=(16,), embed_dim=8, step_hidden=(8, 8)
        )
    )
    gamma = kwargs.pop("gamma", None)
    loss = BDPOLoss(
        diffusion_actor(num_steps, clip), q, v, diffusion_actor(num_steps, clip), **kwargs
    )
    if updaters:
        loss = with_target_updaters(loss)
    return loss if gamma is None else loss.make_value_estimator(gamma=gamma)


def with_target_updaters(loss: BDPOLoss, tau: float = 0.005) -> BDPOLoss:
    """``loss`` after building its EMA updaters, in the order a user does (loss, then updaters).

    Building them copies each group's parameters into its (already equal) target and tells the
    loss that its targets are updated, so reading them raises no "No target network updater"
    warning. Tests that step targets build their own updaters.
    """
    for groups in (("qvalue_network", "value_network"), ("actor_network",), ("behavior_network",)):
        GroupSoftUpdate(loss, groups=groups, tau=tau)
    return loss


def batch(*shape: int, terminated: bool = False) -> TensorDict:
    shape = tuple(shape)
    return TensorDict(
        {
            "observation": torch.randn(*shape, OBS),
            "action": torch.rand(*shape, ACT) * 2 - 1,
            "next": {
                "observation": torch.randn(*shape, OBS),
                "reward": torch.randn(*shape, 1),
                "terminated": torch.full((*shape, 1), terminated),
                "done": torch.full((*shape, 1), terminated),
            },
        },
        batch_size=shape,
    )
