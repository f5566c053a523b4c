"""TensorDict actors over a :class:`DiffusionPolicy`: a ProbabilisticActor and a Q-selection policy."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs.utils import ExplorationType
from torchrl.modules import ProbabilisticActor

from torchrl_bdpo.modules.calling import call_network
from torchrl_bdpo.modules.diffusion_policy import DiffusionChain, DiffusionPolicy

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

    def __init__(self, observation: torch.Tensor, policy: DiffusionPolicy) -> None:
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

    def __init__(self, policy: DiffusionPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return observation


class DiffusionActor(ProbabilisticActor):
    """A TorchRL ``ProbabilisticActor`` whose action distribution is a diffusion policy.

    Reads ``observation`` and writes ``action``; usable as the policy of
    ``env.rollout`` and TorchRL collectors. The interaction type decides the
    chain: ``RANDOM`` (default) samples the full stochastic reverse chain,
    ``DETERMINISTIC`` runs it from ``x_N = 0`` with no noise. ``log_prob`` is not
    defined (see :class:`DiffusionActionDistribution`); ``return_log_prob`` must
    stay ``False``.

    The underlying :class:`DiffusionPolicy` (``actor.policy``) gives the
    per-step API: ``sample(..., return_chain=True)`` (every ``x_n`` and noise
    prediction), ``reverse_step`` (one reparameterised step from a given
    ``(x_n, n)``) and ``predict_noise``.

    Args:
        policy (DiffusionPolicy): the diffusion model.
        in_keys (sequence of NestedKey): the observation key. Defaults to ``["observation"]``.
        out_keys (sequence of NestedKey): the action key. Defaults to ``["action"]``.
        spec (TensorSpec, optional): the action spec; defaults to a box from the
            policy's action bounds.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_bdpo import NoiseNet, VPSchedule, DiffusionPolicy
        >>> actor = DiffusionActor(DiffusionPolicy(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> actor(TensorDict({"observation": torch.randn(4, 3)}, [4]))["action"].shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        policy: DiffusionPolicy,
        *,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("action",),
        spec: TensorSpec | None = None,
        default_interaction_type: ExplorationType = ExplorationType.RANDOM,
    ) -> None:
        in_keys, out_keys = list(in_keys), list(out_keys)
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                f"DiffusionActor reads one observation key and writes one action key, "
                f"got in_keys={in_keys}, out_keys={out_keys}."
            )
        if spec is None:
            if policy.clip_sample:
                low = policy.action_low.expand(policy.action_dim)
                high = policy.action_high.expand(policy.action_dim)
                spec = Bounded(low.clone(), high.clone(), shape=(policy.action_dim,))
            else:
                from torchrl.data import Unbounded

                spec = Unbounded(shape=(policy.action_dim,))
        if not isinstance(spec, Composite):
            spec = Composite({out_keys[0]: spec})
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

    @property
    def policy(self) -> DiffusionPolicy:
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
        """The full reverse path at ``observation`` (see :meth:`DiffusionPolicy.sample`)."""
        return self.policy.sample(observation, deterministic=deterministic, return_chain=True)


class QSelectionPolicy(TensorDictModuleBase):
    """Evaluation policy: draw ``num_candidates`` actions, execute the one with the highest ensemble-mean Q.

    The candidates come from the full stochastic chain of ``actor`` (BDPO's
    evaluation protocol; pass ``stochastic=False`` for noise-free chains). With
    ``num_candidates=1`` the critic is not queried.

    Args:
        actor (DiffusionActor): the actor (its ``policy`` draws the candidates).
        qvalue_network (TensorDictModule): an ensemble critic reading
            ``(observation, action)`` keys and writing ``[*batch, K]`` values.
        num_candidates (int): candidates per state. Defaults to 10.
        actor_params, qvalue_params (TensorDictBase, optional): parameters to use
            instead of the modules' own (e.g. a loss's target parameters). They are
            bound once to private copies of the modules, sharing storage, so in-place
            updates of these tensors (EMA steps) are seen by later calls.
        stochastic (bool): stochastic chains. Defaults to ``True``.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_bdpo import NoiseNet, VPSchedule, DiffusionPolicy, QEnsemble, make_qvalue_operator
        >>> actor = DiffusionActor(DiffusionPolicy(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5)))
        >>> q = make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(16,)))
        >>> policy = QSelectionPolicy(actor, q, num_candidates=10)
        >>> policy(TensorDict({"observation": torch.randn(7, 3)}, [7]))["action"].shape
        torch.Size([7, 2])
    """

    def __init__(
        self,
        actor: DiffusionActor,
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

    @torch.no_grad()
    def select(self, obs: torch.Tensor) -> torch.Tensor:
        """``[*batch, O]`` -> ``[*batch, A]``."""
        c, policy, qvalue = self.num_candidates, self._actor.policy, self._qvalue
        if c == 1:
            return policy.sample(obs, deterministic=not self.stochastic)
        obs_c = obs.unsqueeze(-2).expand(*obs.shape[:-1], c, obs.shape[-1])
        cands = policy.sample(obs_c, deterministic=not self.stochastic)
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
