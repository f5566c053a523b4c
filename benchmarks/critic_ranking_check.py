"""Does a finished BDPO run's critic rank candidate actions the way the environment does?

    python benchmarks/critic_ranking_check.py runs/ob/a1/bdpo_runs/hopper-local-medium_seed0

BDPO evaluates by drawing ``C`` candidate actions per state and executing the one with the highest
ensemble-mean EMA Q. This script measures, on ``--states`` dataset states, how that ranking compares
with the candidates' true values, estimated by Monte Carlo in the simulator:

1. The MuJoCo state is rebuilt from the observation (Hopper/Walker2d/HalfCheetah-v5 observe
   ``qpos[1:]`` and ``qvel``; the unobserved x position does not change the dynamics or the reward).
2. ``C`` candidates are drawn from the run's EMA model (``--model``: the behavior diffusion by default,
   the candidates BC would see; ``actor`` for BDPO's own), scored by the EMA critic.
3. Each candidate is executed, then the EMA behavior model (one sample per step, i.e. the benchmark's
   BC policy) or ``--continue-with actor`` acts for up to ``--horizon`` steps, ``--rollouts`` times;
   the discounted sum of the run's scaled rewards (the critic's units; a fall ends the sum) is the
   candidate's Monte Carlo value ``G``.

Printed per run (means over states, ± standard error):

* ``spearman(Q, G)``: rank correlation between the critic and the Monte Carlo values within a state;
* ``split-half spearman(G, G')``: the same between two halves of the rollouts, i.e. how well the
  Monte Carlo values themselves are determined (the ceiling for the line above);
* ``G(argmax Q) - mean G``: what Q selection gains over a random candidate, and ``max G - mean G``
  what an oracle would gain (scaled-reward units);
* ``spearman(Q, r_0)``, ``spearman(Q, |a|)``: whether the critic ranks by the first reward or by
  the action's size; ``fall rate``: the share of rollouts that fall, for the Q-selected candidate
  and on average;
* ``mean Q`` against ``mean G``: the critic's level against the Monte Carlo values;
* ``spearman(Q, distance to centroid)`` and ``outlier rank``: whether the Q-selected candidate is one
  of the candidates' tails (the share of the others nearer the candidates' mean; 0.5 is chance);
* ``actor-behavior path KL``: the KL penalty of the critic's target (the EMA actor's reverse paths
  against the EMA behavior model, per step and summed) on 1 024 dataset next states, and ``η`` times it;
* ``direction consistency``: the length of the mean unit vector from the candidates' mean to the
  Q-selected candidate over states (1: the critic pushes every state the same way), beside the same
  figure for a fixed candidate (chance level for this many states).

``--episodes-rules`` also runs the recipe's evaluation episodes with four ways to pick among the
``C`` candidates: ``random`` (one sample), ``q`` (BDPO's rule), ``central`` (nearest the candidates'
mean) and ``outlier`` (farthest from it); the last two use no critic.

No figures here are timed; the script runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bdpo_utils import evaluate_env, evaluation_seed  # noqa: E402
from diagnose_bdpo_run import load_finished_run  # noqa: E402

from torchrl_bdpo import QSelectionPolicy  # noqa: E402
from torchrl_bdpo.data import load_offline_dataset  # noqa: E402
from torchrl_bdpo.data.transforms import return_range_scale  # noqa: E402
from torchrl_bdpo.modules.actor import call_network  # noqa: E402
from torchrl_bdpo.scores import normalized_score  # noqa: E402


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation of two 1-D arrays (average ranks for ties); nan if either is constant."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):  # average the ranks of ties
            tie = v == val
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _make_envs(task, n: int):
    import gymnasium as gym

    if task.env_spec:
        spec = gym.envs.registration.EnvSpec.from_json(task.env_spec)
        return [gym.make(spec) for _ in range(n)]
    return [gym.make(task.env_id) for _ in range(n)]


def _set_state(env, obs: np.ndarray) -> None:
    """Rebuilds a locomotion env's MuJoCo state from an observation ``[qpos[1:], qvel]``."""
    u = env.unwrapped
    nq = u.model.nq
    qpos = np.concatenate([[0.0], obs[: nq - 1]])
    qvel = obs[nq - 1 : nq - 1 + u.model.nv]
    u.set_state(qpos, qvel)


