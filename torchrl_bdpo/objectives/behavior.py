"""Behavior-diffusion pre-training: the epsilon-prediction MSE as a TorchRL LossModule."""

from __future__ import annotations

from typing import Literal

import torch

from torchrl_bdpo.modules.actor import DiffusionSampler


def noise_prediction_error(
    policy: DiffusionSampler,
    obs: torch.Tensor,
    action: torch.Tensor,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """``(eps(x_n, n, s) - eps)^2`` reduced over action dims at a random step per sample.

    ``n ~ U{1..N}``, ``x_n = sqrt(abar_n) a + sqrt(1 - abar_n) eps``.

    Args:
        obs (Tensor): ``[B, O]``; action (Tensor): ``[B, A]``.
        reduction ("mean" | "sum"): over the action dims: ``"mean"`` (the authors' code)
            or ``"sum"`` (``||.||^2``, the paper's notation; ``A`` times larger).

    Returns:
        Tensor ``[B]``.
    """
    n = policy.schedule.sample_steps(action.shape[:-1], device=action.device)
    noise = torch.randn_like(action)
    x_n = policy.schedule.q_sample(action, n, noise)
    # eager: the step MLP runs on the N + 1 possible steps, not on every row (inductor
    # fuses the per-row MLP better than the gather's scatter-add backward)
    table = (
        None
        if torch.compiler.is_compiling()
        else policy.step_feature_table(action.device, action.dtype)
    )
    features = None if table is None else table[n]
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' (got {reduction!r}).")
    err = (policy.predict_noise(obs, x_n, n, step_features=features) - noise).pow(2)
    return err.mean(-1) if reduction == "mean" else err.sum(-1)
