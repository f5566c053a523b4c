"""The evaluation of the 2-D BDPO bandit tasks: distances of the actor's samples to the exact target
(:func:`evaluate_toy2d`), the run's 2D outputs (:func:`save_toy2d_outputs`) and their figures
(matplotlib, Agg backend, no display):

* :func:`plot_toy2d_samples` — behavior data / actor samples / exact target, side by side.
* :func:`plot_value_landscape` — one heat map per diffusion step (V_N, ..., V_1, and
  Q for step 0) on one colour scale, optionally overlaid with the reverse chain's samples x_n.

Both write a PNG and close their figure.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> pts = np.random.default_rng(0).normal(size=(50, 2))
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "s.png"
    >>> plot_toy2d_samples(pts, pts, pts, out)
    >>> out.exists()
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from torchrl_bdpo import BDPOLoss, call_network

if TYPE_CHECKING:
    from bdpo_utils import TaskData

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_toy2d_samples", "plot_value_landscape"]

logger = logging.getLogger(__name__)


def _points(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{what} must have shape [n, 2], got {a.shape}")
    return a


def _save(fig: plt.Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    logger.info("saved %s", path)


def plot_toy2d_samples(
    behavior: np.ndarray,
    actor: np.ndarray,
    target: np.ndarray,
    path: str | Path,
    *,
    title: str | None = None,
    lim: float = 4.5,
) -> None:
    """Three scatter panels: behavior data, actor samples, exact target (each [n_i, 2]).

    Equal aspect and identical limits ``[-lim, lim]²`` on all panels; writes a PNG to ``path``.
    """
    panels = [
        ("dataset / behavior", _points(behavior, "behavior"), "tab:gray"),
        ("actor", _points(actor, "actor"), "tab:blue"),
        ("exact target", _points(target, "target"), "tab:red"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharex=True, sharey=True)
    for ax, (name, pts, color) in zip(axes, panels):
        size = float(np.clip(4000.0 / max(len(pts), 1), 0.5, 8.0))
        ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.5, color=color, linewidths=0)
        ax.set_title(f"{name} (n={len(pts)})")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.grid(alpha=0.2)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_value_landscape(
    values: np.ndarray,
    steps: Sequence[int],
    extent: tuple[float, float, float, float],
    path: str | Path,
    *,
    samples: Sequence[np.ndarray] | None = None,
    title: str | None = None,
    shared_scale: bool = True,
) -> None:
    """One heat map per diffusion step of ``values`` [S, G, G]; writes a PNG to ``path``.

    ``values[s]`` is the value on a grid over ``extent = (xmin, xmax, ymin, ymax)``,
    indexed ``[row = y, col = x]`` with y increasing with the row (as from
    ``np.meshgrid(xs, ys)``). ``steps[s]`` labels panel s (``n = steps[s]``; 0 means
    Q). ``samples[s]`` (optional, [k, 2]) are the chain's x_n drawn on panel s as white
    dots. ``shared_scale``: one colour scale and colour bar for all panels (values compare
    across steps); ``False``: one per panel, and the title says so. ``title`` (e.g. the task)
    heads the figure's explanation of the panels.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3 or values.shape[1] != values.shape[2]:
        raise ValueError(f"values must have shape [S, G, G], got {values.shape}")
    num = values.shape[0]
    if len(steps) != num:
        raise ValueError(f"got {len(steps)} steps for {num} value maps")
    if len(extent) != 4:
        raise ValueError(f"extent must be (xmin, xmax, ymin, ymax), got {extent!r}")
    if samples is not None and len(samples) != num:
        raise ValueError(f"got {len(samples)} sample sets for {num} value maps")
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(
        1,
        num,
        figsize=(2.9 * num + 1.0, 3.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for s, ax in enumerate(axes[0]):
        scale = {"vmin": vmin, "vmax": vmax} if shared_scale else {}
        im = ax.imshow(
            values[s], origin="lower", extent=extent, cmap="viridis", aspect="equal", **scale
        )
        if not shared_scale:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        step = int(steps[s])
        ax.set_title("Q(a), n = 0" if step == 0 else f"V_n(a), n = {step}")
        if samples is not None and samples[s] is not None:
            pts = _points(samples[s], f"samples[{s}]")
            ax.scatter(pts[:, 0], pts[:, 1], s=2, color="white", alpha=0.6, linewidths=0)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xlabel("action a[0]")
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("action a[1]")
    if shared_scale:
        bar = fig.colorbar(im, ax=list(axes[0]), shrink=0.8, aspect=15)
        bar.set_label("value (ensemble mean), one scale")
    lines = [
        (f"{title}: " if title else "")
        + "value of an action a along the reverse diffusion chain "
        + "(V_n at step n = N … 1, then Q at n = 0)",
        (
            "white dots: the EMA actor's chain samples x_n at that step (n = 0: its actions)"
            if samples is not None
            else ""
        )
        + (
            ""
            if shared_scale
            else ("; " if samples is not None else "") + "each panel has its own colour scale"
        ),
    ]
    fig.suptitle("\n".join(line for line in lines if line), fontsize=10)
    _save(fig, path)


# ------------------------------------------------------------------ evaluation


@torch.no_grad()
def sample_actions(loss: BDPOLoss, which: str, num: int, obs_dim: int, device) -> torch.Tensor:
    """``num`` stochastic samples of the EMA actor or EMA behavior at the (dummy) 2D state."""
    module = loss.actor_network if which == "actor" else loss.behavior_network
    params = getattr(loss, f"target_{which}_network_params")
    with params.to_module(module, preserve_module_state=False):
        return module.policy.sample(torch.zeros(num, obs_dim, device=device))


def toy2d_reward_fn(dataset: str, points: np.ndarray, rewards: np.ndarray):
    from toy2d import toy2d_reward

    ref = (points[:50_000], rewards[:50_000]) if dataset in ("moons", "2spirals") else None
    return lambda x: toy2d_reward(dataset, x, reference=ref)


@torch.no_grad()
def evaluate_toy2d(
    loss: BDPOLoss, task: TaskData, cfg: DictConfig, device, run_dir: Path | None = None
) -> dict:
    """Distances of actor and behavior data to the exact target, mean rewards, pictures."""
    from distribution_metrics import energy_distance, sliced_wasserstein
    from toy2d import exact_target_samples, target_mean_reward

    num = int(cfg.eval.toy2d_samples)
    eta = float(cfg.loss.eta)
    points = task.data["action"].cpu().numpy()
    rewards = task.data["next", "reward"].squeeze(-1).cpu().numpy()
    target = exact_target_samples(points, rewards, eta, num, seed=int(cfg.seed) + 1)
    rng = np.random.default_rng(int(cfg.seed) + 2)
    behavior_data = points[rng.choice(len(points), num, replace=False)]
    actor = sample_actions(loss, "actor", num, task.obs_dim, device).cpu().numpy()
    reward_fn = toy2d_reward_fn(task.toy2d["dataset"], points, rewards)
    metrics = {
        "energy_distance_actor": energy_distance(actor, target),
        "energy_distance_behavior": energy_distance(behavior_data, target),
        "sliced_wasserstein_actor": sliced_wasserstein(actor, target),
        "sliced_wasserstein_behavior": sliced_wasserstein(behavior_data, target),
        "mean_reward_actor": float(np.mean(reward_fn(actor))),
        "mean_reward_behavior": float(np.mean(rewards)),
        "mean_reward_target": float(target_mean_reward(rewards, eta)),
    }
    if run_dir is not None:
        save_toy2d_outputs(
            loss, task, cfg, device, run_dir, actor, behavior_data, target, points, rewards
        )
    return metrics


def _ensemble_mean(network, params, *inputs: torch.Tensor) -> torch.Tensor:
    """The ensemble mean of a critic ``network`` run with ``params`` on ``inputs``."""
    with params.to_module(network, preserve_module_state=False):
        return call_network(network, network.out_keys[0], *inputs).mean(-1)


def save_toy2d_outputs(
    loss, task, cfg, device, run_dir: Path, actor, behavior_data, target, points, rewards
):
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        run_dir / "samples.npz",
        samples=actor,
        data=points,
        rewards=rewards,
        eta=np.float64(cfg.loss.eta),
    )
    plot_toy2d_samples(behavior_data, actor, target, run_dir / "samples.png", title=task.name)
    big_n = int(cfg.diffusion.num_steps)
    steps = sorted({big_n, (3 * big_n) // 4, big_n // 2, big_n // 4, 1, 0}, reverse=True)
    lim, g = 4.5, 60
    xs = torch.linspace(-lim, lim, g, device=device)
    grid_y, grid_x = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([grid_x, grid_y], -1).reshape(-1, 2)
    obs = torch.zeros(grid.shape[0], task.obs_dim, device=device)
    values = []
    for n in steps:
        if n == 0:  # the EMA networks, through the loss's functional parameters
            val = _ensemble_mean(loss.qvalue_network, loss.target_qvalue_network_params, obs, grid)
        else:
            steps_n = torch.full((grid.shape[0],), n, device=device)
            val = _ensemble_mean(
                loss.value_network, loss.target_value_network_params, obs, grid, steps_n
            )
        values.append(val.reshape(g, g).cpu().numpy())
    with loss.target_actor_network_params.to_module(
        loss.actor_network, preserve_module_state=False
    ):
        chain = loss.actor_network.policy.sample(
            torch.zeros(500, task.obs_dim, device=device), return_chain=True
        )
    samples = [chain.states[n].cpu().numpy() for n in steps]
    plot_value_landscape(
        np.stack(values),
        steps,
        (-lim, lim, -lim, lim),
        run_dir / "value_landscape.png",
        samples=samples,
        title=task.name,
    )
