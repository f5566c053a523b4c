"""Mish from vectorised primitives: the same function, faster on CPU than ATen's kernel."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Below this many elements Mish is launch-bound: use the 3-kernel composition. The
# choice depends on the size only, so a tensor gets the same values with or without
# autograd (BDPO's KL between identical networks stays exactly 0).
SMALL_TENSOR = 32768


def mish(x: torch.Tensor) -> torch.Tensor:
    """``x * tanh(softplus(x))``, the form chosen by size, autograd and compilation.

    Equal to :func:`torch.nn.functional.mish` within float32 rounding. Activations
    are a large share of BDPO's update time on CPU, and ATen's CPU Mish kernel was
    the slowest option measured on the benchmark machine: small tensors use the
    3-kernel ``x * tanh(softplus(x))``; large ones one ``exp`` with in-place
    arithmetic (about 2x faster than that composition at ``[10, 2560, 256]``) and,
    with autograd, an analytic backward; compiled graphs the single-``exp`` form
    inductor fuses.

    Examples:
        >>> x = torch.linspace(-30, 30, 101)
        >>> torch.allclose(mish(x), torch.nn.functional.mish(x), atol=1e-6)
        True
    """
    if torch.compiler.is_compiling():
        return mish_exp(x)
    if x.numel() < SMALL_TENSOR:  # few elements: the fewest kernel launches wins
        return x * torch.tanh(F.softplus(x))
    if x.requires_grad and torch.is_grad_enabled():
        return _Mish.apply(x)  # same forward arithmetic as mish_inplace: bit-identical values
    return mish_inplace(x)


def mish_inplace(x: torch.Tensor) -> torch.Tensor:
    """Mish without autograd support, for no-grad paths (targets, sampling).

    ``tanh(softplus(x)) = 1 - 2 / ((1 + e^x)^2 + 1)``, evaluated with one ``exp`` and
    in-place arithmetic on one temporary: about 2x faster than
    ``x * tanh(softplus(x))`` on large CPU tensors (memory traffic dominates).
    """
    return _tanh_softplus_(x.clamp(max=20.0)).mul_(x)


def _tanh_softplus_(x: torch.Tensor) -> torch.Tensor:
    """``tanh(softplus(x))`` computed in place in ``x`` (a temporary): ``1 - 2 / ((1 + e^x)^2 + 1)``."""
    return x.exp_().add_(1.0).square_().add_(1.0).reciprocal_().mul_(-2.0).add_(1.0)


def mish_exp(x: torch.Tensor) -> torch.Tensor:
    """Mish with a single ``exp``: ``tanh(softplus(x)) = m / (m + 2)``, ``m = e^x (e^x + 2)``.

    Used under ``torch.compile``, where inductor's fused ``exp`` form is about 3x
    faster than its ``tanh``; exact to float32 rounding (``x > 20`` returns ``x``).
    """
    e = torch.exp(torch.clamp(x, max=20.0))
    m = e * (e + 2.0)
    return torch.where(x > 20.0, x, x * m / (m + 2.0))


class _Mish(torch.autograd.Function):
    """Mish with an analytic backward.

    ``d mish / dx = t + x (1 - t^2) sigmoid(x)`` with ``t = tanh(softplus(x))``, kept
    from the forward pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        t = _tanh_softplus_(x.clamp(max=20.0))
        ctx.save_for_backward(x, t)
        return t * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, t = ctx.saved_tensors
        slope = t.square().neg_().add_(1.0).mul_(torch.sigmoid(x)).mul_(x).add_(t)
        return slope.mul_(grad)


class Mish(nn.Module):
    """Module form of :func:`mish` (drop-in for :class:`torch.nn.Mish`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)
