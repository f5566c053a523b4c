"""The networks of BDPO's diffusion models: Mish, the step embedding, MLPs and the noise net.

Everything matches the authors' code (flow-rl): orthogonal init with gain sqrt(2), zero biases,
LayerNorm epsilon 1e-6, ``[cos, sin]`` step embedding (see the README's parity section).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# --------------------------------------------------------------------- shapes


def batch_shape(*shapes: torch.Size) -> torch.Size:
    """``torch.broadcast_shapes`` with a fast path when the shapes are equal or empty.

    ``torch.broadcast_shapes`` is implemented in Python and cost ~0.1 ms a call on the
    benchmark machine, a visible share of batch-1 action sampling.

    Examples:
        >>> batch_shape(torch.Size([4, 2]), torch.Size([]), torch.Size([4, 2]))
        torch.Size([4, 2])
        >>> batch_shape(torch.Size([4, 1]), torch.Size([3]))
        torch.Size([4, 3])
    """
    nonempty = [s for s in shapes if len(s)]
    if not nonempty:
        return torch.Size([])
    first = nonempty[0]
    if all(s == first for s in nonempty[1:]):
        return torch.Size(first)
    return torch.broadcast_shapes(*shapes)


# ----------------------------------------------------------------- activation

# Below this many elements Mish is launch-bound: use the 3-kernel composition. The
# choice depends on the size (and float16) only, so a tensor gets the same values with or without
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
    if x.numel() < SMALL_TENSOR or x.dtype == torch.float16:
        # few elements: the fewest kernel launches win; float16: neither in-place form holds
        # its range (2 / m overflows below x ~ -11)
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
    """``tanh(softplus(x))`` computed in place in ``x`` (a temporary): ``1 - 2 / ((1 + e^x)^2 + 1)``.

    bfloat16 uses ``1 / (1 + 2 / m)``, ``m = e^x (e^x + 2)`` (one more temporary): the
    float32 form cancels there for ``x < -1`` (15-43 % relative error in bfloat16, 0.3 % so).
    """
    if x.dtype == torch.bfloat16:
        u = x.exp_()
        return u.add(2.0).mul_(u).reciprocal_().mul_(2.0).add_(1.0).reciprocal_()
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


# ------------------------------------------------------------- step embedding


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


# ----------------------------------------------------------------------- MLPs

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


# ------------------------------------------------------------------ noise net


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
