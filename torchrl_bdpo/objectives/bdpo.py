"""BDPO's loss: pathwise-KL-regularised ensemble critics, diffusion values and a one-step actor loss."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule, dispatch
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torchrl_bdpo.modules.actor import BDPODiffusionActor, call_network
from torchrl_bdpo.objectives.behavior import noise_prediction_error

_BACKUPS = ("mean", "max")
_PENALTY_PLACEMENTS = ("inside", "outside")
_AGGREGATIONS = ("lcb", "mean", "min")
_ERROR_REDUCTIONS = ("mean", "sum")


class BDPOLoss(LossModule):
    r"""Behavior-Regularized Diffusion Policy Optimization (Gao et al., ICML 2025).

    With the per-step KL between two diffusion reverse kernels of equal variance
    :math:`\ell_n(s, x_n) = w_n \|\epsilon^\pi(x_n, n, s) - \epsilon^\nu(x_n, n, s)\|^2`
    (``w_n`` from :class:`~torchrl_bdpo.VPSchedule`), the three losses are:

    * ``loss_qvalue``: each of the ``K`` critics regresses onto
      :math:`y_Q = r + \gamma (1 - d)\,[\mathrm{Agg}_k \mathrm{Red}_m \bar Q_k(s', a'^{(m)}_0) - \eta P(s')]`,
      where ``a'^{(m)}`` are ``M`` full reverse paths of the EMA actor at ``s'``
      and :math:`P(s') = \mathrm{mean}_m \sum_n \ell_n(s', x'^{(m)}_n)` is evaluated
      with the EMA behavior model on the actor's own paths. With
      ``penalty_placement="outside"`` the penalty is subtracted outside ``γ(1-d)``.
    * ``loss_value``: :math:`V_n(s, x_n)`, with ``x_n ~ q(x_n | a)`` for
      dataset pairs and ``n ~ U{1..N}``, regresses onto
      :math:`y_V = \mathrm{Agg}_k \mathrm{mean}_m \bar V_{n-1,k}(s, x^{(m)}_{n-1}) - \eta \ell_n(s, x_n)`
      with ``x_{n-1}`` one reverse step of the EMA actor and :math:`\bar V_0 := \bar Q`.
    * ``loss_actor``: :math:`-\mathrm{mean}[\mathrm{Agg}_k \mathrm{mean}_m \bar V_{n-1,k}(s, x^{(m)}_{n-1}) - \eta \ell_n]`
      with ``x_{n-1}`` one *reparameterised* step of the online actor: gradients
      reach the actor through ``x_{n-1}`` and through :math:`\epsilon^\pi` in
      :math:`\ell_n`, never through the chain.

    ``Agg_k`` is ``mean_k - rho * std_k`` (population std; ``aggregation="lcb"``),
    ``"mean"`` or ``"min"``; ``Red_m`` is the mean over samples (``backup="mean"``)
    or their max (``"max"``, AntMaze). Ensemble members and the ``M`` samples are
    tensor axes: one batched call per network. The penalty's behavior model is
    called once per step of the actor's chain (``N`` calls, on exactly the inputs the
    actor saw, so identical networks give a KL of exactly 0); one call over the stacked
    ``(N, B, M)`` chain measured no faster on CPU (hopper shapes, eager: 258 vs 251 ms
    per Q target).

    Sampling inside the loss is always stochastic: it does not read TorchRL's
    exploration type (a :class:`~torchrl.objectives.LossModule` runs in
    deterministic mode by default).

    Parameter groups (each with target/EMA copies, see :class:`GroupSoftUpdate`):
    ``actor_network`` (trained by ``loss_actor``), ``qvalue_network`` and
    ``value_network`` (trained by ``loss_qvalue``/``loss_value``), and
    ``behavior_network``: the KL uses its **target** (EMA) parameters, held fixed
    by every BDPO loss; its online parameters are trained only by
    :meth:`behavior_loss` (pre-training and optional continued training).

    Args:
        actor_network (BDPODiffusionActor): the actor ``pi``.
        qvalue_network (TensorDictModule): an ensemble critic reading
            ``(observation, action)`` and writing ``state_action_value`` of shape
            ``[*batch, K]``, e.g. ``make_qvalue_operator(QEnsemble(...))``.
        value_network (TensorDictModule): an ensemble diffusion value reading
            ``(observation, noisy_action, diffusion_step)`` and writing
            ``state_value`` ``[*batch, K]``, e.g. ``make_value_operator(DiffusionValueEnsemble(...))``.
        behavior_network (BDPODiffusionActor): the behavior model ``nu`` (same
            architecture and schedule as the actor; a distinct module).

    Keyword Args:
        eta (float): the regularisation strength ``η > 0``.
        rho (float): the LCB coefficient ``ρ >= 0``. Defaults to 1.0.
        gamma: not accepted here. The discount is set the TorchRL way,
            ``loss.make_value_estimator(gamma=0.99)`` (0.99 until then).
        num_samples (int): ``M``. Defaults to 10.
        backup ("mean" | "max"): ``Red_m``. Defaults to ``"mean"``.
        penalty_placement ("inside" | "outside"): where ``η P(s')`` enters the Q
            target (the authors' code: inside; the paper-era code: outside).
            Defaults to ``"inside"``.
        aggregation ("lcb" | "mean" | "min"): ``Agg_k``. Defaults to ``"lcb"``.
        bandit (bool): every transition is terminal (one-step tasks): the Q target
            is the reward and no next-state chain is run (so ``penalty_placement``
            must be ``"inside"``). Defaults to ``False``.
        stratified_steps (bool): the fast path for the value and actor losses.
            Instead of ``n ~ U{1..N}`` i.i.d., the first ``ceil(B/N)`` rows of a
            batch get ``n = 1`` and the others cycle through ``2..N`` (batches are
            uniform samples of the data, so each step still meets random data;
            every step gets ``B/N`` rows, up to one). The rows with ``n = 1``
            (which bootstrap from ``Q``) and the others (which bootstrap from
            ``V_{n-1}``) then form two fixed-size contiguous groups,
            and each target network runs on its own group only, instead of both
            networks on every sample followed by a ``torch.where``. Defaults to
            ``False`` (i.i.d. steps). The cycle starts at a random step on each call,
            so every step is trained even when ``B - ceil(B/N) < N - 1``.
        error_reduction ("mean" | "sum"): how the squared errors of one sample are
            reduced before the batch mean: over the ``K`` members for ``loss_qvalue``
            and ``loss_value``, over the action dimensions for :meth:`behavior_loss`.
            ``"mean"`` is the authors' code; ``"sum"`` is the paper's
            :math:`\|\cdot\|^2` and TorchRL's ensemble convention. Under Adam the two
            differ only through gradient-norm clipping (and Adam's epsilon): ``"sum"``
            makes the gradients ``K`` (or ``A``) times larger, so a clip at 1.0 acts more
            often. Defaults to ``"mean"``.
        reduction ("mean" | "sum" | "none"): TorchRL's batch reduction of each loss:
            ``"none"`` returns one value per row (shape ``[*batch]``). Rows that TorchRL's loss
            mask marks invalid (``loss_mask_key``: ``("collector", "mask")`` by default) do
            not count, in the losses and in the diagnostics. Defaults to ``"mean"``.
        validate_inputs (bool): check, in eager mode, that actions lie in the actor's box (when
            its sampler clips to it) and termination flags are 0/1 (one host sync per loss call; shapes and dtypes are always
            checked). Turn it off once the data are validated. Defaults to ``True``.

    Examples:
        >>> from torchrl_bdpo import (NoiseNet, VPSchedule, DiffusionSampler, BDPODiffusionActor,
        ...     QEnsemble, DiffusionValueEnsemble, make_qvalue_operator, make_value_operator)
        >>> def diffusion():
        ...     return BDPODiffusionActor(DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> loss = BDPOLoss(
        ...     diffusion(),
        ...     make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(16,))),
        ...     make_value_operator(DiffusionValueEnsemble(3, 2, num_members=4, hidden_sizes=(16,))),
        ...     diffusion(), eta=0.2, rho=1.0, num_samples=3)
        >>> from torchrl_bdpo import GroupSoftUpdate  # the EMA targets, built right after the loss
        >>> emas = [GroupSoftUpdate(loss, groups=g, tau=0.005) for g in (
        ...     ["qvalue_network", "value_network"], ["actor_network"], ["behavior_network"])]
        >>> td = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool),
        ...              "done": torch.zeros(8, 1, dtype=torch.bool)}}, [8])
        >>> out = loss(td)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_qvalue', 'loss_value']
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (``loss.set_keys(name=key)``).

        Attributes:
            observation (NestedKey): the state (and, under ``"next"``, the next
                state). Defaults to ``"observation"``.
            action (NestedKey): the dataset action. Defaults to ``"action"``.
            reward (NestedKey): the reward, read under ``"next"``. Defaults to ``"reward"``.
            done (NestedKey): done flag, read under ``"next"`` (not used for
                bootstrapping). Defaults to ``"done"``.
            terminated (NestedKey): termination flag, read under ``"next"``: the
                bootstrap mask. Defaults to ``"terminated"``.
            state_action_value (NestedKey): the critic's output. Defaults to ``"state_action_value"``.
            state_value (NestedKey): the diffusion value's output. Defaults to ``"state_value"``.

        The networks' inputs are filled by position from their own ``in_keys``:
        ``(observation, action)`` for the critic and ``(observation, x_n, n)``
        for the diffusion value, so renaming the data keys never requires
        rebuilding the networks.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        state_action_value: NestedKey = "state_action_value"
        state_value: NestedKey = "state_value"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    out_keys = [
        "loss_qvalue",
        "loss_value",
        "loss_actor",
        "penalty",
        "kl_per_step",
        "q_mean",
        "q_std",
        "target_q",
        "v_mean",
        "target_v",
        "actor_kl",
        "actor_value",
    ]

    actor_network: BDPODiffusionActor
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    behavior_network: BDPODiffusionActor
    behavior_network_params: TensorDictParams
    target_behavior_network_params: TensorDictParams
    qvalue_network: TensorDictModule
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: BDPODiffusionActor,
        qvalue_network: TensorDictModule,
        value_network: TensorDictModule,
        behavior_network: BDPODiffusionActor,
        *,
        eta: float,
        rho: float = 1.0,
        gamma: float | None = None,
        num_samples: int = 10,
        backup: Literal["mean", "max"] = "mean",
        penalty_placement: Literal["inside", "outside"] = "inside",
        aggregation: Literal["lcb", "mean", "min"] = "lcb",
        bandit: bool = False,
        stratified_steps: bool = False,
        error_reduction: Literal["mean", "sum"] = "mean",
        reduction: Literal["mean", "sum", "none"] = "mean",
        validate_inputs: bool = True,
    ) -> None:
        if gamma is not None:
            raise TypeError(
                "BDPOLoss takes its discount the TorchRL way: build the loss, then call "
                f"loss.make_value_estimator(gamma={gamma!r})."
            )
        _check_settings(eta, rho, num_samples, backup, penalty_placement, aggregation, bandit)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"Invalid BDPOLoss settings: reduction must be 'mean', 'sum' or 'none' (got "
                f"{reduction!r})."
            )
        if error_reduction not in _ERROR_REDUCTIONS:
            raise ValueError(
                f"Invalid BDPOLoss settings: error_reduction must be one of "
                f"{_ERROR_REDUCTIONS} (got {error_reduction!r})."
            )
        if actor_network is behavior_network:
            raise ValueError(
                "actor_network and behavior_network must be distinct modules (the actor "
                "is trained, the behavior model is held fixed); build two BDPODiffusionActors."
            )
        _check_sizes(
            actor_network=actor_network.policy.noise_net,
            behavior_network=behavior_network.policy.noise_net,
            qvalue_network=qvalue_network,
            value_network=value_network,
        )
        a_sched, b_sched = actor_network.policy.schedule, behavior_network.policy.schedule
        if a_sched.num_steps != b_sched.num_steps or not torch.allclose(
            a_sched.betas, b_sched.betas
        ):
            raise ValueError(
                "The actor and the behavior model must share the noise schedule: got "
                f"{a_sched} and {b_sched}."
            )
        super().__init__()
        self.convert_to_functional(actor_network, "actor_network", create_target_params=True)
        self.convert_to_functional(behavior_network, "behavior_network", create_target_params=True)
        self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)
        self.convert_to_functional(value_network, "value_network", create_target_params=True)
        self.eta = float(eta)
        self.rho = float(rho)
        self.gamma = 0.99  # TorchRL's default discount; make_value_estimator(gamma=...) sets it
        self.num_samples = int(num_samples)
        self.backup = backup
        self.penalty_placement = penalty_placement
        self.aggregation = aggregation
        self.bandit = bool(bandit)
        self.stratified_steps = bool(stratified_steps)
        self.error_reduction = error_reduction
        self.reduction = reduction
        self.validate_inputs = bool(validate_inputs)
        self.schedule = a_sched

    # ------------------------------------------------------------------ keys
    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self) -> list[NestedKey]:
        keys = self.tensor_keys
        if self.bandit:  # one-step tasks: no next state, every transition terminal
            return [keys.observation, keys.action, ("next", keys.reward)]
        return [
            keys.observation,
            keys.action,
            ("next", keys.observation),
            ("next", keys.reward),
            ("next", keys.terminated),
        ]

    def make_value_estimator(self, value_type=None, **hyperparams) -> BDPOLoss:
        """Sets the discount: ``loss.make_value_estimator(gamma=0.99)``.

        BDPO's TD(0) target (ensemble LCB minus the pathwise KL penalty, :meth:`q_target`) is its
        own; ``gamma`` is the one hyperparameter, and no other value type is supported.
        """
        if value_type is not None or set(hyperparams) - {"gamma"}:
            raise NotImplementedError(
                "BDPOLoss computes its own TD(0) targets (ensemble LCB minus the pathwise KL "
                "penalty); only make_value_estimator(gamma=...) is supported."
            )
        if "gamma" in hyperparams:
            gamma = hyperparams["gamma"]
            if isinstance(gamma, torch.Tensor) and gamma.numel() == 1 and gamma.is_floating_point():
                gamma = float(gamma)  # once, at set-up: a tensor discount as TorchRL losses take it
            if not (_real(gamma) and 0 <= gamma <= 1):
                raise ValueError(f"gamma must be a number in [0, 1] (got {gamma!r}).")
            self.gamma = float(gamma)
        return self

    def _default_value_estimator(self) -> None:
        """No TorchRL value estimator: ``loss.value_estimator`` is ``None`` (BDPO's targets are
        its own, :meth:`q_target`), instead of the base class's attempt to build one."""
        self._value_estimator = None

    def _get(self, tensordict: TensorDictBase, keys: list[NestedKey], method: str):
        values = [tensordict.get(k, None) for k in keys]
        if any(v is None for v in values):
            missing = [k for k, v in zip(keys, values) if v is None]
            raise KeyError(
                f"BDPOLoss.{method} needs the keys {keys} but {missing} are missing from the "
                f"input (it has {sorted(map(str, tensordict.keys(True, True)))}). Map your keys "
                f"with loss.set_keys(...), e.g. set_keys(observation='obs', reward='rew'); "
                f"current mapping: {self.tensor_keys}."
            )
        for key, value in zip(keys, values):
            self._check_input(key, value, method)
        return values

    def _check_input(self, key: NestedKey, value: torch.Tensor, method: str) -> None:
        """Shape and dtype checks (free), and value checks in eager mode when ``validate_inputs``."""
        keys, dtype = self.tensor_keys, self.schedule.betas.dtype
        where = f"BDPOLoss.{method}: {key!r}"
        flags = key == ("next", keys.terminated)
        if not flags and (not value.is_floating_point() or value.dtype != dtype):
            raise TypeError(
                f"{where} is {value.dtype} but the networks are {dtype}; cast the batch (e.g. "
                f"td.to({dtype})) or the loss (loss.to(dtype))."
            )
        net = self.actor_network.policy.noise_net
        widths = {
            keys.observation: getattr(net, "observation_dim", None),
            ("next", keys.observation): getattr(net, "observation_dim", None),
            keys.action: getattr(net, "action_dim", None),
        }
        expected = widths.get(key)
        if expected is not None and (value.ndim == 0 or value.shape[-1] != expected):
            raise ValueError(
                f"{where} must have shape [*batch, {expected}] (the networks' width), got "
                f"{tuple(value.shape)}."
            )
        if value.numel() == 0:
            raise ValueError(
                f"{where} is empty (shape {tuple(value.shape)}): the batch has no rows."
            )
        if not self.validate_inputs or torch.compiler.is_compiling():
            return
        if flags and not ((value == 0) | (value == 1)).all():
            raise ValueError(
                f"{where} must hold 0/1 (or bool) termination flags, got other values."
            )
        policy = self.actor_network.policy
        if key == keys.action and policy.clip_sample:  # the sampler's box is part of the model
            # the module's own box (not moved by loss.to()): brought to the batch's device/dtype
            low, high = policy.action_low.to(value), policy.action_high.to(value)
            if not ((value >= low) & (value <= high)).all():
                raise ValueError(
                    f"{where} has values outside the action box [{low.tolist()}, {high.tolist()}] "
                    f"(min {value.min().item():.4g}, max {value.max().item():.4g}); BDPO's sampler "
                    "works in that box: rescale the actions."
                )

    def _rows(self, tensordict: TensorDictBase, key: NestedKey, batch: torch.Size, method: str):
        """A per-row input (reward, flags) as ``[rows]``: shape ``[*batch]`` or ``[*batch, 1]``."""
        (value,) = self._get(tensordict, [key], method)
        if tuple(value.shape) not in (tuple(batch), (*batch, 1)):
            raise ValueError(
                f"BDPOLoss.{method}: {key!r} must hold one value per row, shape "
                f"{list(batch)} or {[*batch, 1]}, got {list(value.shape)}."
            )
        return value.reshape(-1)

    # ------------------------------------------------------------ functional
    def _q(self, params: TensorDictBase, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Ensemble critic ``[*batch, K]``."""
        with params.to_module(self.qvalue_network, preserve_module_state=False):
            q = call_network(self.qvalue_network, self.tensor_keys.state_action_value, obs, act)
        # the built-in critics return float32 under autocast already (float32 output layer);
        # a custom critic may return bfloat16: targets and aggregation stay in obs' dtype
        return q.to(obs.dtype)

    def _v(
        self, params: TensorDictBase, obs: torch.Tensor, x: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        """Ensemble diffusion value ``[*batch, K]``."""
        with params.to_module(self.value_network, preserve_module_state=False):
            v = call_network(self.value_network, self.tensor_keys.state_value, obs, x, n)
        return v.to(obs.dtype)

    @staticmethod
    def _noise(
        module: BDPODiffusionActor,
        params: TensorDictBase,
        obs: torch.Tensor,
        x: torch.Tensor,
        n: torch.Tensor,
    ) -> torch.Tensor:
        """``module``'s noise prediction with ``params``: ``[B, A]``."""
        with params.to_module(module, preserve_module_state=False):
            return module.policy.predict_noise(obs, x, n)

    def _reduce_errors(self, squared_errors: torch.Tensor) -> torch.Tensor:
        """``[*batch, K]`` -> ``[*batch]`` by ``error_reduction``."""
        if self.error_reduction == "mean":
            return squared_errors.mean(-1)
        return squared_errors.sum(-1)

    def _aggregate(self, values: torch.Tensor) -> torch.Tensor:
        """``Agg_k`` over the last (ensemble) axis."""
        if self.aggregation == "lcb":
            return values.mean(-1) - self.rho * values.std(-1, correction=0)
        if self.aggregation == "min":
            return values.amin(-1)
        return values.mean(-1)

    @staticmethod
    def _kl(
        eps_pi: torch.Tensor, eps_nu: torch.Tensor, weight: torch.Tensor | float
    ) -> torch.Tensor:
        """``l_n = w_n ||eps_pi - eps_nu||^2`` (summed over action dims), with ``w_n`` the
        schedule's ``kl_weights[n]`` (a tensor of rows' weights, or one step's float)."""
        return weight * (eps_pi - eps_nu).pow(2).sum(-1)

    def _next_values(
        self, obs: torch.Tensor, x_prev: torch.Tensor, n_prev: torch.Tensor
    ) -> torch.Tensor:
        """Target ``V_{n-1}(s, x_{n-1})`` with ``V_0 := Q``: obs ``[B, O]``, x ``[B, M, A]``, n ``[B]`` -> ``[B, M, K]``."""
        if self.stratified_steps:
            return self._next_values_partitioned(obs, x_prev, n_prev)
        obs_m = obs.unsqueeze(-2)
        q = self._q(self.target_qvalue_network_params, obs_m, x_prev)
        v = self._v(
            self.target_value_network_params,
            obs_m,
            x_prev,
            n_prev.clamp_min(1).unsqueeze(-1).expand(x_prev.shape[:-1]),
        )
        return torch.where((n_prev == 0).view(-1, 1, 1), q, v)

    def _num_q_rows(self, batch: int) -> int:
        """Rows with ``n = 1`` under stratified steps: ``ceil(B / N)`` (the first rows of the batch)."""
        return -(-batch // self.schedule.num_steps)

    def _next_values_partitioned(
        self, obs: torch.Tensor, x_prev: torch.Tensor, n_prev: torch.Tensor
    ) -> torch.Tensor:
        """As :meth:`_next_values` for stratified steps: Q on the ``n = 1`` rows, V on the others only.

        The two groups are contiguous slices of the batch, so shapes are static
        (``torch.compile``-friendly) and no gather/scatter is needed.
        """
        c = self._num_q_rows(obs.shape[0])
        obs_m = obs.unsqueeze(-2)
        q = self._q(self.target_qvalue_network_params, obs_m[:c], x_prev[:c])
        if c == obs.shape[0]:  # N = 1: every step bootstraps from Q
            return q
        v = self._v(
            self.target_value_network_params,
            obs_m[c:],
            x_prev[c:],
            n_prev[c:].unsqueeze(-1).expand(obs.shape[0] - c, x_prev.shape[-2]),
        )
        return torch.cat([q, v], 0)

    def _one_step(
        self, params: TensorDictBase, obs: torch.Tensor, x_n: torch.Tensor, n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``M`` reparameterised reverse steps of the actor (with ``params``) from one ``x_n``:
        ``([B, M, A], eps [B, A])``."""
        with params.to_module(self.actor_network, preserve_module_state=False):
            policy = self.actor_network.policy
            eps = policy.predict_noise(obs, x_n, n)
            mean = policy.reverse_mean(x_n, n, eps)
        z = torch.randn(*x_n.shape[:-1], self.num_samples, x_n.shape[-1], device=x_n.device)
        sigma = torch.where(n > 1, self.schedule.sigmas[n], 0.0).view(-1, 1, 1)
        return mean.unsqueeze(-2) + sigma * z, eps

    def _sample_steps(self, batch: int, device) -> torch.Tensor:
        if not self.stratified_steps:
            return self.schedule.sample_steps((batch,), device=device)
        # the first ceil(B/N) rows get n = 1, the others cycle through 2..N from a random start
        big_n, c = self.schedule.num_steps, self._num_q_rows(batch)
        period = max(big_n - 1, 1)
        start = torch.randint(period, (), device=device)
        rest = (torch.arange(batch - c, device=device) + start) % period + 2
        return torch.cat([torch.ones(c, dtype=torch.long, device=device), rest])

    def _noisy_dataset_actions(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self._sample_steps(act.shape[0], act.device)
        return self.schedule.q_sample(act, n), n

    # ----------------------------------------------------------------- losses
    def _penalised_chain(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full reverse paths of the EMA actor at ``s`` ``[B, M, O]`` and the per-step KL to the EMA behavior.

        The behavior model is evaluated at each step on exactly the inputs (and
        tensor shapes) the actor saw, so identical networks give a KL of exactly 0.

        Returns:
            ``(x_0 [B, M, A], l [N, B, M])`` with ``l[n - 1] = l_n(s, x_n)``.
        """
        actor, behavior = self.actor_network.policy, self.behavior_network.policy
        weights = self.schedule.step_coefficients
        kls = []
        with (
            self.target_actor_network_params.to_module(
                self.actor_network, preserve_module_state=False
            ),
            self.target_behavior_network_params.to_module(
                self.behavior_network, preserve_module_state=False
            ),
        ):
            table = behavior.step_feature_table(s.device, s.dtype)

            def penalise(step: int, x: torch.Tensor, eps_pi: torch.Tensor) -> None:
                features = None if table is None else table[step]
                eps_nu = behavior.predict_noise(s, x, step, step_features=features)
                kls.append(self._kl(eps_pi, eps_nu, weights[step]["kl_weight"]))

            action = actor.sample(s, on_step=penalise)
        return action, torch.stack(kls[::-1], 0)

    def q_target(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """The TD target ``y_Q`` ``[B]`` (no gradient) and diagnostics (over unmasked rows)."""
        keys = self.tensor_keys
        if self.bandit:  # every transition is terminal: no next state or flags needed
            (obs,) = self._get(tensordict, [keys.observation], "qvalue_loss")
            return self._rows(tensordict, ("next", keys.reward), obs.shape[:-1], "qvalue_loss"), {}
        (next_obs,) = self._get(tensordict, [("next", keys.observation)], "qvalue_loss")
        batch = next_obs.shape[:-1]
        reward = self._rows(tensordict, ("next", keys.reward), batch, "qvalue_loss")
        term = self._rows(tensordict, ("next", keys.terminated), batch, "qvalue_loss")
        next_obs = next_obs.reshape(-1, next_obs.shape[-1])
        b, m = next_obs.shape[0], self.num_samples
        with torch.no_grad():
            s = next_obs.unsqueeze(-2).expand(b, m, next_obs.shape[-1])
            action, kl = self._penalised_chain(s)  # [B, M, A], [N, B, M]
            penalty = kl.sum(0).mean(-1)  # [B]
            q_next = self._q(self.target_qvalue_network_params, s, action)  # [B, M, K]
            q_next = q_next.mean(-2) if self.backup == "mean" else q_next.amax(-2)
            boot = self._aggregate(q_next)
            nonterminal = 1.0 - term.to(reward.dtype)  # bool, integer or float flags
            if self.penalty_placement == "inside":
                target = reward + self.gamma * nonterminal * (boot - self.eta * penalty)
            else:
                target = reward + self.gamma * nonterminal * boot - self.eta * penalty
            mask = self._row_mask(tensordict, batch)
            meta = {
                "penalty": self._mean(penalty, mask),
                "kl_per_step": self._mean(kl.mean(-1).T, mask),
            }
        return target, meta

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Squared TD error of every critic onto ``y_Q`` (reduced over members, then over the batch
        by ``reduction``; rows masked by TorchRL's loss mask do not count)."""
        keys = self.tensor_keys
        obs, act = self._get(tensordict, [keys.observation, keys.action], "qvalue_loss")
        batch = obs.shape[:-1]
        target, meta = self.q_target(tensordict)
        q = self._q(
            self.qvalue_network_params,
            obs.reshape(-1, obs.shape[-1]),
            act.reshape(-1, act.shape[-1]),
        )
        loss = self._reduce_errors((q - target.unsqueeze(-1)).pow(2))
        with torch.no_grad():
            mask = self._row_mask(tensordict, batch)
            meta.update(
                q_mean=self._mean(q.mean(-1), mask),
                q_std=self._mean(q.std(-1, correction=0), mask),
                target_q=self._mean(target, mask),
            )
        return self._reduce_loss(loss.reshape(batch), tensordict), meta

    def value_target(
        self, tensordict: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The diffusion-value target ``y_V`` ``[B]`` (no gradient) at forward-noised dataset
        actions, with the noisy actions ``x_n`` ``[B, A]`` and their steps ``n`` ``[B]``."""
        keys = self.tensor_keys
        obs, act = self._get(tensordict, [keys.observation, keys.action], "value_loss")
        obs, act = obs.reshape(-1, obs.shape[-1]), act.reshape(-1, act.shape[-1])
        x_n, n = self._noisy_dataset_actions(act)
        with torch.no_grad():
            x_prev, eps_pi = self._one_step(self.target_actor_network_params, obs, x_n, n)
            eps_nu = self._noise(
                self.behavior_network, self.target_behavior_network_params, obs, x_n, n
            )
            kl = self._kl(eps_pi, eps_nu, self.schedule.kl_weights[n])
            target = self._aggregate(self._next_values(obs, x_prev, n - 1).mean(-2)) - self.eta * kl
        return target, x_n, n

    def value_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Squared error of every ``V_n`` member onto ``y_V`` at forward-noised dataset actions."""
        target, x_n, n = self.value_target(tensordict)
        obs = tensordict.get(self.tensor_keys.observation)
        batch = obs.shape[:-1]
        v = self._v(self.value_network_params, obs.reshape(-1, obs.shape[-1]), x_n, n)
        loss = self._reduce_errors((v - target.unsqueeze(-1)).pow(2))
        with torch.no_grad():
            mask = self._row_mask(tensordict, batch)
            meta = {"v_mean": self._mean(v.mean(-1), mask), "target_v": self._mean(target, mask)}
        return self._reduce_loss(loss.reshape(batch), tensordict), meta

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """One reparameterised reverse step of the online actor, scored by the target values minus ``η l_n``."""
        keys = self.tensor_keys
        obs, act = self._get(tensordict, [keys.observation, keys.action], "actor_loss")
        batch = obs.shape[:-1]
        obs, act = obs.reshape(-1, obs.shape[-1]), act.reshape(-1, act.shape[-1])
        x_n, n = self._noisy_dataset_actions(act)
        x_prev, eps_pi = self._one_step(self.actor_network_params, obs, x_n, n)
        with torch.no_grad():
            eps_nu = self._noise(
                self.behavior_network, self.target_behavior_network_params, obs, x_n, n
            )
        kl = self._kl(eps_pi, eps_nu, self.schedule.kl_weights[n])
        value = self._aggregate(self._next_values(obs, x_prev, n - 1).mean(-2))
        loss = -(value - self.eta * kl)
        with torch.no_grad():
            mask = self._row_mask(tensordict, batch)
            meta = {"actor_kl": self._mean(kl, mask), "actor_value": self._mean(value, mask)}
        return self._reduce_loss(loss.reshape(batch), tensordict), meta

    def behavior_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Epsilon-prediction MSE of the online behavior model (pre-training / continued training)."""
        keys = self.tensor_keys
        obs, act = self._get(tensordict, [keys.observation, keys.action], "behavior_loss")
        with self.behavior_network_params.to_module(
            self.behavior_network, preserve_module_state=False
        ):
            err = noise_prediction_error(
                self.behavior_network.policy,
                obs.reshape(-1, obs.shape[-1]),
                act.reshape(-1, act.shape[-1]),
                reduction=self.error_reduction,
            )
        return self._reduce_loss(err.reshape(obs.shape[:-1]), tensordict), {}

    # ------------------------------------------------------------------ masks
    def _row_mask(self, tensordict: TensorDictBase, batch: torch.Size) -> torch.Tensor | None:
        """TorchRL's loss mask (``loss_mask_key``, e.g. ``("collector", "mask")``) as ``[rows]`` bools."""
        mask = None
        for key in self._loss_mask_keys():
            value = tensordict.get(key, None)
            if value is None:
                continue
            if value.numel() != math.prod(batch):
                raise ValueError(
                    f"BDPOLoss: the loss mask {key!r} has shape {tuple(value.shape)} but the batch "
                    f"has shape {tuple(batch)}."
                )
            value = value.reshape(-1).bool()
            mask = value if mask is None else mask & value
        return mask

    @staticmethod
    def _mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Mean over the leading (row) axis of ``values``, over unmasked rows."""
        if mask is None:
            return values.mean(0)
        keep = mask.view(-1, *([1] * (values.ndim - 1)))
        return torch.where(keep, values, 0.0).sum(0) / mask.sum().clamp_min(1)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Computes ``loss_qvalue``, ``loss_value`` and ``loss_actor`` with their diagnostics.

        The behavior model is not trained here (see :meth:`behavior_loss`).
        """
        loss_q, meta_q = self.qvalue_loss(tensordict)
        loss_v, meta_v = self.value_loss(tensordict)
        loss_a, meta_a = self.actor_loss(tensordict)
        return TensorDict(
            {
                "loss_qvalue": loss_q,
                "loss_value": loss_v,
                "loss_actor": loss_a,
                **meta_q,
                **meta_v,
                **meta_a,
            }
        )

    @torch.no_grad()
    def init_actor_from_behavior(self) -> None:
        """Copies the EMA behavior parameters into the actor and its target (BDPO's step 2)."""
        src = self.target_behavior_network_params
        for dest in (self.actor_network_params, self.target_actor_network_params):
            for key, value in src.items(True, True):
                dest.get(key).data.copy_(value)


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _sizes(network) -> tuple[int, int] | None:
    """``(observation_dim, action_dim)`` of a network (or a TensorDictModule's inner module)
    that states them, as this package's networks do; ``None`` for one that does not."""
    for module in (network, getattr(network, "module", None)):
        obs, act = getattr(module, "observation_dim", None), getattr(module, "action_dim", None)
        if isinstance(obs, int) and isinstance(act, int):
            return obs, act
    return None


def _check_sizes(**networks) -> None:
    """Refuse networks built for different observation or action sizes (at construction, not
    as a matmul shape error at the first call); networks that do not state theirs pass."""
    sizes = {name: _sizes(net) for name, net in networks.items()}
    known = {name: size for name, size in sizes.items() if size is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{name} (obs {o}, act {a})" for name, (o, a) in known.items())
        raise ValueError(f"BDPOLoss networks were built for different sizes: {listed}.")


def _check_settings(
    eta, rho, num_samples, backup, penalty_placement, aggregation, bandit=False
) -> None:
    problems = []
    if not (_real(eta) and eta > 0):
        problems.append(f"eta must be a finite number > 0 (got {eta!r})")
    if not (_real(rho) and rho >= 0):
        problems.append(f"rho must be a finite number >= 0 (got {rho!r})")
    if not (
        isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples >= 1
    ):
        problems.append(f"num_samples (M) must be an integer >= 1 (got {num_samples})")
    if backup not in _BACKUPS:
        problems.append(f"backup must be one of {_BACKUPS} (got {backup!r})")
    if penalty_placement not in _PENALTY_PLACEMENTS:
        problems.append(
            f"penalty_placement must be one of {_PENALTY_PLACEMENTS} (got {penalty_placement!r})"
        )
    if aggregation not in _AGGREGATIONS:
        problems.append(f"aggregation must be one of {_AGGREGATIONS} (got {aggregation!r})")
    if bandit and penalty_placement == "outside":
        problems.append(
            "penalty_placement='outside' cannot be used with bandit=True: the paper-era code "
            "subtracts eta * P(s') from terminal targets too, which needs a next-state chain "
            "that bandit tasks do not run; use 'inside' (the authors' code: the target is the "
            "reward)"
        )
    if problems:
        raise ValueError("Invalid BDPOLoss settings: " + "; ".join(problems) + ".")
