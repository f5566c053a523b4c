"""Ensemble critics: the state-action value Q and the diffusion value V_n, and the ensemble layers
they are built from (one batched matmul per layer for all K members)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torch.nn import functional as F

from torchrl_bdpo.modules.networks import (
    INIT_GAIN,
    LAYER_NORM_EPS,
    Mish,
    batch_shape,
    sinusoidal_embedding,
)

# ------------------------------------------------------------ ensemble layers


def _orthogonal_(weight: torch.Tensor, gain: float = INIT_GAIN) -> torch.Tensor:
    """Orthogonally initialises each member of a ``[K, in, out]`` weight independently."""
    with torch.no_grad():
        for member in weight:  # init-time only
            nn.init.orthogonal_(member.T, gain=gain)
    return weight


class EnsembleLinear(nn.Module):
    """``K`` independent linear layers applied as one batched matmul.

    Args:
        num_members (int): the ensemble size ``K``.
        in_features (int): input size.
        out_features (int): output size.

    Shapes:
        input ``[K, P, in]`` (or ``[P, in]``, shared by all members);
        output ``[K, P, out]``.

    Weights are orthogonally initialised per member with gain ``sqrt(2)`` (the authors'
    init), biases are zero; :meth:`reset_parameters` draws them anew.

    Examples:
        >>> layer = EnsembleLinear(3, 4, 5)
        >>> layer(torch.randn(7, 4)).shape
        torch.Size([3, 7, 5])
    """

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _orthogonal_(self.weight)
        with torch.no_grad():
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            out = torch.matmul(x, self.weight)
            # the bias in the matmul's dtype: under bfloat16 autocast a float32 bias would promote
            # the [K, P, out] result to float32 (a no-op cast in float32)
            return out + self.bias.to(out.dtype)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with per-member affine parameters.

    Shapes: input/output ``[K, P, D]``. ``eps`` defaults to Flax's 1e-6 (the authors' networks).
    """

    def __init__(self, num_members: int, dim: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_members, 1, dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return torch.addcmul(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """``K`` independently initialised MLPs evaluated together.

    Args:
        num_members (int): the ensemble size ``K``.
        in_features (int): input size.
        out_features (int): output size.
        hidden_sizes (sequence of int): hidden widths.
        activation (type): activation class. Defaults to :class:`~torchrl_bdpo.modules.networks.Mish`.
        layer_norm (bool): LayerNorm after each hidden linear layer (before the
            activation). Defaults to ``False``.
        activate_last (bool): the activation after the output layer too (flow-rl's
            ``MLP`` without ``output_dim``, as in V_n's step MLP). Defaults to ``False``.
        float32_output (bool): under autocast, run the output layer outside autocast, in
            its weights' dtype (float32) on the upcast last hidden features, so values leave
            with float32 precision rather than bfloat16's 8 bits (at Q ~ 300 bfloat16 rounds
            to 1-2 units, more than the spread between one state's candidate actions). No
            effect without autocast. Defaults to ``False``; the critics turn it on.

    Shapes:
        input ``[P, in]`` (shared by all members) or ``[K, P, in]``;
        output ``[K, P, out]``.

    Examples:
        >>> mlp = EnsembleMLP(10, 5, 1, (32, 32))
        >>> mlp(torch.randn(8, 5)).shape
        torch.Size([10, 8, 1])
    """

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int,
        hidden_sizes: Sequence[int],
        *,
        activation: type[nn.Module] = Mish,
        layer_norm: bool = False,
        activate_last: bool = False,
        float32_output: bool = False,
    ) -> None:
        super().__init__()
        if float32_output and activate_last:
            raise ValueError("float32_output applies to a linear output layer, not activate_last.")
        if num_members < 1:
            raise ValueError(f"An ensemble needs at least one member, got {num_members}.")
        self.num_members = num_members
        self.float32_output = float32_output
        sizes = [in_features, *hidden_sizes]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            layers.append(EnsembleLinear(num_members, d_in, d_out))
            if layer_norm:
                layers.append(EnsembleLayerNorm(num_members, d_out))
            layers.append(activation())
        layers.append(EnsembleLinear(num_members, sizes[-1], out_features))
        if activate_last:
            layers.append(activation())
        self.layers = nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return "float32_output=True" if self.float32_output else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32_output and _autocast_enabled(x.device.type):
            *hidden, head = self.layers
            for layer in hidden:
                x = layer(x)
            with torch.autocast(x.device.type, enabled=False):
                return head(x.to(head.weight.dtype))
        return self.layers(x)


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``False`` for devices without autocast, e.g. meta)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


# -------------------------------------------------------------------- critics


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
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.num_members = num_members
        self.mlp = EnsembleMLP(
            num_members,
            observation_dim + action_dim,
            1,
            hidden_sizes,
            layer_norm=layer_norm,
            float32_output=True,
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
        self.observation_dim, self.action_dim = observation_dim, action_dim
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
            float32_output=True,
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
