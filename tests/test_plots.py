"""The run's pictures explain themselves: curves.png from a run directory, the value landscape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))

import plots  # noqa: E402
import toy2d_evaluation  # noqa: E402


def _csv(path: Path, rows: list[tuple[int, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s},{v}\n" for s, v in rows))


def _run_dir(tmp_path: Path, evals_in_csv: bool = True) -> Path:
    scalars = tmp_path / "run" / "logs" / "hopper_seed3" / "scalars"
    _csv(scalars / "pretrain" / "loss_behavior.csv", [(10, 1.0), (20, 0.5)])
    # a resumed run logs update 40 twice: the later value wins
    _csv(scalars / "train" / "loss_qvalue.csv", [(30, 9.0), (40, 5.0), (40, 4.0), (50, 0.5)])
    for n in (2, 1, 10):
        _csv(scalars / "train" / "kl_per_step" / f"{n}.csv", [(30, 0.1 * n), (50, 0.05 * n)])
    if evals_in_csv:
        _csv(scalars / "eval" / "normalized_score_mean.csv", [(40, 10.0), (50, 12.0)])
    summary = {
        "task": "hopper",
        "dataset": "hopper",
        "seed": 3,
        "steps": {"pretrain": 20, "train": 30},
        "evaluations": [
            {"step": 40, "train_step": 20, "return_mean": 100.0, "normalized_score_mean": 10.0},
            {"step": 50, "train_step": 30, "return_mean": 120.0, "normalized_score_mean": None},
        ],
    }
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    return tmp_path / "run"


def test_scalars_are_read_per_update_with_the_last_value_of_a_repeated_update(tmp_path):
    scalars = plots.read_scalars(_run_dir(tmp_path))
    steps, values = scalars["train/loss_qvalue"]
    assert steps.tolist() == [30, 40, 50] and values.tolist() == [9.0, 4.0, 0.5]
    panels = {t: [k for k, *_ in s] for t, s, _ in plots.curve_panels(scalars)}
    assert panels["KL terms"] == [f"train/kl_per_step/{n}" for n in (1, 2, 10)]  # by n
    assert panels["evaluation: normalised score"] == ["eval/normalized_score_mean"]
    assert "evaluation: return" not in panels  # the CSV evaluations are used, not the summary's


def test_evaluations_come_from_the_summary_without_csv_evaluations(tmp_path):
    scalars = plots.read_scalars(_run_dir(tmp_path, evals_in_csv=False))
    assert scalars["eval/return_mean"][1].tolist() == [100.0, 120.0]
    assert scalars["eval/normalized_score_mean"][0].tolist() == [40.0]  # the null one is left out


def test_curves_png_is_regenerable_from_a_run_dir(tmp_path):
    run = _run_dir(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(RECIPES / "plots.py"), str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MPLBACKEND="Agg"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(run / "curves.png")
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_run_dir_is_one_line_and_status_2(tmp_path, capsys, caplog):
    assert plots.main([str(tmp_path / "nope")]) == 2
    assert caplog.messages == [f"no such run directory: {tmp_path / 'nope'}"]
    assert plots.plot_learning_curves(tmp_path) is None  # nothing logged: no picture


@pytest.fixture
def saved_figure(monkeypatch):
    """The figure a toy2d_evaluation function saves, kept open for inspection."""
    figures = []
    monkeypatch.setattr(toy2d_evaluation, "_save", lambda fig, path: figures.append(fig))
    yield figures
    import matplotlib.pyplot as plt

    for fig in figures:
        plt.close(fig)


@pytest.mark.parametrize("shared", [True, False])
def test_value_landscape_explains_panels_dots_and_colour_scale(saved_figure, shared):
    values = np.stack([np.full((8, 8), 1.0), np.full((8, 8), 3.0), np.full((8, 8), 2.0)])
    dots = [np.zeros((5, 2))] * 3
    toy2d_evaluation.plot_value_landscape(
        values,
        [4, 1, 0],
        (-4, 4, -4, 4),
        "unused.png",
        samples=dots,
        title="toy",
        shared_scale=shared,
    )
    (fig,) = saved_figure
    title = fig._suptitle.get_text()
    assert title.startswith("toy: ") and "V_n" in title and "white dots" in title
    panels, bars = fig.axes[:3], fig.axes[3:]
    assert [ax.get_title() for ax in panels] == ["V_n(a), n = 4", "V_n(a), n = 1", "Q(a), n = 0"]
    assert all(ax.get_xlabel() == "action a[0]" for ax in panels)
    assert panels[0].get_ylabel() == "action a[1]" and len(panels[0].get_yticks()) > 1
    limits = {ax.images[0].get_clim() for ax in panels}
    if shared:  # one scale: every panel maps the same values to the same colours, one bar
        assert limits == {(1.0, 3.0)} and len(bars) == 1
    else:
        assert len(limits) == 3 and len(bars) == 3
        assert "each panel has its own colour scale" in title
