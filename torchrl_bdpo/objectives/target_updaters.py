"""Polyak (EMA) target updaters restricted to named parameter groups of a loss."""

from __future__ import annotations

from collections.abc import Sequence

from torchrl.objectives import LossModule, SoftUpdate


class GroupSoftUpdate(SoftUpdate):
    """A :class:`~torchrl.objectives.SoftUpdate` over some of a loss's target groups.

    TorchRL's ``SoftUpdate`` moves every ``target_*_params`` of a loss with one
    rate. BDPO has several EMA groups with their own rates and periods (critics
    every step, actor on actor steps, behavior on BC steps): build one updater per
    group, once, right after the loss (each copies source -> target for its own
    groups at construction, like ``SoftUpdate``).

    Args:
        loss_module (LossModule): the loss holding ``<group>_params`` and
            ``target_<group>_params``.
        groups (sequence of str): the module names, e.g. ``("qvalue_network", "value_network")``.
        tau (float): the Polyak rate: ``target <- (1 - tau) target + tau source``.
        eps (float): or, as for ``SoftUpdate``, ``1 - tau`` (give one of the two).

    Only the named groups count as updated: the loss still warns, as TorchRL losses do,
    while another of its target groups has no updater.

    Examples:
        >>> from torchrl_bdpo import (BDPOLoss, NoiseNet, VPSchedule, DiffusionSampler,
        ...     BDPODiffusionActor, QEnsemble, DiffusionValueEnsemble, make_qvalue_operator,
        ...     make_value_operator)
        >>> def diffusion():
        ...     return BDPODiffusionActor(DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> loss = BDPOLoss(
        ...     diffusion(),
        ...     make_qvalue_operator(QEnsemble(3, 2, num_members=2, hidden_sizes=(8,))),
        ...     make_value_operator(DiffusionValueEnsemble(3, 2, num_members=2, hidden_sizes=(8,))),
        ...     diffusion(), eta=0.2)
        >>> behavior_ema = GroupSoftUpdate(loss, groups=["behavior_network"], tau=0.005)
        >>> behavior_ema.step()
    """

    def __init__(
        self,
        loss_module: LossModule,
        *,
        groups: Sequence[str],
        tau: float | None = None,
        eps: float | None = None,
    ) -> None:
        if isinstance(groups, str):
            groups = [groups]
        self.groups = tuple(groups)
        if not self.groups:
            raise ValueError("GroupSoftUpdate needs at least one group.")
        if (tau is None) == (eps is None):
            raise ValueError(f"give one of tau and eps = 1 - tau (got tau={tau}, eps={eps}).")
        if tau is None:
            tau = 1.0 - eps
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}.")
        # SoftUpdate marks every target group of the loss as updated; only ours are
        flags = getattr(loss_module, "_has_update_associated", {})
        before = dict(flags)
        try:
            super().__init__(loss_module, tau=tau)
        finally:
            flags.update(before)
        for group in self.groups:
            if group in flags:
                flags[group] = True

    def init_(self) -> None:
        wanted = [f"target_{g}_params" for g in self.groups]
        missing = [w for w in wanted if w not in self._target_names]
        if missing:
            raise KeyError(
                f"The loss has no target parameters for {missing}; it has {self._target_names}."
            )
        self._target_names = wanted
        self._source_names = [name[len("target_") :] for name in wanted]
        super().init_()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(groups={self.groups}, tau={1 - self.eps})"
