"""Throughput of the SAC in ``recipes/collect_dataset.py`` on CPU: updates/s and env steps/s.

    OMP_NUM_THREADS=1 python benchmarks/bench_sac_collect.py --updates 300 --batch 128 256 --compile

Each figure is a short measurement (a few hundred updates after a warm-up) with the networks
and ``SACLoss`` of the recipe (``make_sac``), a replay buffer filled with random transitions,
and one torch thread. Prints one line per setting and a JSON of all of them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import collect_dataset as cd  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--batch", type=int, nargs="+", default=[128, 256])
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--env-steps", type=int, default=2000)
    p.add_argument("--compile", action="store_true", help="also time the compiled update")
    p.add_argument("--out", default=None, help="JSON file of the figures")
    args = p.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(
        config_dir=str(ROOT / "recipes" / "config_collect"), version_base="1.3"
    ):
        cfg = compose("collect", overrides=[f"env.id={args.env}"])
    results = {"cpu": cpu_model(), "torch": torch.__version__, "threads": 1, "rows": []}
    import torchrl

    results["torchrl"] = torchrl.__version__

    # env steps/s: the recipe's env with its (untrained) SAC actor, as the collector runs it
    from torchrl.collectors import Collector

    env = cd.make_env(args.env, 1000)
    actor, loss = cd.make_sac(cfg, env)
    for label, init_random in (("random actions", args.env_steps), ("SAC actor", 0)):
        col = Collector(
            env,
            actor,
            frames_per_batch=100,
            total_frames=args.env_steps,
            init_random_frames=init_random,
            auto_register_policy_transforms=False,
        )
        t0 = time.perf_counter()
        n = sum(b.numel() for b in col)
        dt = time.perf_counter() - t0
        col.shutdown()
        row = {"what": f"env steps ({label})", "per_s": n / dt}
        results["rows"].append(row)
        print(f"{row['what']:<40} {row['per_s']:8.0f} /s", flush=True)

    from torchrl.data import LazyTensorStorage, ReplayBuffer

    data = env.rollout(1000, break_when_any_done=False).select(*cd.TED_KEYS)
    for batch in args.batch:
        for compiled in (False, True) if args.compile else (False,):
            cfg.sac.batch_size = batch
            actor, loss = cd.make_sac(cfg, env)
            rb = ReplayBuffer(storage=LazyTensorStorage(10_000), batch_size=batch)
            for _ in range(10):
                rb.extend(data)
            step = cd.make_update(loss, lr=3e-4, tau=0.005, compile=compiled)
            t0 = time.perf_counter()
            step(rb.sample())  # warm-up (and compilation)
            step(rb.sample())
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.updates):
                step(rb.sample())
            dt = time.perf_counter() - t0
            row = {
                "what": f"updates batch {batch} {'compiled' if compiled else 'eager'}",
                "per_s": args.updates / dt,
                "warmup_s": warm,
            }
            results["rows"].append(row)
            print(f"{row['what']:<40} {row['per_s']:8.1f} /s (first 2: {warm:.1f} s)", flush=True)
    env.close()
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
