"""Two ways of running the update steps against each other, in one process, interleaved.

Separate processes of one command differ by up to ±20 % on the project's shared CPU VMs, so this
script builds the benchmark's components (``bench_bdpo.make_bench_components``, hopper shapes)
once per way and alternates timed blocks of the two (A B A B ...), printing per round both rates
and B ÷ A, then the median ratio, with the conditions. A way is ``eager`` (no compilation) or a
``compile_scope`` of ``recipes/bdpo_utils.py::make_update_steps``: ``losses`` (the losses' forward
and backward compiled; clipping, Adam and EMA eager) or ``graph`` (each update one compiled graph,
the recipe's default with ``compile=true``)::

    python benchmarks/compile_scopes.py --scopes losses,graph --figures pretrain,critic \\
        --precision fp32 --rounds 4 --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bdpo_utils import COMPILE_SCOPES, make_update_steps  # noqa: E402
from bench_bdpo import (  # noqa: E402
    conditions_text,
    make_bench_components,
    ratio_summary,
    runtime_conditions,
    write_json,
)

WAYS = ("eager", *COMPILE_SCOPES)
FIGURES = {"pretrain": "behavior", "critic": "critic", "actor": "actor"}


def make_steps(way: str, args: argparse.Namespace):
    c = make_bench_components("hopper", tiny=args.tiny, precision=args.precision)
    steps = make_update_steps(
        c.loss,
        c.optimizers,
        c.targets,
        c.device,
        precision=args.precision,
        compile=way != "eager",
        compile_scope="graph" if way == "eager" else way,
        strict_compile=True,  # never time eager code as compiled
    )
    return c.batches, steps


def timed_block(fn, batches, seconds: float, min_calls: int = 3) -> float:
    """Calls per second of ``fn`` over ``batches`` in turn, for ``seconds`` and ``min_calls``."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn(batches[calls % len(batches)])
        calls += 1
    return calls / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    a, b = args.scopes
    built = {"A": make_steps(a, args), "B": make_steps(b, args)}
    for batches, steps in built.values():  # compiles (the first calls recompile once)
        for figure in args.figures:
            for i in range(args.warmup):
                getattr(steps, FIGURES[figure])(batches[i % len(batches)])
    results = {}
    for figure in args.figures:
        seconds = args.seconds * (1 if figure == "pretrain" else args.long_factor)
        rounds = []
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            rate = {
                side: timed_block(getattr(steps, FIGURES[figure]), batches, seconds)
                for side, (batches, steps) in built.items()
            }
            rounds.append(
                {a: rate["A"], b: rate["B"], "ratio": rate["B"] / rate["A"], "load": load}
            )
            print(
                f"{figure} round {r + 1}: {a} {rate['A']:8.2f}/s  {b} {rate['B']:8.2f}/s  "
                f"{b}/{a} {rate['B'] / rate['A']:.3f}  (load {load:.2f})",
                flush=True,
            )
        results[figure] = {"rounds": rounds, **ratio_summary([x["ratio"] for x in rounds])}
    return {
        "conditions": {
            **runtime_conditions(),
            "precision": args.precision,
            "shapes": "hopper (tiny)" if args.tiny else "hopper",
            "scopes": {"A": a, "B": b},
            "seconds_per_block": {
                "pretrain": args.seconds,
                "other": args.seconds * args.long_factor,
            },
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scopes", default="losses,graph", help=f"A,B: two of {', '.join(WAYS)}")
    p.add_argument("--figures", default="pretrain,critic", help=f"of {', '.join(FIGURES)}")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4, help="A/B block pairs per figure")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per pre-training block")
    p.add_argument("--long-factor", type=float, default=2.0, help="critic/actor blocks: x seconds")
    p.add_argument("--warmup", type=int, default=3, help="calls of each step before timing")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    args.scopes = args.scopes.split(",")
    args.figures = args.figures.split(",")
    if len(args.scopes) != 2 or set(args.scopes) - set(WAYS):
        raise SystemExit(f"--scopes must be two of {WAYS}, got {args.scopes}.")
    if set(args.figures) - set(FIGURES):
        raise SystemExit(f"--figures must be of {tuple(FIGURES)}, got {args.figures}.")
    out = measure(args)
    c = out["conditions"]
    for figure, r in out["results"].items():
        print(
            f"{figure}: median {args.scopes[1]}/{args.scopes[0]} {r['median_ratio']:.3f} "
            f"[{r['ratio_range'][0]:.3f}-{r['ratio_range'][1]:.3f}] over {args.rounds} rounds; "
            + conditions_text(c)
        )
    return write_json(out, args.json)


if __name__ == "__main__":
    main()
