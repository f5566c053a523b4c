"""Behavior-diffusion pre-training: the epsilon-prediction MSE as a TorchRL LossModule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torchrl_bdpo.modules.actor import DiffusionActor, DiffusionPolicy


def noise_prediction_error(
    policy: DiffusionPolicy,
    obs: torch.Tensor,
    action: torch.Tensor,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """``(eps(x_n, n, s) - eps)^2`` reduced over action dims at a random step per sample.

    ``n ~ U{1..N}``, ``x_n = sqrt(abar_n) a + sqrt(1 - abar_n) eps``.

    Args:
        obs (Tensor): ``[B, O]``; action (Tensor): ``[B, A]``.
        reduction ("mean" | "sum"): over the action dims: ``"mean"`` (the authors' code)
            or ``"sum"`` (``||.||^2``, the paper's notation; ``A`` times larger).

    Returns:
        Tensor ``[B]``.
    """
    n = policy.schedule.sample_steps(action.shape[:-1], device=action.device)
    noise = torch.randn_like(action)
    x_n = policy.schedule.q_sample(action, n, noise)
    # eager: the step MLP runs on the N + 1 possible steps, not on every row (inductor
    # fuses the per-row MLP better than the gather's scatter-add backward)
    table = (
        None
        if torch.compiler.is_compiling()
        else policy.step_feature_table(action.device, action.dtype)
    )
    features = None if table is None else table[n]
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' (got {reduction!r}).")
    err = (policy.predict_noise(obs, x_n, n, step_features=features) - noise).pow(2)
    return err.mean(-1) if reduction == "mean" else err.sum(-1)


class DiffusionBehaviorLoss(LossModule):
    """Behavior cloning of a diffusion model (DDPM's epsilon-prediction loss).

    Holds target (EMA) parameters, updated with e.g. ``SoftUpdate(loss, tau=0.005)``;
    BDPO's KL uses the EMA behavior model.

    Args:
        behavior_network (DiffusionActor): the behavior diffusion model.

    Keyword Args:
        delay_behavior (bool): keep target (EMA) parameters. Defaults to ``True``.
        element_reduction ("mean" | "sum"): the squared error's reduction over the
            action dimensions (see :func:`noise_prediction_error`). Defaults to ``"mean"``
            (the authors' code).

    Returns (``forward``):
        TensorDict with ``loss_behavior`` (scalar).

    Examples:
        >>> from torchrl_bdpo import NoiseNet, VPSchedule, DiffusionPolicy, DiffusionActor
        >>> actor = DiffusionActor(DiffusionPolicy(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> loss = DiffusionBehaviorLoss(actor)
        >>> from torchrl_bdpo import GroupSoftUpdate
        >>> ema = GroupSoftUpdate(loss, groups=["behavior_network"], tau=0.005)  # its EMA target
        >>> td = TensorDict({"observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1}, [8])
        >>> loss(td)["loss_behavior"].shape
        torch.Size([])
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable keys (``set_keys``).

        Attributes:
            observation (NestedKey): the state. Defaults to ``"observation"``.
            action (NestedKey): the dataset action. Defaults to ``"action"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    out_keys = ["loss_behavior"]

    behavior_network: DiffusionActor
    behavior_network_params: TensorDictParams
    target_behavior_network_params: TensorDictParams

    def __init__(
        self,
        behavior_network: DiffusionActor,
        *,
        delay_behavior: bool = True,
        element_reduction: Literal["mean", "sum"] = "mean",
    ) -> None:
        if element_reduction not in ("mean", "sum"):
            raise ValueError(
                f"element_reduction must be 'mean' or 'sum' (got {element_reduction!r})."
            )
        super().__init__()
        self.element_reduction = element_reduction
        self.convert_to_functional(
            behavior_network, "behavior_network", create_target_params=delay_behavior
        )

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self) -> list[NestedKey]:
        return [self.tensor_keys.observation, self.tensor_keys.action]

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = tensordict.get(self.tensor_keys.observation)
        act = tensordict.get(self.tensor_keys.action)
        with self.behavior_network_params.to_module(
            self.behavior_network, preserve_module_state=False
        ):
            err = noise_prediction_error(
                self.behavior_network.policy,
                obs.reshape(-1, obs.shape[-1]),
                act.reshape(-1, act.shape[-1]),
                reduction=self.element_reduction,
            )
        return TensorDict({"loss_behavior": err.mean()})
