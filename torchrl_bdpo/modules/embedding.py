"""Diffusion-step embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(
    steps: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal embedding of (integer) diffusion steps, as in the authors' code.

    Args:
        steps (Tensor): shape ``[*batch]``, any numeric dtype.
        dim (int): the embedding size (even, at least 4).
        dtype (torch.dtype): of the result (computed in float32, or float64 if asked).

    Returns:
        Tensor of shape ``[*batch, dim]``: ``[cos(n f_k), sin(n f_k)]`` with
        ``f_k = exp(-k ln(10^4) / (dim/2 - 1))``, ``k = 0..dim/2-1`` (so the last
        frequency is exactly ``10^-4``; flow-rl's ``PositionalEmbedding``).

    Examples:
        >>> emb = sinusoidal_embedding(torch.tensor([0, 3]), 4)
        >>> emb.shape
        torch.Size([2, 4])
        >>> emb[0].tolist()  # step 0: cos = 1, sin = 0
        [1.0, 1.0, 0.0, 0.0]
    """
    _check_dim(dim)
    half = dim // 2
    work = torch.float64 if dtype == torch.float64 else torch.float32
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=steps.device, dtype=work) / (half - 1)
    )
    angles = steps.to(work).unsqueeze(-1) * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


def _check_dim(dim: int) -> None:
    if dim % 2 or dim < 4:
        raise ValueError(f"The step-embedding size must be even and at least 4, got {dim}.")


class SinusoidalStepEmbedding(nn.Module):
    """A parameter-free module wrapper of :func:`sinusoidal_embedding`.

    Examples:
        >>> SinusoidalStepEmbedding(64)(torch.tensor([1, 2])).shape
        torch.Size([2, 64])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(steps, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
