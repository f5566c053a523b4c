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
