"""BDPO against behavior cloning (the behavior diffusion alone) on one offline dataset.

    python benchmarks/bdpo_vs_bc.py --minari-path runs/minari             # hopper-local-medium-replay, 3 seeds
    python benchmarks/bdpo_vs_bc.py --task hopper-local-medium --seeds 0 1 2 3 4
    python benchmarks/bdpo_vs_bc.py --preset paper                          # the paper's sizes (GPU)
    python benchmarks/bdpo_vs_bc.py --set optim.train_steps=50000 --set eval.interval=10000

Per seed, one run of the recipe's trainer (``recipes/bdpo_offline.py``, in-process, config
composed from ``recipes/config`` like the tests do) produces both methods:

* **BDPO**: the recipe's evaluation policy — 10 candidates from the EMA actor's full
  stochastic chain, the one with the highest ensemble-mean EMA Q executed.
* **BC**: the EMA *behavior* diffusion of the same run (same network, same data, same
  pre-training; the recipe's default also keeps training it, one step per actor step),
  evaluated with the same protocol but *without* Q selection: one plain sample of its full
  stochastic chain per state.

Both are evaluated at the same points (every ``eval.interval`` training steps) on the same
episodes' seeds; "final" is the last evaluation, "best" the best one. Two diagnostics are
evaluated too (not part of the comparison): the BDPO actor without Q selection, and the
behavior model with Q selection. Normalised scores use the dataset's reference returns.

Prints a table and writes a JSON file with the settings, per-seed figures and timings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(RECIPES))

import bdpo_offline  # noqa: E402
from bdpo_utils import evaluate_env, evaluation_seed  # noqa: E402

from torchrl_bdpo import QSelectionPolicy  # noqa: E402
from torchrl_bdpo.scores import normalized_score  # noqa: E402

#: CPU-sized settings, chosen from measured update rates before any result was seen (one torch
#: thread: ~17 critic steps/s, ~24 actor steps/s, ~400 pre-training steps/s of CPU time; about
#: 15 min of CPU time per seed). Everything else is the recipe's (paper) default: N = 5,
#: lrs 3e-4 / 1e-5, actor every 5th step, continued behavior training, tau 0.005.
CPU_PRESET = [
    "diffusion.hidden_sizes=[128,128,128]",  # paper: 4 x 256
    "critic.num_members=5",  # paper: K = 10
    "critic.hidden_sizes=[128,128]",  # paper: 3 x 256
    "loss.num_samples=5",  # paper: M = 10
    "optim.batch_size=128",  # paper: 256
    "optim.pretrain_steps=20000",  # paper: 2M
    "optim.train_steps=10000",  # paper: 2M
    "optim.value_warmup_steps=1000",  # paper: 50k
    "eval.interval=2500",  # paper: 50k
    "eval.episodes=10",
    "checkpoint.interval=1000000000",
    "logger.backend=none",
    "threads=1",
]
PAPER_PRESET: list[str] = []  # the recipe's defaults are the paper's

METHODS = {
    "bdpo": "BDPO (actor, 10 candidates, Q selection)",
    "bc": "BC (behavior diffusion, 1 sample, no Q selection)",
    "bdpo_nosel": "diagnostic: BDPO actor, 1 sample, no Q selection",
    "bc_qsel": "diagnostic: behavior diffusion, 10 candidates, Q selection",
}


class BenchTrainer(bdpo_offline.BDPOTrainer):
    """The recipe's trainer, also evaluating the behavior model (and diagnostics) at each evaluation."""

    diagnostics = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.phase_start: dict[str, float] = {"pretrain": time.time()}
        self.extra_eval_time = 0.0

    def train_step(self):
        if self.step == self.pretrain_steps and "train" not in self.phase_start:
            self.phase_start["train"] = time.time()
        return super().train_step()

    def _policy(self, which: str, num_candidates: int) -> QSelectionPolicy:
        return QSelectionPolicy.from_loss(self.loss, num_candidates, model=which)

    def evaluate(self) -> dict:
        result = super().evaluate()
        t0 = time.time()
        k = int(self.cfg.eval.num_candidates)
        extra = {"bc": ("behavior", 1)}
        if self.diagnostics:
            extra.update(bdpo_nosel=("actor", 1), bc_qsel=("behavior", k))
        ref_min, ref_max = self.task.ref_min_score, self.task.ref_max_score
        for name, (which, cands) in extra.items():
            returns = evaluate_env(
                self.eval_env,
                self._policy(which, cands),
                int(self.cfg.env.max_episode_steps),
                seed=evaluation_seed(self.cfg.seed),
            )
            result[f"{name}_return_mean"] = float(returns.mean())
            if self.task.has_reference_scores:  # the recipe's rule: both, finite and distinct
                scores = normalized_score(returns, ref_min=ref_min, ref_max=ref_max)
                result[f"{name}_normalized_score_mean"] = float(scores.mean())
        dt = time.time() - t0
        result["extra_eval_time_s"] = dt
        self.extra_eval_time += dt
        return result


