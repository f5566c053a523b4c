"""Why does a BDPO run score what it scores? Evaluates a finished run's last checkpoint four ways
and prints what its critic thinks of the actions each policy takes.

    python benchmarks/diagnose_bdpo_run.py runs/offline_baselines/bdpo_runs/hopper-local-medium-expert_seed0

Policies (all on the recipe's evaluation episodes, ``evaluation_seed(seed)``):

* ``bdpo``: the recipe's evaluation policy (EMA actor, ``eval.num_candidates`` candidates, Q selection);
* ``actor_1``: the EMA actor, one sample, no selection;
* ``behavior_1``: the EMA behavior diffusion, one sample (the benchmark's BC);
* ``behavior_qsel``: the behavior diffusion with the same Q selection.

Critic diagnostics on ``--batch`` dataset transitions: ensemble-mean EMA Q of the dataset action,
of one actor sample, of one behavior sample and of the Q-selected actor candidate, the ensemble's
spread, and how far (L2) the actor's and the selected actions lie from the dataset action.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import bdpo_offline  # noqa: E402
from bdpo_utils import evaluate_env, evaluation_seed  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from torchrl_bdpo import QSelectionPolicy  # noqa: E402
from torchrl_bdpo.modules.actor import call_network  # noqa: E402
from torchrl_bdpo.scores import normalized_score  # noqa: E402


def load_finished_run(run_dir: Path):
    """``(cfg, trainer)`` of a recipe run directory, its latest checkpoint loaded."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    trainer = bdpo_offline.BDPOTrainer(cfg, run_dir)
    trainer.load_checkpoint()
    return cfg, trainer


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir)
    cfg, trainer = load_finished_run(run_dir)
    loss, task = trainer.loss, trainer.task
    k = int(cfg.eval.num_candidates)
    out: dict = {"run_dir": str(run_dir), "step": trainer.step, "policies": {}}
    policies = {
        "bdpo": ("actor", k),
        "actor_1": ("actor", 1),
        "behavior_1": ("behavior", 1),
        "behavior_qsel": ("behavior", k),
    }
    for name, (model, cands) in policies.items():
        ret = evaluate_env(
            trainer.eval_env,
            QSelectionPolicy.from_loss(loss, cands, model=model),
            int(cfg.env.max_episode_steps),
            seed=evaluation_seed(int(cfg.seed)),
        )
        score = normalized_score(ret, ref_min=task.ref_min_score, ref_max=task.ref_max_score)
        out["policies"][name] = {"return": float(ret.mean()), "score": float(score.mean())}
        print(f"{name:>14}: score {score.mean():6.1f}  return {ret.mean():7.1f}", flush=True)

    torch.manual_seed(0)
    batch = trainer.buffer.sample(args.batch)
    obs, act = batch["observation"], batch["action"]
    qnet, qp = loss.qvalue_network, loss.target_qvalue_network_params
    with torch.no_grad(), qp.to_module(qnet):

        def q(a):
            v = call_network(qnet, qnet.out_keys[0], obs, a)
            return v.mean(-1), v.std(-1)

        actor = QSelectionPolicy.from_loss(loss, 1, model="actor")
        behavior = QSelectionPolicy.from_loss(loss, 1, model="behavior")
        selected = QSelectionPolicy.from_loss(loss, k, model="actor")
        acts = {
            "dataset": act,
            "actor_1": actor.select(obs),
            "behavior_1": behavior.select(obs),
            "bdpo_selected": selected.select(obs),
        }
        crit = {}
        for name, a in acts.items():
            mean, spread = q(a)
            crit[name] = {
                "q_mean": float(mean.mean()),
                "q_ensemble_std": float(spread.mean()),
                "l2_to_dataset_action": float((a - act).norm(dim=-1).mean()),
                "abs_action_mean": float(a.abs().mean()),
                "frac_abs_action_gt_0.99": float((a.abs() > 0.99).float().mean()),
            }
            print(f"{name:>14}: " + ", ".join(f"{kk} {vv:.3f}" for kk, vv in crit[name].items()))
    out["critic"] = crit
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
