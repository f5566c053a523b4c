"""Smoke test of benchmarks/offline_baselines.py: BDPO, BC, IQL and TD3+BC on a tiny dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = pytest.mark.slow  # trains four methods and rolls out Hopper (~15 s)


def test_offline_baselines_quick(tmp_path, minari_hopper_dataset):
    import offline_baselines

    out = tmp_path / "bench"
    report = offline_baselines.main(
        [
            "--quick",
            "--tasks",
            "custom",
            "--config-set",
            f"data.name={minari_hopper_dataset}",
            "--out",
            str(out),
        ]
    )
    agg = report["aggregate"]["custom"]
    assert set(agg) == {"bdpo", "bc", "iql", "td3bc"}
    seed_runs = report["per_seed"]["custom"][0]
    for m in ("iql", "td3bc"):  # evaluated every 10 of 40 steps
        assert [c[0] for c in seed_runs[m]["curve"]] == [10, 20, 30, 40]
    for m in ("bdpo", "bc"):  # 20 pre-training steps, then evaluations every 10 training steps
        assert [c[0] for c in seed_runs[m]["curve"]] == [30, 40]
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["steps"] == 40
    assert (out / "curves.png").stat().st_size > 0
    table = (out / "table.md").read_text()
    assert "TD3+BC" in table and "IQL" in table
    # The critic-ranking check runs on the finished BDPO run (rebuilt MuJoCo states included).
    import critic_ranking_check

    run_dir = seed_runs["bdpo"]["run_dir"]
    check = critic_ranking_check.main(
        [
            run_dir,
            "--states",
            "3",
            "--candidates",
            "4",
            "--rollouts",
            "2",
            "--horizon",
            "5",
            "--episodes-rules",
            "--json",
            str(tmp_path / "ranking.json"),
        ]
    )
    summary = check["summary"]
    assert summary["reconstruction_max_abs_error_median"] < 1e-4
    for name in ("spearman_q_g", "spearman_q_r0", "split_half_spearman_g"):
        assert all(
            -1 <= v <= 1 for v in check["per_state"][name] if v == v
        )  # nan: a constant ranking
    assert 0 <= summary["fall_rate_mean"]["mean"] <= 1
    assert set(check["rules"]) == {"random", "q", "central", "outlier"}
    assert json.loads((tmp_path / "ranking.json").read_text())["settings"]["candidates"] == 4


def test_spearman_matches_scipy():
    import critic_ranking_check
    import numpy as np
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, size=9).astype(float)  # ties
        y = rng.normal(size=9)
        expected = spearmanr(x, y).statistic
        got = critic_ranking_check._spearman(x, y)
        assert (np.isnan(expected) and np.isnan(got)) or abs(got - expected) < 1e-12
    assert np.isnan(critic_ranking_check._spearman(np.ones(5), np.arange(5.0)))


def test_merge_joins_the_methods_of_one_seed_split_between_runs(tmp_path):
    import offline_baselines

    settings = {
        "steps": 30,
        "pretrain_steps": 10,
        "eval_interval": 10,
        "episodes": 1,
        "bdpo_overrides": [],
        "best_over_steps_from": 20,
    }

    def run(method, final, wall_key="total"):
        timings = (
            {"run_total": 5.0, "bc_evals": 1.0} if method in ("bdpo", "bc") else {wall_key: 3.0}
        )
        return {"curve": [[20, final - 1.0, 10.0], [30, final, 20.0]], "timings_s": timings}

    def write(name, per_seed):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"settings": settings, "per_seed": {"t": per_seed}}))
        return str(path)

    a = write(
        "a", {"2": {"bdpo": run("bdpo", 4.0), "bc": run("bc", 6.0), "td3bc": run("td3bc", 8.0)}}
    )
    b = write("b", {"2": {"iql": run("iql", 7.0)}, "1": {"iql": run("iql", 5.0)}})
    merged = offline_baselines.merge([a, b], tmp_path / "out")
    assert set(merged["per_seed"]["t"]["2"]) == {"bdpo", "bc", "td3bc", "iql"}
    iql = merged["aggregate"]["t"]["iql"]
    assert iql["seeds"] == ["1", "2"] and iql["final_score"]["mean"] == 6.0
    assert merged["aggregate"]["t"]["bdpo"]["final_score"]["values"] == [4.0]
    with pytest.raises(SystemExit, match="iql"):  # the same method and seed twice
        offline_baselines.merge([a, b, b], tmp_path / "out2")
