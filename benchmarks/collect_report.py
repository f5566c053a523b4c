"""Learning curve and dataset table of a ``recipes/collect_dataset.py`` run, from its summary.json.

    python benchmarks/collect_report.py runs/collect/Hopper-v5_d4rl_seed0/summary.json \\
        --json benchmarks/results/collect_hopper_d4rl_seed0.json --png benchmarks/collect_hopper_d4rl.png

Writes a JSON (the SAC learning curve: deterministic evaluations and training-episode returns;
each dataset's size and the mean/std return of its episodes; the medium point; timings) and,
with ``--png``, a plot of the curve; prints the Markdown table of ``benchmarks/DATASETS.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ORDER = ("medium-replay", "medium", "medium-expert", "expert")


def report(summary: dict) -> dict:
    datasets = {
        k: {
            key: summary["datasets"][k][key]
            for key in (
                "id",
                "transitions",
                "episodes",
                "return_mean",
                "return_std",
                "return_min",
                "return_max",
                "terminations",
                "truncations",
                "normalized_return_mean",
            )
        }
        for k in ORDER
        if k in summary["datasets"]
    }
    return {
        "env_id": summary["env_id"],
        "seed": summary["seed"],
        "output_dir": summary["output_dir"],
        "ref_min_score": summary["ref_min_score"],
        "ref_max_score": summary["ref_max_score"],
        "reference": summary["reference"],
        "final_eval_return": summary["final_eval_return"],
        "medium": summary["medium"],
        "frames": summary["frames"],
        "updates": summary["updates"],
        "timings_s": summary["timings_s"],
        "datasets": datasets,
        "learning_curve": {
            "evaluations": [
                {"env_steps": e["frames"], "return": e["return"], "time_s": e["time_s"]}
                for e in summary["evaluations"]
            ],
            "train_episodes": [
                {"env_steps": e["frames"], "return": e["return"]}
                for e in summary.get("train_episodes", [])
            ],
        },
        "config": summary["config"],
    }


def table(rep: dict) -> str:
    lines = [
        "| dataset | transitions | episodes | mean ± std return | normalised score |",
        "|---|---:|---:|---:|---:|",
    ]
    for d in rep["datasets"].values():
        lines.append(
            f"| `{d['id']}` | {d['transitions']:,} | {d['episodes']:,} | "
            f"{d['return_mean']:.1f} ± {d['return_std']:.1f} | {d['normalized_return_mean']:.1f} |"
        )
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = rep["learning_curve"]
    fig, ax = plt.subplots(figsize=(7, 4))
    tr = curve["train_episodes"]
    if tr:
        x = np.array([e["env_steps"] for e in tr])
        y = np.array([e["return"] for e in tr])
        ax.plot(x, y, ".", ms=2, alpha=0.3, color="tab:gray", label="training episodes")
    ev = curve["evaluations"]
    ax.plot(
        [e["env_steps"] for e in ev],
        [e["return"] for e in ev],
        "-o",
        ms=3,
        color="tab:blue",
        label="deterministic evaluation",
    )
    med = rep["medium"]
    ax.axvline(med["frames"], ls="--", color="tab:orange", label=f"medium point ({med['frames']})")
    ax.axhline(rep["ref_max_score"], ls=":", color="k", lw=1, label="D4RL expert reference")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(f"SAC on {rep['env_id']} (seed {rep['seed']})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("summary")
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    args = p.parse_args()
    rep = report(json.loads(Path(args.summary).read_text()))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1, default=float))
    if args.png:
        plot(rep, Path(args.png))
    print(table(rep))
    ev = rep["learning_curve"]["evaluations"]
    print("evaluations:", ", ".join(f"{e['env_steps'] // 1000}k {e['return']:.0f}" for e in ev))


if __name__ == "__main__":
    main()