def _distance_to_centroid(cands: torch.Tensor) -> torch.Tensor:
    """``[*batch, C, A]`` -> ``[*batch, C]``: each candidate's L2 distance to their mean."""
    return (cands - cands.mean(-2, keepdim=True)).norm(dim=-1)


class RuleSelection(QSelectionPolicy):
    """Draws candidates like :class:`QSelectionPolicy`, then executes the one a ``rule`` picks:
    ``"q"`` (highest ensemble-mean Q, BDPO's rule), ``"central"`` (nearest to the candidates'
    mean, no critic), ``"outlier"`` (farthest from it, no critic) or ``"random"`` (the first)."""

    rule = "q"

    @torch.no_grad()
    def select(self, obs: torch.Tensor) -> torch.Tensor:
        if self.rule == "q":
            return super().select(obs)
        c = self.num_candidates
        obs_c = obs.unsqueeze(-2).expand(*obs.shape[:-1], c, obs.shape[-1])
        cands = self._actor.policy.sample(obs_c, deterministic=not self.stochastic)
        if self.rule == "random":
            return cands[..., 0, :]
        dist = _distance_to_centroid(cands)
        pick = dist.argmin(-1) if self.rule == "central" else dist.argmax(-1)
        idx = pick[..., None, None].expand(*pick.shape, 1, cands.shape[-1])
        return cands.gather(-2, idx).squeeze(-2)


def evaluate_rules(trainer, cfg, model: str, num_candidates: int) -> dict:
    """Normalised score (or return) of each selection rule on the recipe's evaluation episodes."""
    out = {}
    task = trainer.task
    for rule in ("random", "q", "central", "outlier"):
        policy = RuleSelection.from_loss(trainer.loss, num_candidates, model=model)
        policy.rule = rule
        ret = evaluate_env(
            trainer.eval_env,
            policy,
            int(cfg.env.max_episode_steps),
            seed=evaluation_seed(int(cfg.seed)),
        )
        score = normalized_score(ret, ref_min=task.ref_min_score, ref_max=task.ref_max_score)
        out[rule] = {"return": float(ret.mean()), "score": float(np.mean(score))}
    return out


