"""Figures for the 2-D BDPO bandit tasks (matplotlib, Agg backend, no display).

* :func:`plot_toy2d_samples` — behavior data / actor samples / exact target, side by side.
* :func:`plot_value_landscape` — one heat map per diffusion step (V_N, ..., V_1, and
  Q for step 0), optionally overlaid with the reverse chain's samples x_n.

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
) -> None:
    """One heat map per diffusion step of ``values`` [S, G, G]; writes a PNG to ``path``.

    ``values[s]`` is the value on a grid over ``extent = (xmin, xmax, ymin, ymax)``,
    indexed ``[row = y, col = x]`` with y increasing with the row (as from
    ``np.meshgrid(xs, ys)``). ``steps[s]`` labels panel s (``n = steps[s]``; 0 means
    Q). ``samples[s]`` (optional, [k, 2]) are the chain's x_n drawn on panel s.
    Each panel has its own colour scale (the V_n differ in scale).
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
    fig, axes = plt.subplots(1, num, figsize=(3.3 * num, 3.4), squeeze=False)
    for s, ax in enumerate(axes[0]):
        im = ax.imshow(values[s], origin="lower", extent=extent, cmap="viridis", aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        step = int(steps[s])
        ax.set_title("Q (n = 0)" if step == 0 else f"V_n, n = {step}")
        if samples is not None and samples[s] is not None:
            pts = _points(samples[s], f"samples[{s}]")
            ax.scatter(pts[:, 0], pts[:, 1], s=2, color="white", alpha=0.6, linewidths=0)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)
