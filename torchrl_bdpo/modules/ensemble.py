"""Ensembles of MLPs evaluated with one batched matmul per layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from torchrl_bdpo.modules.activation import Mish
from torchrl_bdpo.modules.mlp import INIT_GAIN, LAYER_NORM_EPS


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
            return torch.matmul(x, self.weight) + self.bias
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
        activation (type): activation class. Defaults to :class:`~torchrl_bdpo.modules.activation.Mish`.
        layer_norm (bool): LayerNorm after each hidden linear layer (before the
            activation). Defaults to ``False``.
        activate_last (bool): the activation after the output layer too (flow-rl's
            ``MLP`` without ``output_dim``, as in V_n's step MLP). Defaults to ``False``.

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
    ) -> None:
        super().__init__()
        if num_members < 1:
            raise ValueError(f"An ensemble needs at least one member, got {num_members}.")
        self.num_members = num_members
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
