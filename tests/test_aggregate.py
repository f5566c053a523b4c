"""Tests for ``recipes/aggregate_results.py`` on fake Hydra sweeps (no torch, no training)."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _load():
    path = Path(__file__).resolve().parents[1] / "recipes" / "aggregate_results.py"
    spec = importlib.util.spec_from_file_location("aggregate_results", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


agg = _load()

# task -> (domain, number of seeds); values are drawn in the fixture and kept for the checks.
TASKS = {
    "hopper-medium-v2": ("locomotion", 3),
    "walker2d-medium-v2": ("locomotion", 3),
    "antmaze-umaze-v0": ("antmaze", 2),
    "antmaze-large-play-v0": ("antmaze", 3),
}


def _eval_entry(step: int, norm: float | None, ret: float) -> dict:
    return {
        "step": step,
        "return_mean": ret,
        "return_std": 1.0,
        "normalized_score_mean": norm,
        "normalized_score_std": None if norm is None else 0.5,
        "episodes": 10,
    }


def _summary(task: str, domain: str, seed: int, final: float, best: float) -> dict:
    return {
        "task": task,
        "domain": domain,
        "seed": seed,
        "settings": {"task_name": task, "loss.eta": 0.2},
        "steps": {"pretrain": 100, "train": 100},
        "wall_time_s": 1.0,
        "updates_per_s": {"pretrain": 100.0, "train": 10.0},
        "eval": {
            "final": _eval_entry(100, final, 30 * final),
            "best": _eval_entry(50, best, 30 * best),
        },
        "toy2d": None,
    }


def _job(root: Path, n: int, summary: dict | None, raw: str | None = None) -> Path:
    """A Hydra-like job dir ``root/<n>`` with ``.hydra/`` and (optionally) ``summary.json``."""
    d = root / str(n)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text("seed: 0\n")
    if raw is not None:
        (d / "summary.json").write_text(raw)
    elif summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


TOY_KEYS = (
    "energy_distance_actor",
    "energy_distance_behavior",
    "sliced_wasserstein_actor",
    "sliced_wasserstein_behavior",
    "mean_reward_actor",
    "mean_reward_behavior",
    "mean_reward_target",
)


@pytest.fixture()
def sweeps(tmp_path: Path) -> dict:
    """Two sweep roots (``multirun/<date>/<time>/<job>``) plus the values written."""
    rng = np.random.default_rng(0)
    expected: dict[str, dict] = {}
    roots = [
        tmp_path / "multirun" / "2025-01-01" / "10-00-00",
        tmp_path / "multirun" / "2025-01-02" / "11-30-00",
    ]
    for r in roots:
        r.mkdir(parents=True)
        (r / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for task, (domain, n_seeds) in TASKS.items():
        finals = rng.uniform(40, 100, n_seeds)
        bests = finals + rng.uniform(0, 10, n_seeds)
        expected[task] = {"domain": domain, "final": finals, "best": bests}
        for seed in range(n_seeds):
            root = roots[job % 2]
            _job(root, job, _summary(task, domain, seed, float(finals[seed]), float(bests[seed])))
            job += 1
    # a toy2d task without eval
    toy = rng.uniform(0, 1, (3, len(TOY_KEYS)))
    expected["toy-moons"] = {"domain": "toy2d", "toy": toy}
    for seed in range(3):
        s = _summary("toy-moons", "toy2d", seed, 0.0, 0.0)
        s["eval"] = None
        s["toy2d"] = dict(zip(TOY_KEYS, map(float, toy[seed])))
        _job(roots[1], job, s)
        job += 1
    # a crashed run without summary.json
    crashed = _job(roots[0], job, None)
    return {"roots": roots, "base": tmp_path / "multirun", "expected": expected, "crashed": crashed}


def test_find_skips_run_without_summary(sweeps: dict, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        files = agg.find_summaries([sweeps["base"]])
    n_runs = sum(n for _, n in TASKS.values()) + 3
    assert len(files) == n_runs
    assert all(f.name == "summary.json" for f in files)
    assert str(sweeps["crashed"]) in caplog.text
    # passing overlapping paths does not duplicate files
    assert agg.find_summaries([sweeps["base"], *sweeps["roots"]]) == files
    with pytest.raises(FileNotFoundError, match="nope"):
        agg.find_summaries([sweeps["base"] / "nope"])


def test_aggregate_stats_match_numpy(sweeps: dict) -> None:
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries(sweeps["roots"])))
    exp = sweeps["expected"]
    by = {r.task: r for r in rows}
    assert set(by) == set(exp)
    for task, (domain, n) in TASKS.items():
        r = by[task]
        assert (r.domain, r.seeds, r.metric) == (domain, n, "normalized_score")
        f, b = exp[task]["final"], exp[task]["best"]
        assert r.final_mean == pytest.approx(np.mean(f))
        assert r.final_std == pytest.approx(np.std(f, ddof=1))
        assert r.best_mean == pytest.approx(np.mean(b))
        assert r.best_std == pytest.approx(np.std(b, ddof=1))
    toy = by["toy-moons"]
    assert toy.seeds == 3 and math.isnan(toy.final_mean)
    for j, k in enumerate(TOY_KEYS):
        m, s = toy.toy2d[k]
        assert m == pytest.approx(exp["toy-moons"]["toy"][:, j].mean())
        assert s == pytest.approx(exp["toy-moons"]["toy"][:, j].std(ddof=1))
    # sorted by domain (locomotion, antmaze, ..., toy2d) then name
    assert [r.task for r in rows] == [
        "hopper-medium-v2",
        "walker2d-medium-v2",
        "antmaze-large-play-v0",
        "antmaze-umaze-v0",
        "toy-moons",
    ]


def test_domain_sums(sweeps: dict) -> None:
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries([sweeps["base"]])))
    sums = agg.domain_sums(rows)
    exp = sweeps["expected"]
    assert set(sums) == {"locomotion", "antmaze"}
    for domain in ("locomotion", "antmaze"):
        tasks = [t for t, (d, _) in TASKS.items() if d == domain]
        assert sums[domain]["tasks"] == len(tasks)
        assert sums[domain]["final"] == pytest.approx(sum(np.mean(exp[t]["final"]) for t in tasks))
        assert sums[domain]["best"] == pytest.approx(sum(np.mean(exp[t]["best"]) for t in tasks))


def test_markdown_rows(sweeps: dict) -> None:
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries([sweeps["base"]])))
    md = agg.to_markdown(rows)
    exp = sweeps["expected"]
    f = exp["hopper-medium-v2"]["final"]
    b = exp["hopper-medium-v2"]["best"]
    line = (
        f"| hopper-medium-v2 | locomotion | 3 | {np.mean(f):.1f} ± {np.std(f, ddof=1):.1f} | "
        f"{np.mean(b):.1f} ± {np.std(b, ddof=1):.1f} |"
    )
    assert line in md
    assert "ddof=1" in md
    loco = sum(np.mean(exp[t]["final"]) for t in ("hopper-medium-v2", "walker2d-medium-v2"))
    assert f"| **locomotion sum** | locomotion | 2 tasks | {loco:.1f} |" in md
    assert "| **antmaze sum** | antmaze | 2 tasks |" in md
    # the sum row closes its domain block
    lines = md.splitlines()
    assert lines.index(line) < lines.index(next(x for x in lines if "locomotion sum" in x))
    assert lines.index(next(x for x in lines if "locomotion sum" in x)) < lines.index(
        next(x for x in lines if x.startswith("| antmaze-large-play-v0"))
    )
    # toy2d in its own table, not in the RL table
    assert "## Toy 2-D tasks" in md
    toy = exp["toy-moons"]["toy"]
    assert f"| toy-moons | 3 | {toy[:, 0].mean():.4f} ± {toy[:, 0].std(ddof=1):.4f} |" in md
    rl_table = md.split("## Toy 2-D tasks")[0]
    assert "toy-moons" not in rl_table


def test_single_seed_and_raw_return(tmp_path: Path) -> None:
    s = _summary("pen-human", "custom", 0, 0.0, 0.0)
    for e in s["eval"].values():
        e["normalized_score_mean"] = None
    s["eval"]["final"]["return_mean"] = 1234.5
    _job(tmp_path, 0, s)
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries([tmp_path])))
    (r,) = rows
    assert r.metric == "return" and r.seeds == 1
    assert r.final_mean == 1234.5 and math.isnan(r.final_std)
    md = agg.to_markdown(rows)
    assert "| pen-human † | custom | 1 | 1234.5 ± n/a |" in md
    assert "**" not in md  # no sum row for the custom domain


def test_csv_round_trip(sweeps: dict, tmp_path: Path) -> None:
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries([sweeps["base"]])))
    path = tmp_path / "out" / "table.csv"
    agg.to_csv(rows, path)
    with path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0].keys()) == list(agg.CSV_COLUMNS)
    assert [d["task"] for d in read] == [r.task for r in rows]

    def num(x: str) -> float:
        return float(x) if x else float("nan")

    for d, r in zip(read, rows):
        assert d["domain"] == r.domain and int(d["seeds"]) == r.seeds
        for col in ("final_mean", "final_std", "best_mean", "best_std"):
            v = getattr(r, col)
            assert (math.isnan(v) and d[col] == "") or num(d[col]) == v
        for key in TOY_KEYS:
            m, s = r.toy2d.get(key, (float("nan"), float("nan")))
            for v, col in ((m, f"{key}_mean"), (s, f"{key}_std")):
                assert (math.isnan(v) and d[col] == "") or num(d[col]) == v
    toy = next(d for d in read if d["task"] == "toy-moons")
    assert toy["energy_distance_actor_mean"] != ""


def test_malformed_json_names_file(tmp_path: Path) -> None:
    bad = _job(tmp_path, 0, None, raw='{"task": "hopper", ') / "summary.json"
    with pytest.raises(ValueError, match="malformed") as exc:
        agg.load_summaries(agg.find_summaries([tmp_path]))
    assert str(bad.resolve()) in str(exc.value)
    (bad.parent / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="task"):
        agg.load_summaries([bad])


def test_collector_summaries_in_the_tree_are_skipped(sweeps: dict, caplog) -> None:
    """The dataset collector's runs default to runs/collect/...: aggregating runs/ skips them."""
    expected = agg.aggregate(agg.load_summaries(agg.find_summaries([sweeps["base"]])))
    collector = Path(sweeps["base"]) / "collect" / "Hopper-v5_seed0"
    collector.mkdir(parents=True)
    (collector / "summary.json").write_text(json.dumps({"env_id": "Hopper-v5", "datasets": {}}))
    with caplog.at_level("WARNING"):
        rows = agg.aggregate(agg.load_summaries(agg.find_summaries([sweeps["base"]])))
    assert rows == expected
    assert "dataset collector's summary" in caplog.text