def compose_config(task: str, seed: int, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(RECIPES / "config"), version_base="1.3"):
        return compose("config", overrides=[f"task={task}", f"seed={seed}", *overrides])


def _score(e: dict, method: str) -> float:
    prefix = "" if method == "bdpo" else f"{method}_"
    value = e.get(f"{prefix}normalized_score_mean")
    return float(value if value is not None else e[f"{prefix}return_mean"])


def _ret(e: dict, method: str) -> float:
    prefix = "" if method == "bdpo" else f"{method}_"
    return float(e[f"{prefix}return_mean"])


def run_seed(task: str, seed: int, overrides: list[str], out_dir: Path, diagnostics: bool) -> dict:
    cfg = compose_config(task, seed, overrides)
    run_dir = out_dir / f"{task}_seed{seed}"
    BenchTrainer.diagnostics = diagnostics
    captured: dict = {}

    class _Trainer(BenchTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            captured["trainer"] = self

    t0 = time.time()
    summary = json.loads(bdpo_offline.run(cfg, run_dir, trainer_cls=_Trainer).read_text())
    total = time.time() - t0
    trainer = captured["trainer"]
    evals = [e for e in summary["evaluations"] if e.get("train_step", 0) > 0]
    methods = ["bdpo", "bc"] + (["bdpo_nosel", "bc_qsel"] if diagnostics else [])
    per_method = {}
    for m in methods:
        scores = [_score(e, m) for e in evals]
        best = int(np.argmax(scores))
        per_method[m] = {
            "final_score": scores[-1],
            "best_score": scores[best],
            "best_at_train_step": evals[best]["train_step"],
            "final_return": _ret(evals[-1], m),
            "curve": [[e["train_step"], s] for e, s in zip(evals, scores)],
        }
    t_train = trainer.phase_start.get("train", time.time())
    bdpo_eval = sum(e.get("eval_time_s", 0.0) for e in evals)  # the recipe's own evaluation
    extra_eval = trainer.extra_eval_time
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "methods": per_method,
        "timings_s": {
            "run_total": total,
            "pretrain": t_train - trainer.phase_start["pretrain"],
            "train_incl_evals": summary["wall_time_s"]
            - (t_train - trainer.phase_start["pretrain"]),
            "bdpo_evals": bdpo_eval,
            "bc_and_diagnostic_evals": extra_eval,
            "updates_per_s": summary["updates_per_s"],  # per phase, update time only
        },
        "dataset": summary["dataset"],
    }


def aggregate(results: list[dict]) -> dict:
    out = {}
    for m in results[0]["methods"]:
        agg = {}
        for key in ("final_score", "best_score", "final_return"):
            vals = np.array([r["methods"][m][key] for r in results])
            agg[key] = {
                "mean": float(vals.mean()),
                "std": float(vals.std()),
                "values": vals.tolist(),
            }
        out[m] = agg
    return out


