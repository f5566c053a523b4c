"""Diffusion-step embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(
    steps: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (integer) diffusion steps.

    Args:
        steps (Tensor): shape ``[*batch]``, any numeric dtype.
        dim (int): the embedding size (even).
        dtype (torch.dtype): of the result (computed in float32, or float64 if asked).

    Returns:
        Tensor of shape ``[*batch, dim]``: ``[sin(n f_k), cos(n f_k)]`` with
        ``f_k = 10000^(-k / (dim/2))``, ``k = 0..dim/2-1``.

    Examples:
        >>> sinusoidal_embedding(torch.tensor([0, 3]), 4).shape
        torch.Size([2, 4])
    """
    if dim % 2:
        raise ValueError(f"The embedding size must be even, got {dim}.")
    half = dim // 2
    work = torch.float64 if dtype == torch.float64 else torch.float32
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=steps.device, dtype=work) / half
    )
    angles = steps.to(work).unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


class SinusoidalStepEmbedding(nn.Module):
    """A parameter-free module wrapper of :func:`sinusoidal_embedding`.

    Examples:
        >>> SinusoidalStepEmbedding(64)(torch.tensor([1, 2])).shape
        torch.Size([2, 64])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"The embedding size must be even, got {dim}.")
        self.dim = dim

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(steps, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
