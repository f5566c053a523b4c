"""The recipe's training loop against the benchmark's bare update step, in one process.

Separate processes of the same command differ by up to ±20 % on the project's shared CPU VMs,
which hides a 10 % difference between the recipe and ``bench_bdpo.py``. This script builds the
recipe's trainer (``task=custom data.name=<Minari id>``, ``eval.env=false``, the CSV logger) for one
phase (``--phase pretrain``: behavior pre-training; ``train``: BDPO's training, the critic step every
update and, every ``optim.actor_update_period``-th, the actor step and the continued behavior step,
from the first update on) and alternates, in one process, blocks of ``--updates`` updates of

* ``recipe``: ``BDPOTrainer.train`` (batch sampling, the updates, the LR schedules, the non-finite
  watch, the metric window and its CSV lines, the progress display; its end-of-phase checkpoint is
  skipped), and
* ``bench``: the same trainer's compiled steps, in the same order, on 4 synthetic batches in turn
  (what ``bench_bdpo.py`` times as ``pretrain_steps_per_s``; for ``train`` its mixed step plus the
  continued behavior step),

and prints per round the two rates and their ratio, then the median ratio, with the conditions::

    MINARI_DATASETS_PATH=<dir> python benchmarks/recipe_vs_bench.py --dataset bench/hopper/random-v0 \\
        --precision bf16 --updates 1500 --rounds 6 --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bdpo_offline  # noqa: E402
from bench_bdpo import (  # noqa: E402
    SHAPE_SETS,
    conditions_text,
    make_batch,
    ratio_summary,
    runtime_conditions,
    write_json,
)
from hydra import compose, initialize_config_dir  # noqa: E402


def make_trainer(args: argparse.Namespace, run_dir: Path):
    overrides = [
        "task=custom",
        f"data.name={args.dataset}",
        f"compile={str(not args.eager).lower()}",
        f"precision={args.precision}",
        f"threads={args.threads}",
        *(
            [f"optim.pretrain_steps={args.updates}", "optim.train_steps=0"]
            if args.phase == "pretrain"
            else [
                "optim.pretrain_steps=0",
                f"optim.train_steps={args.updates}",
                "optim.value_warmup_steps=0",
                f"eval.interval={args.updates}",
            ]
        ),
        "eval.env=false",
        "logger.backend=csv",
        f"logger.log_interval={args.log_interval}",
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "recipes" / "config"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    trainer = bdpo_offline.BDPOTrainer(cfg, run_dir)
    trainer.save_checkpoint = lambda: None  # the phase-end checkpoint is not an update's cost
    return trainer, bdpo_offline.make_logger(cfg, run_dir)


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, logger = make_trainer(args, Path(tmp) / "run")
        shape = SHAPE_SETS["hopper"]
        if (trainer.task.obs_dim, trainer.task.action_dim) != (shape.obs_dim, shape.act_dim):
            raise SystemExit(
                f"--dataset must have hopper shapes (obs {shape.obs_dim}, act {shape.act_dim}); "
                f"{args.dataset} has obs {trainer.task.obs_dim}, act {trainer.task.action_dim}."
            )
        batches = [make_batch(shape, trainer.device) for _ in range(4)]
        period = int(trainer.cfg.optim.actor_update_period)
        behavior_too = bool(trainer.cfg.optim.continue_behavior_training)

        def bench_update(i: int) -> None:
            batch = batches[i % 4]
            if args.phase == "pretrain":
                trainer.steps.behavior(batch)
                return
            trainer.steps.critic(batch)
            if i % period == 0:
                trainer.steps.actor(batch)
                if behavior_too:
                    trainer.steps.behavior(batch)

        for i in range(args.warmup):  # compiles both batch layouts
            bench_update(i)
            trainer.train_step()
            trainer.step += 1

        def recipe() -> float:
            trainer.step = 0
            start = time.perf_counter()
            trainer.train(logger)
            return args.updates / (time.perf_counter() - start)

        def bench() -> float:
            start = time.perf_counter()
            for i in range(args.updates):
                bench_update(i)
            return args.updates / (time.perf_counter() - start)

        rounds = []
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            a, b = recipe(), bench()
            rounds.append({"recipe": a, "bench": b, "ratio": a / b, "loadavg_start": load})
            print(
                f"round {r + 1}: recipe {a:7.1f} updates/s  bench step {b:7.1f} steps/s  "
                f"ratio {a / b:.3f}  (load {load:.2f})",
                flush=True,
            )
    return {
        "conditions": {
            **runtime_conditions(),
            "dataset": args.dataset,
            "phase": args.phase,
            "precision": args.precision,
            "compile": not args.eager,
            "updates_per_block": args.updates,
            "log_interval": args.log_interval,
        },
        "rounds": rounds,
        **ratio_summary([x["ratio"] for x in rounds]),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="Minari id of a hopper-shaped dataset")
    p.add_argument("--phase", default="pretrain", choices=["pretrain", "train"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--updates", type=int, default=1500, help="updates per block")
    p.add_argument("--rounds", type=int, default=6, help="recipe/bench block pairs")
    p.add_argument("--warmup", type=int, default=40, help="updates of each before timing")
    p.add_argument("--log-interval", type=int, default=250, help="the recipe's logger.log_interval")
    p.add_argument("--eager", action="store_true", help="compile=false (a quick smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("overrides", nargs="*", help="more recipe settings (key=value)")
    args = p.parse_args(argv)
    out = measure(args)
    c = out["conditions"]
    print(
        f"median recipe / bench: {out['median_ratio']:.3f} "
        f"[{out['ratio_range'][0]:.3f}-{out['ratio_range'][1]:.3f}] over {args.rounds} rounds; "
        f"{c['phase']}, " + conditions_text(c, "compiled" if c["compile"] else "eager")
    )
    return write_json(out, args.json)


if __name__ == "__main__":
    main()