def rollout_values(
    envs,
    obs0: np.ndarray,
    first_actions: np.ndarray,
    policy,
    horizon: int,
    gamma: float,
    scale: float,
):
    """Executes ``first_actions[i]`` from state ``obs0[i]`` in ``envs[i]``, then ``policy``.

    Returns the discounted scaled returns ``G [n]``, the first rewards ``r_0 [n]`` (scaled) and
    whether each rollout fell ``[n]``.
    """
    n = len(envs)
    for env, o in zip(envs, obs0):
        _set_state(env, o)
    ret, r0 = np.zeros(n), np.zeros(n)
    alive, fell = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    actions = first_actions
    obs = np.zeros_like(obs0)
    for t in range(horizon):
        idx = np.flatnonzero(alive)
        for j, i in enumerate(idx):
            o, r, term, _trunc, _ = envs[i].step(actions[j])
            ret[i] += gamma**t * scale * r
            if t == 0:
                r0[i] = scale * r
            obs[i] = o
            if term:
                alive[i], fell[i] = False, True
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        with torch.no_grad():
            actions = policy(torch.as_tensor(obs[idx], dtype=torch.float32)).clamp(-1, 1).numpy()
    return ret, r0, fell


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run_dir")
    p.add_argument("--states", type=int, default=32)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--rollouts", type=int, default=8, help="per candidate (even: split halves)")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--model", choices=("behavior", "actor"), default="behavior")
    p.add_argument("--continue-with", choices=("behavior", "actor"), default="behavior")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--episodes-rules",
        action="store_true",
        help="also evaluate the selection rules (random, q, central, outlier) on the recipe's episodes",
    )
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.rollouts < 2 or args.rollouts % 2:
        p.error("--rollouts must be even and >= 2 (the split-half figure needs two halves)")
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir)
    cfg, trainer = load_finished_run(run_dir)
    loss, task = trainer.loss, trainer.task
    if task.bandit or task.env_id is None:
        raise SystemExit(
            f"{task.name}: needs a simulator task (a locomotion env), not {task.domain!r}."
        )
    scale = 1.0
    if cfg.data.reward_transform == "locomotion":
        scale = return_range_scale(load_offline_dataset(str(cfg.data.name)).data, 1000.0)
    gamma = float(cfg.loss.gamma)

    gen = torch.Generator().manual_seed(args.seed)
    data = task.data
    ok = ~data["next", "done"].squeeze(-1)
    rows = torch.nonzero(ok).squeeze(-1)
    rows = rows[torch.randperm(rows.numel(), generator=gen)[: args.states]]
    obs = data["observation"][rows]  # [S, O]
    s, c, r = args.states, args.candidates, args.rollouts
    torch.manual_seed(args.seed)
    cand_policy = QSelectionPolicy.from_loss(loss, 1, model=args.model)
    cont_policy = QSelectionPolicy.from_loss(loss, 1, model=args.continue_with)
    qnet, qp = loss.qvalue_network, loss.target_qvalue_network_params
    with torch.no_grad():
        obs_c = obs.unsqueeze(1).expand(s, c, obs.shape[-1])
        cands = cand_policy.select(obs_c)  # [S, C, A]
        with qp.to_module(qnet):
            q = call_network(qnet, qnet.out_keys[0], obs_c, cands)  # [S, C, K]
    q_mean = q.mean(-1).numpy()

    envs = _make_envs(task, s * c * r)
    # The state rebuilt from an observation must reproduce the dataset's transition.
    recon = []
    for i in range(s):
        envs[i].reset(seed=args.seed)
        _set_state(envs[i], obs[i].double().numpy())
        nxt = envs[i].step(data["action"][rows[i]].numpy())[0]
        recon.append(float(np.abs(nxt - data["next", "observation"][rows[i]].numpy()).max()))
    for i, env in enumerate(envs):
        env.reset(seed=args.seed * 100_003 + i)
    obs0 = (
        obs_c.unsqueeze(2)
        .expand(s, c, r, obs.shape[-1])
        .reshape(-1, obs.shape[-1])
        .numpy()
        .astype(np.float64)
    )
    first = cands.unsqueeze(2).expand(s, c, r, cands.shape[-1]).reshape(-1, cands.shape[-1]).numpy()
    g, r0, fell = rollout_values(envs, obs0, first, cont_policy.select, args.horizon, gamma, scale)
    g, r0, fell = g.reshape(s, c, r), r0.reshape(s, c, r), fell.reshape(s, c, r)
    g_mean = g.mean(-1)
    size = cands.abs().mean(-1).numpy()
    spread = _distance_to_centroid(cands).numpy()  # [S, C]

    per_state = {
        "spearman_q_g": [_spearman(q_mean[i], g_mean[i]) for i in range(s)],
        "split_half_spearman_g": [
            _spearman(g[i, :, : r // 2].mean(-1), g[i, :, r // 2 :].mean(-1)) for i in range(s)
        ],
        "spearman_q_r0": [_spearman(q_mean[i], r0[i].mean(-1)) for i in range(s)],
        "spearman_q_abs_action": [_spearman(q_mean[i], size[i]) for i in range(s)],
        "spearman_g_abs_action": [_spearman(g_mean[i], size[i]) for i in range(s)],
        "spearman_q_distance_to_centroid": [_spearman(q_mean[i], spread[i]) for i in range(s)],
        # share of the other candidates nearer their centroid than the Q-selected one (0.5: chance)
        "outlier_rank_argmax_q": [
            float((spread[i] < spread[i, q_mean[i].argmax()]).sum() / (c - 1)) for i in range(s)
        ],
        "gain_argmax_q": [g_mean[i, q_mean[i].argmax()] - g_mean[i].mean() for i in range(s)],
        "gain_oracle": [g_mean[i].max() - g_mean[i].mean() for i in range(s)],
        "fall_rate_argmax_q": [fell[i, q_mean[i].argmax()].mean() for i in range(s)],
        "fall_rate_mean": [fell[i].mean() for i in range(s)],
    }
    summary = {}
    for name, vals in per_state.items():
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        summary[name] = {
            "mean": float(v.mean()),
            "sem": float(v.std() / np.sqrt(max(len(v), 1))),
            "n": len(v),
        }
    # Does the critic push every state's pick the same way? |mean unit deviation| of the
    # Q-selected candidates from their centroid (1: always the same direction), against
    # the same figure for a fixed candidate (index 0: what chance gives with S states).
    dev = cands - cands.mean(-2, keepdim=True)  # [S, C, A]
    unit = dev / dev.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sel = torch.as_tensor(q_mean.argmax(1))
    mean_unit = unit[torch.arange(s), sel].mean(0)
    summary["direction_consistency_argmax_q"] = float(mean_unit.norm())
    summary["direction_argmax_q"] = [float(x) for x in mean_unit]
    summary["direction_consistency_chance"] = float(unit[:, 0].mean(0).norm())
    # How far the EMA actor has moved from the EMA behavior model: the path KL P(s') of the
    # critic's target on dataset next states, and what it costs in value units (eta * P).
    torch.manual_seed(args.seed)
    rows_kl = torch.randint(0, data.shape[0], (1024,), generator=gen)
    with torch.no_grad():
        _, meta = loss.q_target(data[rows_kl])
    summary["path_kl_actor_behavior"] = float(meta["penalty"])
    summary["path_kl_per_step_n1_to_nN"] = [float(x) for x in meta["kl_per_step"]]
    summary["eta_times_path_kl"] = float(loss.eta) * summary["path_kl_actor_behavior"]
    summary["reconstruction_max_abs_error_median"] = float(np.median(recon))
    summary["q_mean"] = float(q_mean.mean())
    summary["g_mean"] = float(g_mean.mean())
    summary["q_range_within_state"] = float((q_mean.max(1) - q_mean.min(1)).mean())
    summary["g_range_within_state"] = float((g_mean.max(1) - g_mean.min(1)).mean())
    out = {
        "run_dir": str(run_dir),
        "step": trainer.step,
        "settings": {k: v for k, v in vars(args).items() if k != "run_dir"}
        | {"gamma": gamma, "reward_scale": scale},
        "summary": summary,
        "per_state": {k: [float(x) for x in v] for k, v in per_state.items()},
    }
    print(
        f"{run_dir} (step {trainer.step}; {s} states x {c} {args.model} candidates x {r} rollouts, "
        f"horizon {args.horizon}, continued by {args.continue_with})"
    )
    for name in per_state:
        m = summary[name]
        print(f"  {name:>24}: {m['mean']:+.3f} +- {m['sem']:.3f} (n={m['n']})")
    print(
        f"  {'mean Q / mean G':>24}: {summary['q_mean']:.2f} / {summary['g_mean']:.2f}   "
        f"within-state range Q {summary['q_range_within_state']:.2f}, G {summary['g_range_within_state']:.2f}"
    )
    print(
        f"  {'direction consistency':>24}: argmax Q {summary['direction_consistency_argmax_q']:.3f}, "
        f"a fixed candidate {summary['direction_consistency_chance']:.3f} "
        f"(mean direction {np.round(summary['direction_argmax_q'], 2).tolist()})"
    )
    print(
        f"  {'actor-behavior path KL':>24}: {summary['path_kl_actor_behavior']:.3f} "
        f"(per step n=1..N {np.round(summary['path_kl_per_step_n1_to_nN'], 3).tolist()}; "
        f"eta * KL = {summary['eta_times_path_kl']:.3f} value units)"
    )
    if args.episodes_rules:
        out["rules"] = evaluate_rules(trainer, cfg, args.model, c)
        for rule, v in out["rules"].items():
            print(f"  {'rule ' + rule:>24}: score {v['score']:6.1f}  return {v['return']:7.1f}")
    print(
        f"  {'state rebuild error':>24}: median max|o' - o'_data| = {summary['reconstruction_max_abs_error_median']:.2e}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
