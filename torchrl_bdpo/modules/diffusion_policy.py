"""The reverse diffusion chain of a noise-prediction policy (plain ``nn.Module``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from torchrl_bdpo.schedule import VPSchedule


class DiffusionChain(NamedTuple):
    """A sampled reverse path.

    Attributes:
        action (Tensor): ``x_0``, shape ``[*batch, A]``.
        states (Tensor): ``x_n`` for ``n = 0..N`` stacked on a leading axis,
            shape ``[N + 1, *batch, A]`` (``states[n]`` is ``x_n``).
        noise_preds (Tensor): the noise prediction made at each step ``n = 1..N``,
            shape ``[N, *batch, A]`` (``noise_preds[n - 1]`` was made at ``x_n``).
    """

    action: torch.Tensor
    states: torch.Tensor
    noise_preds: torch.Tensor


class DiffusionPolicy(nn.Module):
    r"""A state-conditioned diffusion model over actions (VP schedule, noise prediction).

    Reverse kernel ``p(x_{n-1} | x_n) = N(mu(x_n, n, s), sigma_n^2 I)`` with
    ``sigma_n^2 = beta_n``, and no noise at the last step (``n = 1``). The mean is
    computed from the predicted clean action ``x0_hat = (x_n - sqrt(1 - abar_n) eps) /
    sqrt(abar_n)``, clipped to ``[action_low, action_high]`` when ``clip_sample`` is on:

    .. math::
        \mu = \frac{\sqrt{\bar\alpha_{n-1}}\,\beta_n\,\hat x_0 + \sqrt{\alpha_n}(1 - \bar\alpha_{n-1}) x_n}{1 - \bar\alpha_n}

    which, without clipping, equals ``(x_n - beta_n / sqrt(1 - abar_n) eps) / sqrt(alpha_n)``.

    Args:
        noise_net (nn.Module): ``eps(x, n, obs)``, e.g. :class:`~torchrl_bdpo.NoiseNet`.
        schedule (VPSchedule): the noise schedule.
        clip_sample (bool): clip ``x0_hat`` to the action box. Defaults to ``True``.
        action_low, action_high (float or Tensor): the action box. Defaults to ``-1, 1``.

    Examples:
        >>> from torchrl_bdpo import NoiseNet, VPSchedule
        >>> policy = DiffusionPolicy(NoiseNet(3, 2, hidden_sizes=(16,)), VPSchedule(5))
        >>> chain = policy.sample(torch.randn(4, 3), return_chain=True)
        >>> chain.states.shape, chain.noise_preds.shape
        (torch.Size([6, 4, 2]), torch.Size([5, 4, 2]))
    """

    action_low: torch.Tensor
    action_high: torch.Tensor

    def __init__(
        self,
        noise_net: nn.Module,
        schedule: VPSchedule,
        *,
        clip_sample: bool = True,
        action_low: float | torch.Tensor = -1.0,
        action_high: float | torch.Tensor = 1.0,
    ) -> None:
        super().__init__()
        self.noise_net = noise_net
        self.schedule = schedule
        self.clip_sample = clip_sample
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        if (low >= high).any():
            raise ValueError(f"action_low must be below action_high, got {low} and {high}.")
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", high, persistent=False)

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def action_dim(self) -> int:
        return self.noise_net.action_dim

    def predict_noise(
        self,
        obs: torch.Tensor,
        x: torch.Tensor,
        n: torch.Tensor | int,
        *,
        step_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``eps(x_n, n, s)`` in ``x``'s dtype; ``n`` is an integer tensor broadcastable to ``x.shape[:-1]``
        or an int."""
        if isinstance(n, int):
            n = torch.full(x.shape[:-1], n, dtype=torch.long, device=x.device)
        if step_features is None:
            eps = self.noise_net(x, n, obs)
        else:
            eps = self.noise_net(x, n, obs, step_features=step_features)
        return eps.to(x.dtype)  # in x's dtype under bfloat16 autocast too (a no-op otherwise)

    def step_feature_table(
        self, device=None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor | None:
        """The noise net's step features for ``n = 0..N`` (``[N + 1, F]``, in ``dtype``), if it
        exposes them.

        Computed once per chain so that each reverse step skips the step MLP.
        """
        if not hasattr(self.noise_net, "step_features"):
            return None
        steps = torch.arange(self.num_steps + 1, device=device)
        return self.noise_net.step_features(steps, dtype)

    def reverse_mean(
        self, x: torch.Tensor, n: torch.Tensor | int, eps: torch.Tensor, clip: bool | None = None
    ) -> torch.Tensor:
        """The mean ``mu(x_n, n)`` of the reverse kernel given the noise prediction ``eps``."""
        clip = self.clip_sample if clip is None else clip
        if isinstance(n, int):  # one step for the whole batch: Python-float coefficients
            c = self.schedule.step_coefficients[n]
            if not clip:
                return x * c["inv_sqrt_alpha"] - eps * c["eps_coef"]
            x0 = (x - eps * c["sqrt_one_minus_abar"]) * c["inv_sqrt_abar"]
            x0 = torch.maximum(torch.minimum(x0, self.action_high), self.action_low)
            return x0 * c["x0_coef"] + x * c["xt_coef"]
        s = self.schedule
        beta, alpha = s.betas[n].unsqueeze(-1), s.alphas[n].unsqueeze(-1)
        abar = s.alpha_bars[n].unsqueeze(-1)
        if not clip:
            return (x - beta / (1.0 - abar).sqrt() * eps) / alpha.sqrt()
        abar_prev = s.alpha_bars[n - 1].unsqueeze(-1)
        x0 = (x - (1.0 - abar).sqrt() * eps) / abar.sqrt()
        x0 = torch.maximum(torch.minimum(x0, self.action_high), self.action_low)
        return (abar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1.0 - abar_prev) * x) / (1.0 - abar)

    def reverse_step(
        self,
        obs: torch.Tensor,
        x: torch.Tensor,
        n: torch.Tensor | int,
        *,
        noise: torch.Tensor | None = None,
        clip: bool | None = None,
        step_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reparameterised reverse step ``x_{n-1} = mu + sigma_n z`` (``z = 0`` where ``n = 1``).

        Args:
            obs (Tensor): ``[*batch, O]``.
            x (Tensor): ``x_n``, ``[*batch, A]``.
            n (Tensor or int): integer steps in ``1..N``, broadcastable to ``[*batch]``, or
                one int for the whole batch (the fast path of full chains: no noise is
                drawn at ``n = 1``).
            noise (Tensor, optional): ``z``, shape of ``x``; drawn if omitted.
                Pass zeros for a deterministic step.
            step_features (Tensor, optional): precomputed step features for ``n``
                (see :meth:`step_feature_table`).

        Returns:
            ``(x_{n-1}, eps)``, both ``[*batch, A]``.
        """
        if isinstance(n, int):
            eps = self.predict_noise(obs, x, n, step_features=step_features)
            mean = self.reverse_mean(x, n, eps, clip)
            sigma = self.schedule.step_coefficients[n]["sigma"]
            if sigma == 0.0:
                return mean, eps
            if noise is None:
                noise = torch.randn_like(mean)
            return mean + noise * sigma, eps
        n = torch.as_tensor(n, device=x.device).expand(x.shape[:-1])
        eps = self.predict_noise(obs, x, n)
        mean = self.reverse_mean(x, n, eps, clip)
        if noise is None:
            noise = torch.randn_like(mean)
        sigma = torch.where(n > 1, self.schedule.sigmas[n], 0.0).unsqueeze(-1)
        return mean + sigma * noise, eps

    def sample(
        self,
        obs: torch.Tensor,
        *,
        deterministic: bool = False,
        return_chain: bool = False,
        clip: bool | None = None,
        on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> torch.Tensor | DiffusionChain:
        """Runs the full reverse chain from ``x_N ~ N(0, I)`` (``x_N = 0`` and no noise if deterministic).

        Args:
            obs (Tensor): ``[*batch, O]``.
            on_step (callable, optional): called as ``on_step(n, x_n, eps_n)`` at each step
                ``n = N..1`` with the state the noise was predicted at and the prediction
                (e.g. to evaluate another model on the same path).

        Returns:
            ``x_0`` of shape ``[*batch, A]``, or a :class:`DiffusionChain` if ``return_chain``.
        """
        shape = (*obs.shape[:-1], self.action_dim)
        x = (
            obs.new_zeros(shape)
            if deterministic
            else torch.randn(shape, device=obs.device, dtype=obs.dtype)
        )
        table = self.step_feature_table(obs.device, obs.dtype)
        states, preds = [x], []
        for step in range(self.num_steps, 0, -1):
            noise = torch.zeros_like(x) if deterministic and step > 1 else None
            x_prev, eps = self.reverse_step(
                obs,
                x,
                step,
                noise=noise,
                clip=clip,
                step_features=None if table is None else table[step],
            )
            if on_step is not None:
                on_step(step, x, eps)
            x = x_prev
            if return_chain:
                states.append(x)
                preds.append(eps)
        if not return_chain:
            return x
        # states were appended as x_N, ..., x_0: flip so that states[n] is x_n
        return DiffusionChain(
            action=x,
            states=torch.stack(states[::-1], 0),
            noise_preds=torch.stack(preds[::-1], 0),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.sample(obs)