def format_table(agg: dict, results: list[dict]) -> str:
    lines = [
        f"{'method':<58} {'final score':>15} {'best score':>15} {'final return':>16}",
        "-" * 107,
    ]
    for m, a in agg.items():
        f, b, r = a["final_score"], a["best_score"], a["final_return"]
        lines.append(
            f"{METHODS[m]:<58} {f['mean']:7.1f} ± {f['std']:5.1f} {b['mean']:7.1f} ± {b['std']:5.1f} "
            f"{r['mean']:8.1f} ± {r['std']:5.1f}"
        )
    wall = [r["timings_s"]["run_total"] for r in results]
    lines.append("-" * 107)
    lines.append(
        f"wall time per seed (pre-training + training + all evaluations): "
        f"{np.mean(wall):.0f} ± {np.std(wall):.0f} s; pre-training {np.mean([r['timings_s']['pretrain'] for r in results]):.0f} s, "
        f"BC+diagnostic evaluations {np.mean([r['timings_s']['bc_and_diagnostic_evals'] for r in results]):.0f} s"
    )
    return "\n".join(lines)


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def run_parallel(args: argparse.Namespace, out_dir: Path) -> list[dict]:
    """One subprocess per seed (at most ``args.jobs`` at a time); returns their per-seed results."""
    import subprocess

    pending, running, done = list(args.seeds), [], {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            cmd = [sys.executable, __file__, "--task", args.task, "--seeds", str(seed)]
            cmd += ["--preset", args.preset, "--out", str(out_dir / f"seed{seed}")]
            cmd += [f"--set={o}" for o in args.set]
            cmd += ["--no-diagnostics"] if args.no_diagnostics else []
            if args.minari_path:
                cmd += ["--minari-path", args.minari_path]
            log = open(out_dir / f"seed{seed}.log", "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((seed, proc, log))
        time.sleep(5)
        for item in list(running):
            seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode != 0:
                    raise RuntimeError(f"seed {seed} failed; see {out_dir / f'seed{seed}.log'}")
                result = json.loads((out_dir / f"seed{seed}" / "results.json").read_text())
                done[seed] = result["per_seed"][0]
                m = done[seed]["methods"]
                print(
                    f"seed {seed}: BDPO final {m['bdpo']['final_score']:.1f} | "
                    f"BC final {m['bc']['final_score']:.1f}",
                    flush=True,
                )
    return [done[s] for s in args.seeds]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="hopper-local-medium-replay", help="recipe task config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe overrides (after the preset)",
    )
    p.add_argument("--minari-path", default=None, help="MINARI_DATASETS_PATH holding the dataset")
    p.add_argument(
        "--out", default="runs/bdpo_vs_bc", help="output directory (runs + results.json)"
    )
    p.add_argument("--no-diagnostics", action="store_true", help="evaluate BDPO and BC only")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds run in parallel, one process (one torch thread) each; wall times then "
        "include the contention",
    )
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    if args.minari_path:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(args.minari_path).resolve())
    overrides = (CPU_PRESET if args.preset == "cpu" else PAPER_PRESET) + list(args.set)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    results = []
    if args.jobs > 1:
        results = run_parallel(args, out_dir)
    for seed in args.seeds if args.jobs <= 1 else []:
        r = run_seed(args.task, seed, overrides, out_dir, not args.no_diagnostics)
        results.append(r)
        m = r["methods"]
        print(
            f"seed {seed}: BDPO final {m['bdpo']['final_score']:.1f} best {m['bdpo']['best_score']:.1f} | "
            f"BC final {m['bc']['final_score']:.1f} best {m['bc']['best_score']:.1f} | "
            f"{r['timings_s']['run_total']:.0f} s",
            flush=True,
        )
    agg = aggregate(results)
    cfg = compose_config(args.task, args.seeds[0], overrides)
    from omegaconf import OmegaConf

    report = {
        "date": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "task": args.task,
        "dataset": results[0]["dataset"],
        "seeds": args.seeds,
        "preset": args.preset,
        "jobs": args.jobs,
        "overrides": overrides,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "methods": METHODS,
        "aggregate": agg,
        "per_seed": results,
        "std": "population std over seeds (ddof=0)",
    }
    table = format_table(agg, results)
    print(
        f"\n{args.task} ({results[0]['dataset']}), seeds {args.seeds}, preset {args.preset}; "
        "normalised score, mean ± std over seeds"
    )
    print(table)
    path = out_dir / "results.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    print(path)
    return report


if __name__ == "__main__":
    main()