def test_main_writes_outputs(sweeps: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prefix = tmp_path / "res" / "table"
    assert agg.main([str(sweeps["base"]), "--out", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "res" / "table.md").read_text()
    assert "hopper-medium-v2" in out
    assert (tmp_path / "res" / "table.csv").exists()
    # a malformed file makes main fail cleanly
    _job(tmp_path / "bad", 0, None, raw="not json")
    assert agg.main([str(tmp_path / "bad")]) == 1


def test_missing_directory_is_one_line_and_status_2(sweeps: dict, tmp_path: Path, capsys) -> None:
    script = Path(agg.__file__)
    proc = subprocess.run(
        [sys.executable, str(script), str(sweeps["base"]), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"ERROR: no such directory: {tmp_path / 'nope'}"
    assert proc.stdout == ""


def test_a_repeated_seed_is_counted_as_a_run_and_said_in_the_table(tmp_path: Path, caplog) -> None:
    root = tmp_path / "multirun"
    for job, (seed, final) in enumerate([(0, 50.0), (0, 54.0), (1, 70.0)]):
        _job(root, job, _summary("hopper-medium-v2", "locomotion", seed, final, final + 1))
    with caplog.at_level(logging.WARNING):
        (row,) = agg.aggregate(agg.load_summaries(agg.find_summaries([root])))
    assert (row.seeds, row.runs, row.final_mean) == (2, 3, 58.0)
    assert "seeds [0] appear in more than one run" in caplog.text
    assert "| hopper-medium-v2 | locomotion | 2 (3 runs: seed 0 ×2) | 58.0" in agg.to_markdown(
        [row]
    )
    agg.to_csv([row], tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        (line,) = list(csv.DictReader(f))
    assert (line["seeds"], line["runs"]) == ("2", "3")


def test_runs_without_an_evaluation_are_counted_apart_from_the_scored_ones(tmp_path: Path):
    """The Seeds cell says how many runs the means come from; a domain sum over a task with no
    score at all is n/a, not nan."""
    root = tmp_path / "multirun"
    for job, final in enumerate([50.0, 54.0, 70.0]):
        _job(root, job, _summary("hopper-medium-v2", "locomotion", job, final, final + 1))
    unevaluated = _summary("hopper-medium-v2", "locomotion", 3, 0.0, 0.0)
    unevaluated["eval"] = None
    _job(root, 3, unevaluated)
    for job, seed in ((4, 0), (5, 1)):
        maze = _summary("antmaze-umaze-v0", "antmaze", seed, 0.0, 0.0)
        maze["eval"] = None
        _job(root, job, maze)
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries([root])))
    hopper = next(r for r in rows if r.task == "hopper-medium-v2")
    assert (hopper.seeds, hopper.runs, hopper.scored, hopper.final_mean) == (4, 4, 3, 58.0)
    table = agg.to_markdown(rows)
    assert "| hopper-medium-v2 | locomotion | 4 (3 scored) | 58.0" in table
    assert "| antmaze-umaze-v0 | antmaze | 2 (0 scored) | n/a | n/a |" in table
    assert "| **antmaze sum** | antmaze | 1 task | n/a | n/a |" in table
    agg.to_csv(rows, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        line = next(r for r in csv.DictReader(f) if r["task"] == "hopper-medium-v2")
    assert (line["seeds"], line["runs"], line["scored"]) == ("4", "4", "3")


def test_sweep_report_points_at_results_and_names_jobs_without_summary(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(agg.__file__).parent))
    from bdpo_callbacks import AGGREGATE_SCRIPT, sweep_report

    root = tmp_path / "multirun" / "2026-01-01_10-00-00"
    _job(root, 0, _summary("hopper-medium-v2", "locomotion", 0, 50.0, 51.0))
    _job(root, 1, None)  # crashed: .hydra but no summary
    monkeypatch.chdir(tmp_path)
    lines = sweep_report(root)
    shown = "multirun/2026-01-01_10-00-00"
    assert lines[0] == f"Sweep finished: 1 of 2 jobs wrote a summary.json under {shown}"
    assert lines[1] == f"  no summary.json (failed or interrupted): {shown}/1"
    assert lines[2].startswith(
        f"Aggregate them: python {AGGREGATE_SCRIPT} {shown} --out {shown}/results"
    )


def test_sweep_report_names_failed_jobs_by_their_own_overrides(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(agg.__file__).parent))
    from bdpo_callbacks import failed_jobs, record_failed_job, sweep_report

    root = tmp_path / "multirun" / "s"
    _job(root, 0, _summary("hopper-medium-v2", "locomotion", 0, 50.0, 51.0))
    shared = ["task=hopper-medium-v2,walker2d-medium-v2", "threads=1"]
    record_failed_job(
        root, 2, ["task=walker2d-medium-v2", "threads=1", "seed=1"], root / "2", 2, "No data\nmore"
    )
    record_failed_job(root, 1, ["task=hopper-medium-v2", "threads=1"], root / "1", 3, "NaN")
    assert [r["job"] for r in failed_jobs(root)] == [1, 2]
    monkeypatch.chdir(tmp_path)
    lines = sweep_report(root, shared)
    assert lines[0] == "Sweep finished: 1 of 3 jobs wrote a summary.json under multirun/s"
    assert lines[1] == "  job 1 failed (exit 3): task=hopper-medium-v2: NaN"
    assert lines[2] == "  job 2 failed (exit 2): task=walker2d-medium-v2 seed=1: No data"
    assert lines[3].startswith("Aggregate them:")


def test_sweep_report_with_a_relative_sweep_dir_counts_each_job_once(tmp_path, monkeypatch):
    """Hydra's default sweep dir is relative while a job records its absolute run dir; a job
    that failed after its start (it has .hydra/) is one job, listed once; a record of a job
    that has a summary by now (the sweep run again) is no failure."""
    sys.path.insert(0, str(Path(agg.__file__).parent))
    from bdpo_callbacks import record_failed_job, sweep_report

    monkeypatch.chdir(tmp_path)
    root = Path("multirun") / "s"
    _job(root, 0, _summary("hopper-medium-v2", "locomotion", 0, 50.0, 51.0))
    crashed = _job(root, 1, None)
    record_failed_job(root, 1, ["seed=1"], crashed.resolve(), 3, "non-finite loss")
    record_failed_job(root, 0, ["seed=0"], (tmp_path / root / "0"), 1, "disk full, then rerun")
    lines = sweep_report(root)
    assert lines[0] == "Sweep finished: 1 of 2 jobs wrote a summary.json under multirun/s"
    assert lines[1] == "  job 1 failed (exit 3): seed=1: non-finite loss"
    assert lines[2].startswith("Aggregate them:")


def test_runs_with_other_settings_form_labelled_rows(tmp_path: Path, caplog) -> None:
    """An eta sweep is not averaged into one row; the seed never splits a group."""
    root = tmp_path / "multirun"
    job = 0
    finals = {0.1: [50.0, 52.0], 0.2: [70.0, 74.0]}
    for eta, values in finals.items():
        for seed, final in enumerate(values):
            s = _summary("hopper-medium-v2", "locomotion", seed, final, final + 1)
            s["settings"] = {"task_name": "hopper-medium-v2", "loss.eta": eta, "loss.rho": 2.0}
            _job(root, job, s)
            job += 1
    with caplog.at_level(logging.WARNING):
        rows = agg.aggregate(agg.load_summaries(agg.find_summaries([root])))
    assert [r.label for r in rows] == [
        "hopper-medium-v2 [loss.eta=0.1]",
        "hopper-medium-v2 [loss.eta=0.2]",
    ]
    assert [r.seeds for r in rows] == [2, 2]
    assert [r.final_mean for r in rows] == [51.0, 72.0]
    assert agg.domain_sums(rows) == {} and "no locomotion sum" in caplog.text
    assert "hopper-medium-v2 [loss.eta=0.2] | locomotion | 2 | 72.0" in agg.to_markdown(rows)


def test_absent_and_null_settings_are_different_variants(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    for job, settings in enumerate([{"a": None}, {}, {"a": None}, {"a": 1}, {"a": "1"}]):
        s = _summary("walker2d-medium-v2", "locomotion", job, 60.0 + job, 61.0 + job)
        s["settings"] = settings
        _job(root, job, s)
    rows = agg.aggregate(agg.load_summaries(agg.find_summaries([root])))
    assert sorted((r.variant, r.seeds) for r in rows) == [
        ('a="1"', 1),
        ("a=1", 1),
        ("a=<absent>", 1),
        ("a=null", 2),
    ]
