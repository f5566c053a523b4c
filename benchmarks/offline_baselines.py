"""BDPO, behavior cloning, TorchRL's IQL and TorchRL's TD3+BC on the same offline datasets.

    python benchmarks/offline_baselines.py --quick                         # smoke test (seconds)
    MINARI_DATASETS_PATH=/work/datasets/minari python benchmarks/offline_baselines.py \\
        --tasks hopper-local-medium-expert --seeds 0 1 2 --steps 30000 --pretrain-steps 20000 \\
        --eval-interval 2500 --episodes 10 --out runs/offline_baselines

Per task (a recipe task config, ``recipes/config/task``) and seed, four methods see the same
transitions (the recipe's ``make_task_data``: same loading, action clipping to +-(1 - 1e-5))
through the same replay buffer (the recipe's ``make_replay_buffer``: uniform sampling with
replacement), make the same total number of gradient steps ``--steps`` and are evaluated
with the same protocol (the recipe's ``make_eval_env``/``evaluate_env``: Hopper-v5, the same
``--episodes`` episode seeds per run seed, undiscounted returns normalised with the
dataset's reference returns):

* **BDPO**: the recipe's trainer with ``bdpo_vs_bc.CPU_PRESET``; ``--pretrain-steps``
  behavior/value pre-training steps, then ``steps - pretrain_steps`` BDPO steps; evaluated
  with the recipe's policy (EMA actor, 10 candidates, ensemble-mean Q selection).
* **BC**: the EMA behavior diffusion of the same run (our diffusion network; pre-training plus
  the recipe's continued behavior training), one plain sample per state, no Q selection.
* **IQL**: ``torchrl.objectives.IQLLoss`` with the settings of TorchRL's
  ``sota-implementations/iql/offline_config.yaml`` (see :data:`IQL_SETTINGS`); mean action.
* **TD3+BC**: ``torchrl.objectives.TD3BCLoss`` with those of
  ``sota-implementations/td3_bc/config.yaml`` (see :data:`TD3BC_SETTINGS`); deterministic action.

BDPO's evaluations exist only after its pre-training, at ``pretrain_steps + k * eval_interval``
total steps; every method is evaluated at those points (IQL and TD3+BC also before them, for the
curves). "final" is the last evaluation, "best" the best of the evaluations common to all methods.
Writes ``results.json`` (updated after every run, so a cut-short benchmark keeps what finished),
``table.md`` and ``curves.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bdpo_vs_bc  # noqa: E402
from bdpo_utils import (  # noqa: E402
    evaluate_env,
    evaluation_seed,
    make_eval_env,
    make_replay_buffer,
    make_task_data,
)

from torchrl_bdpo.scores import normalized_score  # noqa: E402

METHODS = {
    "bdpo": "BDPO (ours, CPU-sized)",
    "bc": "BC (our behavior diffusion)",
    "iql": "IQL (TorchRL IQLLoss)",
    "td3bc": "TD3+BC (TorchRL TD3BCLoss)",
}

#: TorchRL sota-implementations/iql/offline_config.yaml (+ iql/utils.py, iql_offline.py)
IQL_SETTINGS = {
    "hidden_sizes": [256, 256],
    "activation": "relu",
    "default_policy_scale": 1.0,  # NormalParamExtractor biased_softplus_1.0
    "scale_lb": 0.1,
    "lr": 3e-4,  # Adam, one per network, weight decay 0
    "batch_size": 256,
    "gamma": 0.99,
    "tau": 0.005,  # SoftUpdate
    "temperature": 3.0,
    "expectile": 0.7,
    "loss_function": "l2",
    "num_qvalue_nets": 2,  # IQLLoss default
    "update": "one backward of loss_actor + loss_value + loss_qvalue, then all three Adam steps",
    "reward_transform": "none",  # TorchRL's script trains on D4RL's raw rewards
    "observation_normalisation": "none",
    "eval_action": "deterministic (TanhNormal mode, ExplorationType.DETERMINISTIC)",
}

#: TorchRL sota-implementations/td3_bc/config.yaml (+ td3_bc/utils.py, td3_bc.py)
TD3BC_SETTINGS = {
    "hidden_sizes": [256, 256],
    "activation": "relu",
    "lr": 3e-4,
    "adam_eps": 1e-4,
    "batch_size": 256,
    "gamma": 0.99,
    "target_update_polyak": 0.995,  # SoftUpdate(eps=0.995), stepped with the actor updates
    "policy_update_delay": 2,
    "policy_noise": 0.2,
    "noise_clip": 0.5,
    "alpha": 2.5,
    "loss_function": "l2",
    "num_qvalue_nets": 2,
    "reward_transform": "none",
    "observation_normalisation": "none",  # TorchRL's script does not normalise states
    "eval_action": "deterministic (tanh of the actor's output)",
}


# ------------------------------------------------------------------------- baselines
def _mlp(out_features: int, hidden: list[int]):
    from torchrl.modules import MLP

    return MLP(num_cells=list(hidden), out_features=out_features, activation_class=torch.nn.ReLU)


def build_iql(action_spec, obs_dim: int, s: dict):
    from collect_dataset import tanh_normal_actor
    from tensordict.nn.distributions import NormalParamExtractor
    from torchrl.modules import ValueOperator
    from torchrl.objectives import IQLLoss, SoftUpdate

    act_dim = action_spec.shape[-1]
    net = torch.nn.Sequential(
        _mlp(2 * act_dim, s["hidden_sizes"]),
        NormalParamExtractor(
            scale_mapping=f"biased_softplus_{s['default_policy_scale']}", scale_lb=s["scale_lb"]
        ),
    )
    actor = tanh_normal_actor(net, action_spec)  # the SAC collector's actor, IQL's scale settings
    q = ValueOperator(_mlp(1, s["hidden_sizes"]), in_keys=["observation", "action"])
    v = ValueOperator(_mlp(1, s["hidden_sizes"]), in_keys=["observation"], out_keys=["state_value"])
    _init_lazy([actor, q, v], obs_dim, act_dim)
    loss = IQLLoss(
        actor,
        q,
        value_network=v,
        loss_function=s["loss_function"],
        temperature=s["temperature"],
        expectile=s["expectile"],
        num_qvalue_nets=s["num_qvalue_nets"],
    )
    loss.make_value_estimator(gamma=s["gamma"])
    target = SoftUpdate(loss, tau=s["tau"])
    opts = [
        torch.optim.Adam(list(p.values(True, True)), lr=s["lr"])
        for p in (loss.actor_network_params, loss.qvalue_network_params, loss.value_network_params)
    ]

    def update(batch, step: int) -> None:
        for o in opts:
            o.zero_grad(set_to_none=True)
        out = loss(batch)
        (out["loss_actor"] + out["loss_value"] + out["loss_qvalue"]).backward()
        for o in opts:
            o.step()
        target.step()

    return actor, update


def build_td3bc(action_spec, obs_dim: int, s: dict):
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import TanhModule, ValueOperator
    from torchrl.objectives import SoftUpdate, TD3BCLoss

    act_dim = action_spec.shape[-1]
    actor = TensorDictSequential(
        TensorDictModule(_mlp(act_dim, s["hidden_sizes"]), ["observation"], ["param"]),
        TanhModule(in_keys=["param"], out_keys=["action"], spec=action_spec),
    )
    q = ValueOperator(_mlp(1, s["hidden_sizes"]), in_keys=["action", "observation"])
    _init_lazy([actor, q], obs_dim, act_dim)
    loss = TD3BCLoss(
        actor_network=actor,
        qvalue_network=q,
        action_spec=action_spec,
        num_qvalue_nets=s["num_qvalue_nets"],
        loss_function=s["loss_function"],
        delay_actor=True,
        delay_qvalue=True,
        policy_noise=s["policy_noise"],
        noise_clip=s["noise_clip"],
        alpha=s["alpha"],
    )
    loss.make_value_estimator(gamma=s["gamma"])
    target = SoftUpdate(loss, eps=s["target_update_polyak"])
    opt_actor = torch.optim.Adam(
        list(loss.actor_network_params.values(True, True)), lr=s["lr"], eps=s["adam_eps"]
    )
    opt_critic = torch.optim.Adam(
        list(loss.qvalue_network_params.values(True, True)), lr=s["lr"], eps=s["adam_eps"]
    )

    def update(batch, step: int) -> None:  # TorchRL's td3_bc.py: step counts from 0
        q_loss, _ = loss.qvalue_loss(batch)
        q_loss.backward()
        opt_critic.step()
        opt_critic.zero_grad(set_to_none=True)
        if step % s["policy_update_delay"] == 0:
            a_loss, _ = loss.actor_loss(batch)
            a_loss.backward()
            opt_actor.step()
            opt_actor.zero_grad(set_to_none=True)
            target.step()

    return actor, update


def _init_lazy(modules, obs_dim: int, act_dim: int) -> None:
    """Materialises the MLPs' lazy layers with one fake batch (TorchRL's scripts do the same)."""
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    td = TensorDict(
        {"observation": torch.zeros(2, obs_dim), "action": torch.zeros(2, act_dim)}, [2]
    )
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        for m in modules:
            m(td.clone())


def run_baseline(method: str, task_name: str, seed: int, args) -> dict:
    """Trains IQL or TD3+BC for ``args.steps`` gradient steps; evaluates every ``eval_interval``."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    settings = IQL_SETTINGS if method == "iql" else TD3BC_SETTINGS
    overrides = [
        *args.config_set,
        f"optim.batch_size={settings['batch_size']}",
        "data.reward_transform=none",
    ]
    cfg = bdpo_vs_bc.compose_config(task_name, seed, overrides)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t_start = time.time()
    task = make_task_data(cfg)
    buffer = make_replay_buffer(task, cfg, torch.device("cpu"))
    env = make_eval_env(
        task.env_id,
        int(args.episodes),
        int(cfg.env.max_episode_steps),
        task.obs_dim,
        env_spec=task.env_spec,
    )
    action_spec = env.action_spec_unbatched
    build = build_iql if method == "iql" else build_td3bc
    actor, update = build(action_spec.clone(), task.obs_dim, settings)
    t_setup = time.time() - t_start

    train_time = eval_time = 0.0
    curve = []
    t0 = time.time()
    for step in range(int(args.steps)):
        update(buffer.sample(), step)
        done = step + 1
        if done % int(args.eval_interval) == 0 or done == int(args.steps):
            train_time += time.time() - t0
            t1 = time.time()
            with set_exploration_type(ExplorationType.DETERMINISTIC):
                returns = evaluate_env(
                    env, actor, int(cfg.env.max_episode_steps), seed=evaluation_seed(seed)
                )
            eval_time += time.time() - t1
            curve.append([done, *_scores(returns, task)])
            print(f"  {method} seed {seed} step {done}: score {curve[-1][1]:.1f}", flush=True)
            t0 = time.time()
    env.close()
    return {
        "curve": curve,
        "settings": settings,
        "timings_s": {
            "setup": t_setup,
            "train": train_time,
            "evals": eval_time,
            "total": time.time() - t_start,
            "steps_per_s": int(args.steps) / max(train_time, 1e-9),
        },
    }


