"""The noise-prediction network of the diffusion actor and behavior model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchrl_bdpo.modules.embedding import sinusoidal_embedding
from torchrl_bdpo.modules.mlp import make_mlp
from torchrl_bdpo.modules.shapes import batch_shape


class NoiseNet(nn.Module):
    """Predicts the noise ``eps(x_n, n, s)`` of a noisy action.

    Architecture (BDPO spec): sinusoidal embedding of ``n`` (``embed_dim``) ->
    MLP ``step_hidden`` (Mish); then ``[x_n, emb, s]`` -> MLP ``hidden_sizes``
    (Mish, optional LayerNorm) -> ``action_dim``. Orthogonal init (gain sqrt 2), zero biases.

    Args:
        observation_dim (int): state size.
        action_dim (int): action size.
        hidden_sizes (sequence of int): trunk widths. Defaults to ``(256,) * 4``.
        embed_dim (int): sinusoidal embedding size. Defaults to 64.
        step_hidden (sequence of int): step-MLP widths. Defaults to ``(64, 64)``.
        layer_norm (bool): LayerNorm in the trunk. Defaults to ``False``.

    Shapes:
        ``x`` ``[*batch, A]``, ``n`` ``[*batch]`` (int), ``obs`` ``[*batch, O]``
        -> ``[*batch, A]``.

    Examples:
        >>> net = NoiseNet(3, 2, hidden_sizes=(32, 32))
        >>> net(torch.randn(5, 2), torch.ones(5, dtype=torch.long), torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (256, 256, 256, 256),
        *,
        embed_dim: int = 64,
        step_hidden: Sequence[int] = (64, 64),
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.embed_dim = embed_dim
        step_out = step_hidden[-1] if len(step_hidden) else embed_dim
        self.step_mlp = (
            make_mlp(embed_dim, step_hidden[-1], step_hidden[:-1], activate_last=True)
            if len(step_hidden)
            else nn.Identity()
        )
        self.trunk = make_mlp(
            action_dim + step_out + observation_dim,
            action_dim,
            hidden_sizes,
            layer_norm=layer_norm,
        )

    def step_features(self, n: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The step MLP's output for steps ``n`` ``[*batch]`` -> ``[*batch, F]`` (in ``dtype``,
        the networks' dtype)."""
        return self.step_mlp(sinusoidal_embedding(n, self.embed_dim, dtype=dtype))

    def forward(
        self,
        x: torch.Tensor,
        n: torch.Tensor,
        obs: torch.Tensor,
        *,
        step_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``eps(x_n, n, s)``; ``step_features`` (``step_features(n)``, precomputed) skips the step MLP."""
        emb = self.step_features(n, x.dtype) if step_features is None else step_features
        batch = batch_shape(x.shape[:-1], emb.shape[:-1], obs.shape[:-1])
        inputs = torch.cat(
            [
                x.expand(*batch, x.shape[-1]),
                emb.expand(*batch, emb.shape[-1]),
                obs.expand(*batch, obs.shape[-1]),
            ],
            dim=-1,
        )
        return self.trunk(inputs)
