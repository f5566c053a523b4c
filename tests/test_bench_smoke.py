"""Smoke test of benchmarks/bench_bdpo.py: quick eager run on tiny shapes; structure only, no timings."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # end to end: excluded from the unit loop (-m 'not slow')

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bdpo.py"
KEYS = (
    "pretrain_steps_per_s",
    "critic_steps_per_s",
    "mixed_steps_per_s",
    "sample_ms_b1",
    "sample_ms_b256",
    "gflops_mixed",
    "peak_mem_mb",
)


@pytest.fixture(scope="module")
def bench():
    if "bench_bdpo" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_bdpo", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_bdpo"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["bench_bdpo"]


def test_quick_tiny_eager_json(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--tiny", "--modes", "eager", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "== hopper ==" in printed and "== toy2d ==" in printed

    report = json.loads(out.read_text())
    assert set(report) >= {"conditions", "results"}
    cond = report["conditions"]
    for key in ("device", "torch_threads", "torch", "torchrl", "tensordict", "cpu_model", "date"):
        assert key in cond, key
    assert cond["matmul_gflops"] > 0
    assert set(report["results"]) == {"hopper", "toy2d"}
    for shape in ("hopper", "toy2d"):
        res = report["results"][shape]["eager"]
        assert "error" not in res, res.get("error")
        for key in KEYS:
            assert math.isfinite(res[key]) and res[key] > 0, (shape, key, res[key])


def test_update_fns_are_reusable(bench):
    """The step functions train: the critic step moves the online critics and their EMA."""
    comps = bench.make_bench_components("hopper", tiny=True)
    fns = bench.make_update_fns(comps, "eager")
    loss = comps.loss
    q_params = list(loss.qvalue_network_params.values(True, True))
    q_before = [p.detach().clone() for p in q_params]
    q_target_before = [p.clone() for p in loss.target_qvalue_network_params.values(True, True)]
    batch = comps.batches[0]
    for step in range(comps.shape.actor_every):
        assert torch.isfinite(fns.mixed_step(batch, step)[0])
    assert torch.isfinite(fns.pretrain_step(batch)[0])
    assert any(not torch.equal(a, b) for a, b in zip(q_before, q_params))
    q_target_after = list(loss.target_qvalue_network_params.values(True, True))
    assert any(not torch.equal(a, b) for a, b in zip(q_target_before, q_target_after))
    td = comps.eval_inputs[1]
    action = fns.sample(td)["action"]
    assert action.shape == (1, comps.shape.act_dim)
    assert action.abs().max() <= 1.0  # hopper: clipped sampler


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sampling_runs_under_the_benchmarks_precision(bench, precision):
    """--precision bf16 times the selection policy under bfloat16 autocast (fp32: without)."""
    comps = bench.make_bench_components("hopper", tiny=True, precision=precision)
    policy, seen = comps.eval_policy, []

    def spy(td):
        seen.append(torch.is_autocast_enabled("cpu"))
        return policy(td)

    comps.eval_policy = spy
    action = bench.make_update_fns(comps, "eager").sample(comps.eval_inputs[1])["action"]
    assert seen == [precision == "bf16"]
    assert action.dtype == torch.float32 and action.shape == (1, comps.shape.act_dim)


def test_unknown_shape_set_is_rejected(bench):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--shapes", "walker"])


def test_side_by_side_interleaves_blocks_and_reports_median_ratios(bench, tmp_path, monkeypatch):
    """--flowrl mode: JAX and our blocks alternate; ratios are ours / JAX per round, median-reported.
    The JAX side is a stand-in here (CI has no JAX); its figures are fixed so the ratios are known."""
    calls = []
    jax_figures = [
        {"pretrain_steps_per_s": 100.0, "critic_steps_per_s": 2.0, "mixed_steps_per_s": 1.0,
         "sample_ms_b1": 2.0, "sample_ms_b256": 200.0},
        {"pretrain_steps_per_s": 50.0, "critic_steps_per_s": 1.0, "mixed_steps_per_s": 0.5,
         "sample_ms_b1": 4.0, "sample_ms_b256": 400.0},
    ]  # fmt: skip

    def fake_flowrl(args, seconds, warmup):
        calls.append("jax")
        return {"figures": jax_figures[calls.count("jax") - 1]}

    real = bench.run_benchmark

    def ours(args, log=print):
        calls.append("ours")
        return real(args, log=log)

    monkeypatch.setattr(bench, "run_flowrl", fake_flowrl)
    monkeypatch.setattr(bench, "run_benchmark", ours)
    threads = torch.get_num_threads()
    try:
        report = bench.main(
            ["--quick", "--tiny", "--modes", "eager", "--flowrl", "x", "--jax-python", "y",
             "--rounds", "2", "--json", str(tmp_path / "sbs.json")]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert calls == ["jax", "ours", "jax", "ours"]
    assert [b["side"] for b in report["blocks"]] == ["jax", "ours", "jax", "ours"]
    assert all(len(b["loadavg_start"]) == 3 for b in report["blocks"])
    ours_pretrain = [b["results"]["eager"]["pretrain_steps_per_s"] for b in report["blocks"][1::2]]
    expected = sorted(o / j["pretrain_steps_per_s"] for o, j in zip(ours_pretrain, jax_figures))
    row = report["ratios"]["eager"]["pretrain_steps_per_s"]
    assert row["range"] == pytest.approx(expected)
    assert row["median"] == pytest.approx(sum(expected) / 2)
    assert report["ratios"]["eager"]["sample_ms_b1"]["lower_is_better"]
    assert json.loads((tmp_path / "sbs.json").read_text())["ratios"]


@pytest.mark.parametrize("phase", ["pretrain", "train"])
def test_recipe_vs_bench_smoke(bench, minari_hopper_dataset, tmp_path, capsys, phase):
    """benchmarks/recipe_vs_bench.py on the local Hopper data, eager, tiny: structure only."""
    sys.path.insert(0, str(BENCH.parent))
    import recipe_vs_bench

    out = tmp_path / "rvb.json"
    result = recipe_vs_bench.main(
        [
            f"--dataset={minari_hopper_dataset}",
            f"--phase={phase}",
            "--eager",
            "--updates=6",
            "--rounds=2",
            "--warmup=2",
            "--log-interval=3",
            f"--json={out}",
            "optim.batch_size=16",
            "diffusion.hidden_sizes=[16,16]",
            "critic.hidden_sizes=[16]",
        ]
    )
    assert json.loads(out.read_text()) == result
    assert result["conditions"]["phase"] == phase
    assert len(result["rounds"]) == 2
    for r in result["rounds"]:
        assert r["recipe"] > 0 and r["bench"] > 0
        assert math.isclose(r["ratio"], r["recipe"] / r["bench"])
    assert result["conditions"]["dataset"] == minari_hopper_dataset
    assert "median recipe / bench" in capsys.readouterr().out


def test_compile_scopes_smoke(bench, tmp_path):
    """benchmarks/compile_scopes.py, tiny, eager against the one-graph step: structure only."""
    sys.path.insert(0, str(BENCH.parent))
    import compile_scopes

    threads = torch.get_num_threads()
    out = tmp_path / "scopes.json"
    try:
        result = compile_scopes.main(
            ["--tiny", "--scopes", "eager,graph", "--figures", "pretrain", "--rounds", "2",
             "--seconds", "0", "--warmup", "2", "--json", str(out)]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    rounds = result["results"]["pretrain"]["rounds"]
    assert len(rounds) == 2 and all(r["eager"] > 0 and r["graph"] > 0 for r in rounds)
    assert result["conditions"]["scopes"] == {"A": "eager", "B": "graph"}
    assert json.loads(out.read_text()) == result
    with pytest.raises(SystemExit, match="--scopes must be two of"):
        compile_scopes.main(["--scopes", "graph,steps"])
