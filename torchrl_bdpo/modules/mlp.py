"""A plain MLP builder with the authors' initialisation (orthogonal weights with gain sqrt(2),
zero biases, LayerNorm epsilon 1e-6)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from torchrl_bdpo.modules.activation import Mish

#: Orthogonal-init gain of every linear layer (flow-rl's ``orthogonal_init()``: sqrt(2)).
INIT_GAIN = math.sqrt(2.0)
#: LayerNorm epsilon (Flax's default, used by the authors' networks).
LAYER_NORM_EPS = 1e-6


class OrthogonalLinear(nn.Linear):
    """:class:`torch.nn.Linear` initialised (and re-initialised by ``reset_parameters``) with
    orthogonal weights of gain ``sqrt(2)`` and zero biases.

    Examples:
        >>> import torch
        >>> layer = OrthogonalLinear(4, 4)
        >>> torch.allclose(layer.weight @ layer.weight.T, 2 * torch.eye(4), atol=1e-5)
        True
    """

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight, gain=INIT_GAIN)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def make_mlp(
    in_features: int,
    out_features: int,
    hidden_sizes: Sequence[int],
    *,
    activation: type[nn.Module] = Mish,
    layer_norm: bool = False,
    activate_last: bool = False,
) -> nn.Sequential:
    """Builds ``Linear -> [LayerNorm] -> act`` blocks and a final ``Linear``.

    Examples:
        >>> import torch
        >>> make_mlp(3, 2, (16, 16))(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """
    sizes = [in_features, *hidden_sizes, out_features]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(OrthogonalLinear(d_in, d_out))
        last = i == len(sizes) - 2
        if not last or activate_last:
            if layer_norm and not last:
                layers.append(nn.LayerNorm(d_out, eps=LAYER_NORM_EPS))
            layers.append(activation())
    return nn.Sequential(*layers)
