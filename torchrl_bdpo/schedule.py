"""The variance-preserving (VP) noise schedule of BDPO's diffusion models."""

from __future__ import annotations

import torch
from torch import nn


class VPSchedule(nn.Module):
    r"""Discretised VP-SDE schedule with ``num_steps`` diffusion steps.

    .. math::
        \beta_n = 1 - \exp\left(-\frac{b_{min}}{N} - \frac{1}{2}(b_{max} - b_{min})\frac{2n - 1}{N^2}\right),
        \quad n = 1..N

    Every buffer has length ``N + 1`` and is indexed by the step ``n``; index 0
    is the clean action (``beta[0] = 0``, ``alpha_bar[0] = 1``, ``kl_weight[0] = 0``).

    Buffers:
        betas, alphas, alpha_bars: the forward-process coefficients.
        sigmas: the reverse-kernel standard deviation, ``sqrt(beta_n)`` (the
            authors' choice; ``sigmas[1]`` is used only for the KL weight, no
            noise is added at the last reverse step).
        kl_weights: ``w_n = beta_n / (2 (1 - beta_n) (1 - alpha_bar_n))``, so that
            the KL between two reverse kernels with noise predictions ``e1`` and
            ``e2`` is ``w_n * ||e1 - e2||^2``.

    Args:
        num_steps (int): the number of diffusion steps ``N`` (>= 1).
        beta_min (float): ``b_min``. Defaults to 0.1.
        beta_max (float): ``b_max``. Defaults to 10.0.

    Examples:
        >>> s = VPSchedule(5)
        >>> [round(b, 4) for b in s.betas[1:].tolist()]
        [0.1959, 0.4588, 0.6358, 0.7549, 0.835]
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    sigmas: torch.Tensor
    kl_weights: torch.Tensor

    def __init__(self, num_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> None:
        super().__init__()
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}.")
        if not (0.0 < beta_min <= beta_max):
            raise ValueError(
                f"Expected 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}."
            )
        self.num_steps = num_steps
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        n = torch.arange(1, num_steps + 1, dtype=torch.float64)
        big_n = float(num_steps)
        betas = 1.0 - torch.exp(
            -beta_min / big_n - 0.5 * (beta_max - beta_min) * (2.0 * n - 1.0) / big_n**2
        )
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, 0)
        kl_weights = torch.zeros_like(betas)
        kl_weights[1:] = betas[1:] / (2.0 * alphas[1:] * (1.0 - alpha_bars[1:]))
        for name, value in (
            ("betas", betas),
            ("alphas", alphas),
            ("alpha_bars", alpha_bars),
            ("sigmas", betas.sqrt()),
            ("kl_weights", kl_weights),
        ):
            self.register_buffer(name, value.float(), persistent=False)
        # Per-step reverse-kernel coefficients as Python floats (float64), for chains
        # whose step is a Python int: no tensor indexing on the sampling path.
        a, ab = alphas.tolist(), alpha_bars.tolist()
        self.step_coefficients = [None] + [
            {
                "inv_sqrt_alpha": a[k] ** -0.5,
                "eps_coef": betas[k].item() / ((1.0 - ab[k]) ** 0.5 * a[k] ** 0.5),
                "sqrt_one_minus_abar": (1.0 - ab[k]) ** 0.5,
                "inv_sqrt_abar": ab[k] ** -0.5,
                "x0_coef": ab[k - 1] ** 0.5 * betas[k].item() / (1.0 - ab[k]),
                "xt_coef": a[k] ** 0.5 * (1.0 - ab[k - 1]) / (1.0 - ab[k]),
                "sigma": betas[k].item() ** 0.5 if k > 1 else 0.0,
                "kl_weight": kl_weights[k].item(),
            }
            for k in range(1, num_steps + 1)
        ]

    def q_sample(
        self, x0: torch.Tensor, n: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward-noises clean actions: ``x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps``.

        Args:
            x0 (Tensor): clean actions, shape ``[*batch, A]``.
            n (Tensor): integer steps in ``1..N``, shape ``[*batch]``.
            noise (Tensor, optional): ``eps`` with the shape of ``x0``; drawn if omitted.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        abar = self.alpha_bars[n].unsqueeze(-1)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def sample_steps(self, shape: torch.Size | tuple[int, ...], device=None) -> torch.Tensor:
        """Draws steps ``n ~ U{1..N}`` of the given shape (int64)."""
        return torch.randint(1, self.num_steps + 1, tuple(shape), device=device)

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, beta_min={self.beta_min}, beta_max={self.beta_max}"
