"""Figures for the 2-D BDPO bandit tasks (matplotlib, Agg backend, no display).

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
