"""Ensemble critics: the state-action value Q and the diffusion value V_n."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from torchrl_bdpo.modules.embedding import sinusoidal_embedding
from torchrl_bdpo.modules.ensemble import EnsembleMLP
from torchrl_bdpo.modules.shapes import batch_shape


def _members_last(out: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """``[K, P, 1]`` -> ``[*batch, K]``."""
    return out.squeeze(-1).transpose(0, 1).reshape(*batch, out.shape[0])


class QEnsemble(nn.Module):
    """``K`` independent critics ``Q_k(s, a)`` evaluated in one batched pass.

    Architecture (BDPO spec): MLP ``hidden_sizes`` (Mish) on ``[s, a]``,
    LayerNorm optional (on for AntMaze). Orthogonal init (gain sqrt 2), zero biases.

    Shapes: ``obs`` ``[*batch, O]``, ``action`` ``[*batch, A]`` (broadcastable)
    -> ``[*batch, K]``.

    Examples:
        >>> q = QEnsemble(3, 2, num_members=4, hidden_sizes=(16,))
        >>> q(torch.randn(5, 3), torch.randn(5, 2)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_members: int = 10,
        hidden_sizes: Sequence[int] = (256, 256, 256),
        *,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_members = num_members
        self.mlp = EnsembleMLP(
            num_members, observation_dim + action_dim, 1, hidden_sizes, layer_norm=layer_norm
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        batch = batch_shape(obs.shape[:-1], action.shape[:-1])
        x = torch.cat(
            [obs.expand(*batch, obs.shape[-1]), action.expand(*batch, action.shape[-1])], -1
        )
        return _members_last(self.mlp(x.reshape(-1, x.shape[-1])), batch)


class DiffusionValueEnsemble(nn.Module):
    """``K`` independent diffusion values ``V_{n,k}(s, x_n)``, ``n = 1..N``.

    Architecture (BDPO spec, flow-rl's ``ScalarCriticWithDiscreteTime``):
    ``[s, x_n, MLP[128, 64](emb64(n))]`` (Mish after both step-MLP layers) -> MLP
    ``hidden_sizes`` (Mish) with LayerNorm. Each member has its own step MLP.

    Shapes: ``obs`` ``[*batch, O]``, ``x`` ``[*batch, A]``, ``n`` ``[*batch]``
    (broadcastable) -> ``[*batch, K]``.

    Examples:
        >>> v = DiffusionValueEnsemble(3, 2, num_members=4, hidden_sizes=(16,))
        >>> v(torch.randn(5, 3), torch.randn(5, 2), torch.ones(5, dtype=torch.long)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_members: int = 10,
        hidden_sizes: Sequence[int] = (256, 256, 256),
        *,
        embed_dim: int = 64,
        step_hidden: Sequence[int] = (128, 64),
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.num_members = num_members
        self.embed_dim = embed_dim
        self.step_mlp = EnsembleMLP(
            num_members, embed_dim, step_hidden[-1], step_hidden[:-1], activate_last=True
        )
        self.mlp = EnsembleMLP(
            num_members,
            observation_dim + action_dim + step_hidden[-1],
            1,
            hidden_sizes,
            layer_norm=layer_norm,
        )

    def forward(self, obs: torch.Tensor, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        batch = batch_shape(obs.shape[:-1], x.shape[:-1], n.shape)
        sx = torch.cat([obs.expand(*batch, obs.shape[-1]), x.expand(*batch, x.shape[-1])], -1)
        sx = sx.reshape(-1, sx.shape[-1])
        steps = n.expand(batch).reshape(-1)
        emb = self.step_mlp(sinusoidal_embedding(steps, self.embed_dim, dtype=sx.dtype))
        inputs = torch.cat([sx.expand(self.num_members, *sx.shape), emb], -1)
        return _members_last(self.mlp(inputs), batch)


def make_qvalue_operator(
    module: QEnsemble,
    *,
    in_keys: Sequence[NestedKey] = ("observation", "action"),
    out_key: NestedKey = "state_action_value",
) -> TensorDictModule:
    """Wraps a :class:`QEnsemble` as a TensorDict module writing ``[*batch, K]`` values."""
    return TensorDictModule(module, in_keys=list(in_keys), out_keys=[out_key])


def make_value_operator(
    module: DiffusionValueEnsemble,
    *,
    in_keys: Sequence[NestedKey] = ("observation", "noisy_action", "diffusion_step"),
    out_key: NestedKey = "state_value",
) -> TensorDictModule:
    """Wraps a :class:`DiffusionValueEnsemble` as a TensorDict module writing ``[*batch, K]``."""
    return TensorDictModule(module, in_keys=list(in_keys), out_keys=[out_key])