def _scores(returns: np.ndarray, task) -> tuple[float, float]:
    """(mean normalised score, mean return); the score is the return without references."""
    ret = float(np.mean(returns))
    if not task.has_reference_scores:
        return ret, ret
    s = normalized_score(returns, ref_min=task.ref_min_score, ref_max=task.ref_max_score)
    return float(np.mean(s)), ret


# ------------------------------------------------------------------------------ BDPO
def bdpo_overrides(args) -> list[str]:
    train = int(args.steps) - int(args.pretrain_steps)
    if train <= 0 or train % int(args.eval_interval):
        raise SystemExit(
            "--steps - --pretrain-steps must be a positive multiple of --eval-interval"
        )
    extra = [
        f"optim.pretrain_steps={args.pretrain_steps}",
        f"optim.train_steps={train}",
        f"eval.interval={args.eval_interval}",
        f"eval.episodes={args.episodes}",
    ]
    if args.quick:
        extra += [
            "diffusion.hidden_sizes=[32,32]",
            "critic.hidden_sizes=[32,32]",
            "critic.num_members=2",
            "loss.num_samples=2",
            "optim.batch_size=32",
            f"optim.value_warmup_steps={max(1, int(args.pretrain_steps) // 2)}",
        ]
    return bdpo_vs_bc.CPU_PRESET + extra + list(args.config_set) + list(args.set)


