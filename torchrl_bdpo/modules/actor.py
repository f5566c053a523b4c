"""The diffusion actor: the reverse chain of a noise-prediction policy (:class:`DiffusionSampler`), its
TorchRL actor (:class:`BDPODiffusionActor`, a ProbabilisticActor) and the Q-selection evaluation policy."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.nn.probabilistic import interaction_type
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs.utils import ExplorationType
from torchrl.modules import ProbabilisticActor

from torchrl_bdpo.modules.networks import batch_shape
from torchrl_bdpo.schedule import VPSchedule

# -------------------------------------- calling TensorDict modules on tensors


def call_network(network, out_key: NestedKey, *inputs: torch.Tensor) -> torch.Tensor:
    """Runs ``network`` on positional inputs (matched to its ``in_keys``) and returns ``out_key``.

    A plain :class:`~tensordict.nn.TensorDictModule` is called through its inner module
    directly (no TensorDict is built on the hot path); any other TensorDict module gets
    a TensorDict of the inputs, broadcast to a common batch shape.

    Examples:
        >>> from torchrl_bdpo import QEnsemble, make_qvalue_operator
        >>> q = make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(8,)))
        >>> call_network(q, "state_action_value", torch.randn(5, 3), torch.randn(5, 2)).shape
        torch.Size([5, 4])
    """
    if type(network) is TensorDictModule and network.out_keys[0] == out_key:
        return network.module(*inputs)
    batch = batch_shape(*(t.shape[:-1] if t.is_floating_point() else t.shape for t in inputs))
    td = TensorDict(
        {
            key: t.expand(*batch, t.shape[-1]) if t.is_floating_point() else t.expand(batch)
            for key, t in zip(network.in_keys, inputs)
        },
        batch_size=batch,
    )
    out = network(td).get(out_key, None)
    if out is None:
        raise KeyError(
            f"{type(network).__name__} (out_keys={network.out_keys}) wrote no {out_key!r}. For a "
            "BDPOLoss critic or value network with another output key, tell the loss: "
            "loss.set_keys(state_action_value=<the critic's key>, state_value=<the value net's key>)."
        )
    return out


# -------------------------------------------------------------- reverse chain


class DiffusionChain(NamedTuple):
    """A sampled reverse path.

    Attributes:
        action (Tensor): ``x_0``, shape ``[*batch, A]``.
        states (Tensor): ``x_n`` for ``n = 0..N`` stacked on a leading axis,
            shape ``[N + 1, *batch, A]`` (``states[n]`` is ``x_n``).
        noise_preds (Tensor): the noise prediction made at each step ``n = 1..N``,
            shape ``[N, *batch, A]`` (``noise_preds[n - 1]`` was made at ``x_n``).
    """

    action: torch.Tensor
    states: torch.Tensor
    noise_preds: torch.Tensor


class DiffusionSampler(nn.Module):
    r"""A state-conditioned diffusion model over actions (VP schedule, noise prediction).

    Reverse kernel ``p(x_{n-1} | x_n) = N(mu(x_n, n, s), sigma_n^2 I)`` with
    ``sigma_n^2 = beta_n``, and no noise at the last step (``n = 1``). The mean is
    computed from the predicted clean action ``x0_hat = (x_n - sqrt(1 - abar_n) eps) /
    sqrt(abar_n)``, clipped to ``[action_low, action_high]`` when ``clip_sample`` is on:

    .. math::
        \mu = \frac{\sqrt{\bar\alpha_{n-1}}\,\beta_n\,\hat x_0 + \sqrt{\alpha_n}(1 - \bar\alpha_{n-1}) x_n}{1 - \bar\alpha_n}

    which, without clipping, equals ``(x_n - beta_n / sqrt(1 - abar_n) eps) / sqrt(alpha_n)``.

    Args:
        noise_net (nn.Module): ``eps(x, n, obs)``, e.g. :class:`~torchrl_bdpo.NoiseNet`.
        schedule (VPSchedule): the noise schedule.
        clip_sample (bool): clip ``x0_hat`` to the action box. Defaults to ``True``.
        action_low, action_high (float or Tensor): the action box. Defaults to ``-1, 1``.

    Examples:
        >>> from torchrl_bdpo import NoiseNet, VPSchedule
        >>> policy = DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5))
        >>> chain = policy.sample(torch.randn(4, 3), return_chain=True)
        >>> chain.states.shape, chain.noise_preds.shape
        (torch.Size([6, 4, 2]), torch.Size([5, 4, 2]))
    """

    action_low: torch.Tensor
    action_high: torch.Tensor

    def __init__(
        self,
        noise_net: nn.Module,
        schedule: VPSchedule,
        *,
        clip_sample: bool = True,
        action_low: float | torch.Tensor = -1.0,
        action_high: float | torch.Tensor = 1.0,
    ) -> None:
        super().__init__()
        self.noise_net = noise_net
        self.schedule = schedule
        self.clip_sample = clip_sample
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        if (low >= high).any():
            raise ValueError(f"action_low must be below action_high, got {low} and {high}.")
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", high, persistent=False)

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def action_dim(self) -> int:
        return self.noise_net.action_dim

    def predict_noise(
        self,
        obs: torch.Tensor,
        x: torch.Tensor,
        n: torch.Tensor | int,
        *,
        step_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``eps(x_n, n, s)`` in ``x``'s dtype; ``n`` is an integer tensor broadcastable to ``x.shape[:-1]``
        or an int."""
        if isinstance(n, int):
            n = torch.full(x.shape[:-1], n, dtype=torch.long, device=x.device)
        if step_features is None:
            eps = self.noise_net(x, n, obs)
        else:
            eps = self.noise_net(x, n, obs, step_features=step_features)
        return eps.to(x.dtype)  # in x's dtype under bfloat16 autocast too (a no-op otherwise)

    def step_feature_table(
        self, device=None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor | None:
        """The noise net's step features for ``n = 0..N`` (``[N + 1, F]``, in ``dtype``), if it
        exposes them.

        Computed once per chain so that each reverse step skips the step MLP.
        """
        if not hasattr(self.noise_net, "step_features"):
            return None
        steps = torch.arange(self.num_steps + 1, device=device)
        return self.noise_net.step_features(steps, dtype)

    def reverse_mean(
        self, x: torch.Tensor, n: torch.Tensor | int, eps: torch.Tensor, clip: bool | None = None
    ) -> torch.Tensor:
        """The mean ``mu(x_n, n)`` of the reverse kernel given the noise prediction ``eps``."""
        clip = self.clip_sample if clip is None else clip
        if isinstance(n, int):  # one step for the whole batch: Python-float coefficients
            c = self.schedule.step_coefficients[n]
            if not clip:
                return x * c["inv_sqrt_alpha"] - eps * c["eps_coef"]
            x0 = (x - eps * c["sqrt_one_minus_abar"]) * c["inv_sqrt_abar"]
            x0 = torch.maximum(torch.minimum(x0, self.action_high), self.action_low)
            return x0 * c["x0_coef"] + x * c["xt_coef"]
        s = self.schedule
        beta, alpha = s.betas[n].unsqueeze(-1), s.alphas[n].unsqueeze(-1)
        abar = s.alpha_bars[n].unsqueeze(-1)
        if not clip:
            return (x - beta / (1.0 - abar).sqrt() * eps) / alpha.sqrt()
        abar_prev = s.alpha_bars[n - 1].unsqueeze(-1)
        x0 = (x - (1.0 - abar).sqrt() * eps) / abar.sqrt()
        x0 = torch.maximum(torch.minimum(x0, self.action_high), self.action_low)
        return (abar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1.0 - abar_prev) * x) / (1.0 - abar)

    def reverse_step(
        self,
        obs: torch.Tensor,
        x: torch.Tensor,
        n: torch.Tensor | int,
        *,
        noise: torch.Tensor | None = None,
        clip: bool | None = None,
        step_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reparameterised reverse step ``x_{n-1} = mu + sigma_n z`` (``z = 0`` where ``n = 1``).

        Args:
            obs (Tensor): ``[*batch, O]``.
            x (Tensor): ``x_n``, ``[*batch, A]``.
            n (Tensor or int): integer steps in ``1..N``, broadcastable to ``[*batch]``, or
                one int for the whole batch (the fast path of full chains: no noise is
                drawn at ``n = 1``).
            noise (Tensor, optional): ``z``, shape of ``x``; drawn if omitted.
                Pass zeros for a deterministic step.
            step_features (Tensor, optional): precomputed step features for ``n``
                (see :meth:`step_feature_table`).

        Returns:
            ``(x_{n-1}, eps)``, both ``[*batch, A]``.
        """
        if isinstance(n, int):
            eps = self.predict_noise(obs, x, n, step_features=step_features)
            mean = self.reverse_mean(x, n, eps, clip)
            sigma = self.schedule.step_coefficients[n]["sigma"]
            if sigma == 0.0:
                return mean, eps
            if noise is None:
                noise = torch.randn_like(mean)
            return mean + noise * sigma, eps
        n = torch.as_tensor(n, device=x.device).expand(x.shape[:-1])
        eps = self.predict_noise(obs, x, n)
        mean = self.reverse_mean(x, n, eps, clip)
        if noise is None:
            noise = torch.randn_like(mean)
        sigma = torch.where(n > 1, self.schedule.sigmas[n], 0.0).unsqueeze(-1)
        return mean + sigma * noise, eps

    def sample(
        self,
        obs: torch.Tensor,
        *,
        deterministic: bool = False,
        return_chain: bool = False,
        clip: bool | None = None,
        on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> torch.Tensor | DiffusionChain:
        """Runs the full reverse chain from ``x_N ~ N(0, I)`` (``x_N = 0`` and no noise if deterministic).

        Args:
            obs (Tensor): ``[*batch, O]``.
            on_step (callable, optional): called as ``on_step(n, x_n, eps_n)`` at each step
                ``n = N..1`` with the state the noise was predicted at and the prediction
                (e.g. to evaluate another model on the same path).

        Returns:
            ``x_0`` of shape ``[*batch, A]``, or a :class:`DiffusionChain` if ``return_chain``.
        """
        shape = (*obs.shape[:-1], self.action_dim)
        x = (
            obs.new_zeros(shape)
            if deterministic
            else torch.randn(shape, device=obs.device, dtype=obs.dtype)
        )
        table = self.step_feature_table(obs.device, obs.dtype)
        states, preds = [x], []
        for step in range(self.num_steps, 0, -1):
            noise = torch.zeros_like(x) if deterministic and step > 1 else None
            x_prev, eps = self.reverse_step(
                obs,
                x,
                step,
                noise=noise,
                clip=clip,
                step_features=None if table is None else table[step],
            )
            if on_step is not None:
                on_step(step, x, eps)
            x = x_prev
            if return_chain:
                states.append(x)
                preds.append(eps)
        if not return_chain:
            return x
        # states were appended as x_N, ..., x_0: flip so that states[n] is x_n
        return DiffusionChain(
            action=x,
            states=torch.stack(states[::-1], 0),
            noise_preds=torch.stack(preds[::-1], 0),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.sample(obs)


# ------------------------------------------------------------- TorchRL actors

_EMPTY = torch.Size()


class DiffusionActionDistribution(D.Distribution):
    """The action distribution of a diffusion policy at given states.

    ``rsample`` runs the full stochastic reverse chain (differentiable through
    every step); ``sample`` does the same without gradients;
    ``deterministic_sample`` (used under ``ExplorationType.DETERMINISTIC``) runs the
    chain from ``x_N = 0`` with no injected noise.

    ``log_prob``, ``mean``, ``mode`` and ``entropy`` are **not defined**: the
    marginal density of ``x_0`` under a diffusion model is intractable. BDPO never
    needs it: its regulariser is the KL between whole reverse *paths*, computed in
    closed form per step by :class:`~torchrl_bdpo.BDPOLoss`.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, observation: torch.Tensor, policy: DiffusionSampler) -> None:
        self.observation = observation
        self.policy = policy
        super().__init__(
            batch_shape=observation.shape[:-1],
            event_shape=torch.Size([policy.action_dim]),
            validate_args=False,
        )

    def _expanded_obs(self, sample_shape) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        obs = self.observation
        return obs.expand(*sample_shape, *obs.shape)

    def rsample(self, sample_shape=_EMPTY) -> torch.Tensor:
        return self.policy.sample(self._expanded_obs(sample_shape))

    def sample(self, sample_shape=_EMPTY) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.policy.sample(self.observation, deterministic=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "The marginal log-density of a diffusion policy's action is intractable. "
            "BDPO regularises the KL between reverse paths instead (see BDPOLoss)."
        )

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError(
            "A diffusion policy has no closed-form mean; use ExplorationType.RANDOM "
            "(stochastic chain) or DETERMINISTIC (noise-free chain from x_N = 0)."
        )

    @property
    def mode(self) -> torch.Tensor:
        return self.mean


