"""A Hydra-ready structured config holding every keyword of :class:`~torchrl_bdpo.BDPOLoss`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torchrl.trainers.algorithms.configs.objectives import LossConfig


@dataclass
class BDPOLossConfig(LossConfig):
    """Every keyword of :class:`~torchrl_bdpo.BDPOLoss`, with its defaults (TorchRL's ``*LossConfig``
    convention: the networks are given at instantiation, ``_target_`` names the class).

    ``gamma`` is not a keyword of the loss: :meth:`build` passes it to
    :meth:`~torchrl_bdpo.BDPOLoss.make_value_estimator`, the TorchRL way.

    Examples:
        >>> from torchrl_bdpo import (NoiseNet, VPSchedule, DiffusionSampler, BDPODiffusionActor,
        ...     QEnsemble, DiffusionValueEnsemble, make_qvalue_operator, make_value_operator)
        >>> def diffusion():
        ...     return BDPODiffusionActor(DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> cfg = BDPOLossConfig(eta=0.2, rho=2.0, gamma=0.99, num_samples=3)
        >>> loss = cfg.build(
        ...     diffusion(),
        ...     make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(16,))),
        ...     make_value_operator(DiffusionValueEnsemble(3, 2, num_members=4, hidden_sizes=(16,))),
        ...     diffusion())
        >>> loss.eta, loss.gamma, loss.num_samples
        (0.2, 0.99, 3)
    """

    actor_network: Any = None
    qvalue_network: Any = None
    value_network: Any = None
    behavior_network: Any = None
    eta: float = 1.0
    rho: float = 1.0
    num_samples: int = 10
    backup: str = "mean"
    penalty_placement: str = "inside"
    aggregation: str = "lcb"
    bandit: bool = False
    stratified_steps: bool = False
    error_reduction: str = "mean"
    reduction: str = "mean"
    validate_inputs: bool = True
    gamma: float | None = 0.99
    _target_: str = "torchrl_bdpo.objectives.config.build_bdpo_loss"

    def __post_init__(self) -> None:
        """Nothing to derive: every field is a keyword of the loss (or its discount)."""

    def build(self, actor_network, qvalue_network, value_network, behavior_network):
        """The loss with these settings over the given networks."""
        kwargs = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not (f.name.endswith("_network") or f.name.startswith("_"))
        }
        return build_bdpo_loss(
            actor_network, qvalue_network, value_network, behavior_network, **kwargs
        )


def build_bdpo_loss(
    actor_network,
    qvalue_network,
    value_network,
    behavior_network,
    *,
    gamma: float | None = 0.99,
    **kwargs,
):
    """``BDPOLoss(...).make_value_estimator(gamma=gamma)``: the ``_target_`` of
    :class:`BDPOLossConfig` (``hydra.utils.instantiate(cfg, actor_network=..., ...)``);
    ``gamma=None`` leaves the loss's default discount, as TorchRL's loss configs do."""
    from torchrl_bdpo.objectives.bdpo import BDPOLoss

    loss = BDPOLoss(actor_network, qvalue_network, value_network, behavior_network, **kwargs)
    return loss if gamma is None else loss.make_value_estimator(gamma=gamma)