def run_bdpo(task_name: str, seed: int, args, out_dir: Path) -> dict[str, dict]:
    """One run of the recipe's trainer: BDPO and BC (its behavior diffusion)."""
    overrides = bdpo_overrides(args)
    r = bdpo_vs_bc.run_seed(task_name, seed, overrides, out_dir / "bdpo_runs", diagnostics=False)
    p = int(args.pretrain_steps)
    t = r["timings_s"]
    runs = {}
    for m in ("bdpo", "bc"):
        run = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        evals = [e for e in run["evaluations"] if e.get("train_step", 0) > 0]
        key = "" if m == "bdpo" else "bc_"
        curve = [
            [p + e["train_step"], float(s), float(e[f"{key}return_mean"])]
            for e, (_, s) in zip(evals, r["methods"][m]["curve"])
        ]
        runs[m] = {"curve": curve, "run_dir": r["run_dir"]}
    bdpo_evals, bc_evals = t["bdpo_evals"], t["bc_and_diagnostic_evals"]
    train_only = t["train_incl_evals"] - bdpo_evals - bc_evals
    timings = {
        "run_total": t["run_total"],
        "pretrain": t["pretrain"],
        "train": train_only,
        "bdpo_evals": bdpo_evals,
        "bc_evals": bc_evals,
        "pretrain_steps_per_s": p / max(t["pretrain"], 1e-9),
        "train_steps_per_s": (int(args.steps) - p) / max(train_only, 1e-9),
    }
    runs["bdpo"]["timings_s"] = timings
    runs["bc"]["timings_s"] = {"shared_with": "bdpo", "bc_evals": bc_evals}
    runs["bdpo"]["overrides"] = overrides
    return runs