class _PolicyHolder(nn.Module):
    """Registers the policy's parameters under the actor and passes the observation through."""

    def __init__(self, policy: DiffusionSampler) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return observation


#: Interaction types a BDPODiffusionActor runs; MEAN, MODE and MEDIAN are refused.
_SUPPORTED_INTERACTIONS = (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC)


def _check_interaction(kind: ExplorationType) -> None:
    """Refuse the interaction types a diffusion policy cannot honour.

    Under ``MEAN`` tensordict would fall back to averaging 1000 sampled chains: for a
    multimodal policy that is an action the policy would not take (between two modes),
    at 1000 times the cost of one sample. ``MODE``/``MEDIAN`` are not defined either.
    """
    if kind not in _SUPPORTED_INTERACTIONS:
        raise NotImplementedError(
            f"A diffusion policy does not support ExplorationType.{kind.name}: it "
            "has no closed-form mean, mode or median, and averaging sampled actions of a "
            "multimodal policy gives actions it would not take. Use ExplorationType.RANDOM "
            "(stochastic reverse chain) or DETERMINISTIC (noise-free chain from x_N = 0)."
        )


class BDPODiffusionActor(ProbabilisticActor):
    """A TorchRL ``ProbabilisticActor`` whose action distribution is a diffusion policy.

    Reads ``observation`` and writes ``action``; usable as the policy of
    ``env.rollout`` and TorchRL collectors. The interaction type decides the
    chain: ``RANDOM`` (default) samples the full stochastic reverse chain,
    ``DETERMINISTIC`` runs it from ``x_N = 0`` with no noise; ``MEAN``, ``MODE`` and
    ``MEDIAN`` are refused with ``NotImplementedError`` (no closed form; an average of
    sampled chains is not an action the policy takes). ``log_prob`` is not
    defined (see :class:`DiffusionActionDistribution`); ``return_log_prob`` must
    stay ``False``. Observations must have the networks' dtype (float32 by default):
    wrap a MuJoCo ``GymEnv`` (float64 observations) in ``DoubleToFloat``.

    The underlying :class:`DiffusionSampler` (``actor.policy``) gives the
    per-step API: ``sample(..., return_chain=True)`` (every ``x_n`` and noise
    prediction), ``reverse_step`` (one reparameterised step from a given
    ``(x_n, n)``) and ``predict_noise``.

    Args:
        policy (DiffusionSampler): the diffusion model.
        in_keys (sequence of NestedKey): the observation key. Defaults to ``["observation"]``.
        out_keys (sequence of NestedKey): the action key. Defaults to ``["action"]``.
        spec (TensorSpec, optional): the action spec; defaults to a box from the
            policy's action bounds (unbounded when it does not clip,
            ``clip_sample=False``). A bounded spec must be the policy's box: the actor
            does not rescale actions, so an env with another box needs a sampler built
            with ``action_low``/``action_high`` to match.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_bdpo import NoiseNet, VPSchedule, DiffusionSampler
        >>> actor = BDPODiffusionActor(DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> actor(TensorDict({"observation": torch.randn(4, 3)}, [4]))["action"].shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        policy: DiffusionSampler,
        *,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("action",),
        spec: TensorSpec | None = None,
        default_interaction_type: ExplorationType = ExplorationType.RANDOM,
    ) -> None:
        _check_interaction(default_interaction_type)
        in_keys, out_keys = list(in_keys), list(out_keys)
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                f"BDPODiffusionActor reads one observation key and writes one action key, "
                f"got in_keys={in_keys}, out_keys={out_keys}."
            )
        if spec is None:
            if policy.clip_sample:
                low, high = _sampler_box(policy)
                spec = Bounded(low.clone(), high.clone(), shape=(policy.action_dim,))
            else:
                from torchrl.data import Unbounded

                spec = Unbounded(shape=(policy.action_dim,))
        if not isinstance(spec, Composite):
            spec = Composite({out_keys[0]: spec})
        _check_spec_box(spec.get(out_keys[0], None), policy)
        holder = TensorDictModule(_PolicyHolder(policy), in_keys=in_keys, out_keys=in_keys)
        super().__init__(
            holder,
            in_keys={"observation": in_keys[0]},
            out_keys=out_keys,
            spec=spec,
            distribution_class=DiffusionActionDistribution,
            distribution_kwargs={"policy": policy},
            default_interaction_type=default_interaction_type,
            return_log_prob=False,
        )

    def forward(self, *args, **kwargs):
        _check_interaction(interaction_type() or self.default_interaction_type)
        return super().forward(*args, **kwargs)

    @property
    def policy(self) -> DiffusionSampler:
        return self.module[0].module.policy

    @property
    def observation_key(self) -> NestedKey:
        return self.module[0].in_keys[0]

    @property
    def action_key(self) -> NestedKey:
        return self.module[1].out_keys[0]

    def sample_chain(
        self, observation: torch.Tensor, *, deterministic: bool = False
    ) -> DiffusionChain:
        """The full reverse path at ``observation`` (see :meth:`DiffusionSampler.sample`)."""
        return self.policy.sample(observation, deterministic=deterministic, return_chain=True)


def _sampler_box(policy: DiffusionSampler) -> tuple[torch.Tensor, torch.Tensor]:
    """The box the sampler clips to, one bound per action entry: ``([A], [A])``."""
    return policy.action_low.expand(policy.action_dim), policy.action_high.expand(policy.action_dim)


def _check_spec_box(spec: TensorSpec | None, policy: DiffusionSampler) -> None:
    """Refuse a bounded action spec whose box is not the one the sampler clips to."""
    if not (isinstance(spec, Bounded) and policy.clip_sample):
        return
    low, high = (bound.to(spec.space.low) for bound in _sampler_box(policy))
    if spec.space.low.shape[-1:] != low.shape or not (
        torch.allclose(spec.space.low, low) and torch.allclose(spec.space.high, high)
    ):
        raise ValueError(
            f"The action spec's bounds (low {spec.space.low.tolist()}, high "
            f"{spec.space.high.tolist()}) are not the sampler's (low {low.tolist()}, high "
            f"{high.tolist()}): the actor's actions stay in "
            "the sampler's box and are not rescaled. Build the DiffusionSampler with "
            "action_low/action_high equal to the spec's bounds, or rescale the env's actions."
        )


class QSelectionPolicy(TensorDictModuleBase):
    """Evaluation policy: draw ``num_candidates`` actions, execute the one with the highest ensemble-mean Q.

    The candidates come from the full stochastic chain of ``actor`` (BDPO's
    evaluation protocol; pass ``stochastic=False`` for noise-free chains). With
    ``num_candidates=1`` the critic is not queried. Under TorchRL's
    ``set_exploration_type`` the exploration type decides instead of ``stochastic``, as
    for :class:`BDPODiffusionActor`: ``RANDOM`` draws stochastic chains,
    ``DETERMINISTIC`` noise-free ones from ``x_N = 0`` (every candidate is then the same
    action), ``MEAN``/``MODE``/``MEDIAN`` raise.

    The policy registers no parameters or submodules of its own: it calls ``actor`` and
    ``qvalue_network`` (or the parameters bound below) as they are at each call, so
    ``.to()``, ``state_dict()`` and weight updates belong to those modules (or to the
    loss holding the parameters), and a deep copy of the policy stops following them.

    Args:
        actor (BDPODiffusionActor): the actor (its ``policy`` draws the candidates).
        qvalue_network (TensorDictModule): an ensemble critic reading
            ``(observation, action)`` keys and writing ``[*batch, K]`` values.
        num_candidates (int): candidates per state. Defaults to 10.
        actor_params, qvalue_params (TensorDictBase, optional): parameters to use
            instead of the modules' own (e.g. a loss's target parameters). They are
            bound once to private copies of the modules, sharing storage, so in-place
            updates of these tensors (EMA steps) are seen by later calls.
        stochastic (bool): stochastic chains when no exploration type is set.
            Defaults to ``True``.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_bdpo import NoiseNet, VPSchedule, DiffusionSampler, QEnsemble, make_qvalue_operator
        >>> actor = BDPODiffusionActor(DiffusionSampler(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> q = make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(16,)))
        >>> policy = QSelectionPolicy(actor, q, num_candidates=10)
        >>> policy(TensorDict({"observation": torch.randn(7, 3)}, [7]))["action"].shape
        torch.Size([7, 2])
    """

    def __init__(
        self,
        actor: BDPODiffusionActor,
        qvalue_network: TensorDictModule,
        num_candidates: int = 10,
        *,
        actor_params: TensorDictBase | None = None,
        qvalue_params: TensorDictBase | None = None,
        stochastic: bool = True,
    ) -> None:
        super().__init__()
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}.")
        self.num_candidates = num_candidates
        self.stochastic = stochastic
        self.in_keys = [actor.observation_key]
        self.out_keys = [actor.action_key]
        # With parameters given, each network is a private copy whose tensors *are* those
        # parameters (bound once, no swap per call; in-place updates such as EMA steps
        # show through). The copies are not registered as submodules.
        self.__dict__["_actor"] = _bind(actor, actor_params)
        self.__dict__["_qvalue"] = _bind(qvalue_network, qvalue_params)

    @classmethod
    def from_loss(
        cls, loss, num_candidates: int = 10, *, model: str = "actor", stochastic: bool = True
    ) -> QSelectionPolicy:
        """BDPO's evaluation policy over a :class:`~torchrl_bdpo.BDPOLoss`: candidates from the
        EMA (target) parameters of ``model`` (``"actor"`` or ``"behavior"``), scored by the EMA
        critic's ensemble mean. The policy follows later EMA updates of the loss."""
        if model not in ("actor", "behavior"):
            raise ValueError(f"model must be 'actor' or 'behavior', got {model!r}.")
        return cls(
            getattr(loss, f"{model}_network"),
            loss.qvalue_network,
            num_candidates,
            actor_params=getattr(loss, f"target_{model}_network_params"),
            qvalue_params=loss.target_qvalue_network_params,
            stochastic=stochastic,
        )

    def _deterministic(self) -> bool:
        """Noise-free chains: the exploration type set by TorchRL, else ``not stochastic``."""
        kind = interaction_type()
        if kind is None:
            return not self.stochastic
        _check_interaction(kind)
        return kind == ExplorationType.DETERMINISTIC

    @torch.no_grad()
    def select(self, obs: torch.Tensor) -> torch.Tensor:
        """``[*batch, O]`` -> ``[*batch, A]``."""
        c, policy, qvalue = self.num_candidates, self._actor.policy, self._qvalue
        deterministic = self._deterministic()
        if c == 1:
            return policy.sample(obs, deterministic=deterministic)
        obs_c = obs.unsqueeze(-2).expand(*obs.shape[:-1], c, obs.shape[-1])
        cands = policy.sample(obs_c, deterministic=deterministic)
        q = call_network(qvalue, qvalue.out_keys[0], obs_c, cands).mean(-1)
        best = q.argmax(-1, keepdim=True).unsqueeze(-1).expand(*q.shape[:-1], 1, cands.shape[-1])
        return cands.gather(-2, best).squeeze(-2)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict.set(self.out_keys[0], self.select(tensordict.get(self.in_keys[0])))
        return tensordict


def _bind(module: nn.Module, params: TensorDictBase | None) -> nn.Module:
    """``module`` itself, or a copy of it holding ``params``' tensors (shared, not copied)."""
    if params is None:
        return module
    bound = copy.deepcopy(module)
    params.to_module(bound, preserve_module_state=False)
    return bound
