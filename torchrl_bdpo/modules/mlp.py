"""A plain MLP builder with the project's initialisation (orthogonal weights, zero biases)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from torchrl_bdpo.modules.activation import Mish


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
        linear = nn.Linear(d_in, d_out)
        nn.init.orthogonal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        last = i == len(sizes) - 2
        if not last or activate_last:
            if layer_norm and not last:
                layers.append(nn.LayerNorm(d_out))
            layers.append(activation())
    return nn.Sequential(*layers)