# --------------------------------------------------------------------------- report
def summarise(curve: list, common_from: int) -> dict:
    steps = [c[0] for c in curve]
    scores = [c[1] for c in curve]
    common = [i for i, s in enumerate(steps) if s >= common_from] or list(range(len(steps)))
    best = max(common, key=lambda i: scores[i])
    return {
        "final_score": scores[-1],
        "final_return": curve[-1][2],
        "best_score": scores[best],
        "best_at_step": steps[best],
    }


def aggregate(results: dict, common_from: int) -> dict:
    """``{task: {method: {final/best: mean, std, values; seeds; wall time}}}``."""
    out: dict = {}
    for task, per_seed in results.items():
        out[task] = {}
        for m in METHODS:
            runs = [per_seed[s][m] for s in sorted(per_seed) if m in per_seed[s]]
            if not runs:
                continue
            sums = [summarise(r["curve"], common_from) for r in runs]
            agg = {"seeds": [s for s in sorted(per_seed) if m in per_seed[s]]}
            for k in ("final_score", "best_score", "final_return"):
                v = np.array([x[k] for x in sums])
                agg[k] = {"mean": float(v.mean()), "std": float(v.std()), "values": v.tolist()}
            if m == "bc":
                wall = [r["timings_s"]["bc_evals"] for r in runs]
            elif m == "bdpo":
                wall = [r["timings_s"]["run_total"] - r["timings_s"]["bc_evals"] for r in runs]
            else:
                wall = [r["timings_s"]["total"] for r in runs]
            agg["wall_s_per_seed"] = float(np.mean(wall))
            out[task][m] = agg
    return out


def format_table(agg: dict) -> str:
    lines = [
        "| dataset | method | seeds | final score | best score | final return | wall time / seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, per_m in agg.items():
        for m, a in per_m.items():
            f, b, r = a["final_score"], a["best_score"], a["final_return"]
            wall = a["wall_s_per_seed"]
            wall_s = f"{wall:.0f} s" + (
                " (evals only; training shared with BDPO)" if m == "bc" else ""
            )
            lines.append(
                f"| {task.removeprefix('hopper-local-')} | {METHODS[m]} | {len(a['seeds'])} | "
                f"{f['mean']:.1f} ± {f['std']:.1f} | {b['mean']:.1f} ± {b['std']:.1f} | "
                f"{r['mean']:.0f} ± {r['std']:.0f} | {wall_s} |"
            )
    return "\n".join(lines)


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    colors = {"bdpo": "C3", "bc": "C7", "iql": "C0", "td3bc": "C2"}
    for ax, task in zip(axes[0], tasks):
        for m in METHODS:
            curves = [results[task][s][m]["curve"] for s in results[task] if m in results[task][s]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            x = np.array([c[0] for c in curves[0][:n]])
            y = np.array([[c[1] for c in cu[:n]] for cu in curves])
            ax.plot(x, y.mean(0), color=colors[m], label=f"{METHODS[m]} ({len(curves)} seeds)")
            ax.fill_between(
                x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), color=colors[m], alpha=0.2
            )
        ax.set_title(task)
        ax.set_xlabel("gradient steps (BDPO: pre-training + training)")
        ax.set_ylabel("normalised score (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, args, out_dir: Path, started: str) -> dict:
    common_from = int(args.pretrain_steps) + int(args.eval_interval)
    agg = aggregate(results, common_from)
    report = {
        "date": started,
        "updated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": bdpo_vs_bc.machine_info(),
        "torchrl": __import__("torchrl").__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "tasks": args.tasks,
            "seeds": args.seeds,
            "steps": args.steps,
            "pretrain_steps": args.pretrain_steps,
            "eval_interval": args.eval_interval,
            "episodes": args.episodes,
            "best_over_steps_from": common_from,
            "bdpo_overrides": bdpo_overrides(args),
            "iql": IQL_SETTINGS,
            "td3bc": TD3BC_SETTINGS,
        },
        "methods": METHODS,
        "aggregate": agg,
        "per_seed": results,
        "std": "population std over seeds (ddof=0)",
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=float))
    (out_dir / "table.md").write_text(format_table(agg) + "\n")
    plot_curves(results, out_dir / "curves.png")
    return report


def merge(paths: list[str], out_dir: Path) -> dict:
    """One report from several ``results.json`` of the same settings (seeds keyed as strings).

    The files may split one seed's methods between them (runs with different ``--methods``);
    a method reported twice for the same task and seed is refused.
    """
    reports = [json.loads(Path(p).read_text()) for p in paths]
    keys = ("steps", "pretrain_steps", "eval_interval", "episodes", "bdpo_overrides")
    first = reports[0]["settings"]
    for r in reports[1:]:
        if any(r["settings"][k] != first[k] for k in keys):
            raise SystemExit(f"different settings ({', '.join(keys)}): cannot merge {paths}")
    results: dict = {}
    for r in reports:  # a seed's methods may come from several files (--methods splits a seed)
        for task, per_seed in r["per_seed"].items():
            for seed, methods in per_seed.items():
                seen = results.setdefault(task, {}).setdefault(seed, {})
                twice = set(seen) & set(methods)
                if twice:
                    raise SystemExit(
                        f"{task} seed {seed}: {sorted(twice)} in more than one of {paths}"
                    )
                seen.update(methods)
    agg = aggregate(results, int(first["best_over_steps_from"]))
    merged = {**reports[0], "aggregate": agg, "per_seed": results, "merged_from": paths}
    merged["settings"] = {
        **first,
        "tasks": list(results),
        "seeds": sorted({int(s) for t in results.values() for s in t}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(merged, indent=2, default=float))
    (out_dir / "table.md").write_text(format_table(agg) + "\n")
    plot_curves(results, out_dir / "curves.png")
    print(format_table(agg))
    return merged


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=["hopper-local-medium-expert"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--methods",
        nargs="+",
        default=["bdpo", "iql", "td3bc"],
        choices=["bdpo", "iql", "td3bc"],
        help="bdpo also gives bc",
    )
    p.add_argument("--steps", type=int, default=30000, help="gradient steps of every method")
    p.add_argument("--pretrain-steps", type=int, default=20000, help="BDPO's share of --steps")
    p.add_argument("--eval-interval", type=int, default=2500)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra BDPO recipe overrides (after the CPU preset)",
    )
    p.add_argument(
        "--config-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe overrides for every method (e.g. data.name=... with task=custom)",
    )
    p.add_argument("--out", default="runs/offline_baselines")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny networks, 40 steps, 2 episodes, one seed",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="combine the results.json of runs of the same settings (e.g. one process per "
        "dataset) into --out; trains nothing",
    )
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.quick:
        args.steps, args.pretrain_steps, args.eval_interval, args.episodes = 40, 20, 10, 2
        args.seeds = args.seeds[:1]
    torch.set_num_threads(1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    if args.quick:
        IQL_SETTINGS.update(hidden_sizes=[32, 32], batch_size=32)
        TD3BC_SETTINGS.update(hidden_sizes=[32, 32], batch_size=32)
    results: dict = {}
    report: dict = {}
    for task in args.tasks:
        for seed in args.seeds:
            runs = results.setdefault(task, {}).setdefault(seed, {})
            for method in args.methods:
                print(f"{task} seed {seed}: {method}", flush=True)
                if method == "bdpo":
                    runs.update(run_bdpo(task, seed, args, out_dir))
                else:
                    runs[method] = run_baseline(method, task, seed, args)
                report = write_report(results, args, out_dir, started)
    print(format_table(report["aggregate"]))
    print(out_dir / "results.json")
    return report


if __name__ == "__main__":
    main()
