"""Collect D4RL-style Minari datasets with an online SAC agent (TorchRL's ``SACLoss``).

    python recipes/collect_dataset.py                          # Hopper-v5, CPU-sized defaults
    python recipes/collect_dataset.py --config-name d4rl       # D4RL-grade (~51 min on one thread)
    python recipes/collect_dataset.py env.id=HalfCheetah-v5 seed=1
    python recipes/collect_dataset.py output_dir=/data/minari train.total_frames=1000000 \\
        rollouts.medium_steps=1000000 rollouts.expert_steps=1000000

What it does (settings in ``config_collect/collect.yaml``):

1. Measures the random reference return (uniform-random actions).
2. Trains SAC online on ``GymEnv(env.id)`` (``DoubleToFloat``, ``StepCounter``, ``RewardSum``)
   with a TorchRL ``Collector``, a uniform ``ReplayBuffer(LazyTensorStorage)`` and
   ``SoftUpdate`` targets; deterministic evaluations every ``train.eval_interval`` env steps.
3. Picks the *medium* point after training: the first evaluation whose return reached
   ``medium.fraction`` of the expert reference (``medium.reference=expert``) or of the final
   policy's return (``final``), else mid-training. A policy snapshot and the replay buffer's
   size are kept at every evaluation, so the choice can be made afterwards.
4. Writes, with Minari's own ``create_dataset_from_buffers`` (through
   ``build_minari_dataset`` of ``recipes/minari_building.py``):

   * ``<prefix>/<env>/medium-<v>``: episodes of the medium policy;
   * ``<prefix>/<env>/medium-replay-<v>``: every transition in the replay buffer up to the
     medium point (random warm-up included), split into episodes; terminations and time-limit
     truncations stay distinct, and the episode still running at the medium point ends with
     ``truncations=True``;
   * ``<prefix>/<env>/expert-<v>``: episodes of the final policy;
   * ``<prefix>/<env>/medium-expert-<v>``: the medium and the expert datasets' episodes together
     (D4RL's definition);

   each with ``ref_min_score`` (random) and ``ref_max_score`` (expert reference) in its metadata.

The recipe then trains on them offline with no network::

    python recipes/bdpo_offline.py task=hopper-local-medium-replay
    python recipes/bdpo_offline.py task=custom data.name=bdpo-local/hopper/medium-replay-v0

The last line printed is the path of ``summary.json`` (returns, sizes, timings).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the settings are checked with this (no torch) before torch is imported
from bdpo_config import ConfigError, exit_on_config_error, validate_collect_config  # noqa: E402
from run_progress import Progress, plain_torchrl_logging  # noqa: E402


def _import_runtime() -> None:
    """Imports torch, TorchRL and Gymnasium (seconds): only once the settings are valid, so
    that ``--help`` and configuration errors come at once."""
    global gym, np, torch, TensorDict, NormalParamExtractor, TensorDictModule, TED_KEYS
    import gymnasium as gym
    import numpy as np
    import torch
    from tensordict import TensorDict
    from tensordict.nn import NormalParamExtractor, TensorDictModule

    from torchrl_bdpo.data import TED_KEYS


if __name__ != "__main__":  # imported (tests): load it all now
    _import_runtime()

log = logging.getLogger("collect")


class CollectError(ConfigError):
    """A user-facing settings problem, found before any training (reported without a traceback)."""


DATASET_KINDS = ("medium", "medium-replay", "expert", "medium-expert")


# ------------------------------------------------------------------------------- names
def env_short_name(env_id: str) -> str:
    """``"HalfCheetah-v5"`` -> ``"halfcheetah"`` (the D4RL family name)."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1]).lower()


def dataset_ids(cfg: DictConfig) -> dict[str, str]:
    name = cfg.env.name or env_short_name(str(cfg.env.id))
    return {
        kind: f"{cfg.dataset_prefix}/{name}/{kind}-{cfg.dataset_version}" for kind in DATASET_KINDS
    }


@contextmanager
def minari_path(output_dir: str | None):
    """Temporarily point ``MINARI_DATASETS_PATH`` at ``output_dir`` (unchanged when None)."""
    if output_dir is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(output_dir).expanduser().resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


# --------------------------------------------------------------------------------- env
def make_env(env_id: str, max_episode_steps: int, reward_sum: bool = True):
    from torchrl.envs import Compose, DoubleToFloat, GymEnv, RewardSum, StepCounter, TransformedEnv

    transforms = [DoubleToFloat(), StepCounter(max_steps=max_episode_steps)]
    if reward_sum:
        transforms.append(RewardSum())
    # Gymnasium's own time limit set to the same value (its default, e.g. 1000, would otherwise
    # cut longer episodes first; the random reference's rollouts use this limit too)
    base = GymEnv(env_id, max_episode_steps=int(max_episode_steps))
    return TransformedEnv(base, Compose(*transforms))


# -------------------------------------------------------------------------------- SAC
def tanh_normal_actor(loc_scale: torch.nn.Module, action_spec):
    """A ``ProbabilisticActor`` drawing ``TanhNormal`` actions within ``action_spec``'s bounds.

    ``loc_scale`` maps ``observation`` ``[*B, O]`` to ``(loc, scale)`` ``[*B, A]`` each (e.g. an MLP
    followed by a ``NormalParamExtractor``); ``tanh_loc`` off, random actions by default.
    """
    from torchrl.modules import ProbabilisticActor, TanhNormal

    return ProbabilisticActor(
        TensorDictModule(loc_scale, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": False,
        },
        return_log_prob=False,
        default_interaction_type="random",
    )


def make_sac(cfg: DictConfig, env):
    """Actor (``ProbabilisticActor`` + ``TanhNormal``), twin critics and ``SACLoss``."""
    from torchrl.modules import MLP, ValueOperator
    from torchrl.objectives import SACLoss

    action_spec = (
        env.action_spec_unbatched if hasattr(env, "action_spec_unbatched") else env.action_spec
    )
    act_dim = int(action_spec.shape[-1])
    actor_mlp = MLP(
        out_features=2 * act_dim,
        num_cells=list(cfg.sac.actor_hidden),
        activation_class=torch.nn.ReLU,
    )
    actor = tanh_normal_actor(
        torch.nn.Sequential(actor_mlp, NormalParamExtractor(scale_mapping="biased_softplus_1.0")),
        action_spec,
    )
    qnet = MLP(
        out_features=1, num_cells=list(cfg.sac.critic_hidden), activation_class=torch.nn.ReLU
    )
    qvalue = ValueOperator(qnet, in_keys=["observation", "action"])
    # lazy layers: one forward to materialise them
    with torch.no_grad():
        probe = env.fake_tensordict()
        actor(probe)
        qvalue(probe)
    loss = SACLoss(
        actor,
        qvalue,
        num_qvalue_nets=int(cfg.sac.num_qvalue_nets),
        loss_function="l2",
        alpha_init=float(cfg.sac.alpha_init),
        action_spec=action_spec,
        delay_qvalue=True,
    )
    loss.make_value_estimator(gamma=float(cfg.sac.gamma))
    return actor, loss


def make_update(loss, *, lr: float, tau: float, compile: bool = False):
    """One SAC gradient step as a callable ``step(sample) -> None``: actor, critic and
    entropy-weight losses summed, one backward, one Adam step, then the Polyak update of the
    target critics (``SoftUpdate``).

    ``compile=True`` runs the loss, backward and Adam step through ``torch.compile`` (Inductor,
    C++ on CPU), as TorchRL's own SAC example does; the target update stays eager. The first
    call compiles (tens of seconds); the result is the same computation.
    """
    from torchrl.objectives import SoftUpdate

    target_updater = SoftUpdate(loss, tau=tau)
    optim = torch.optim.Adam(loss.parameters(), lr=lr)

    def grad_step(sample):
        out = loss(sample)
        value = out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]
        value.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    if compile:
        grad_step = torch.compile(grad_step)

    def step(sample) -> None:
        grad_step(sample)
        target_updater.step()

    step.optim = optim
    return step


# ----------------------------------------------------------------------- rollouts/eval
def run_episodes(
    env,
    policy,
    *,
    min_steps: int = 0,
    num_episodes: int = 0,
    max_steps: int,
    seed: int,
    exploration: str = "random",
) -> list[TensorDict]:
    """Whole episodes of ``policy``: ``num_episodes`` of them, or until ``min_steps`` transitions."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    mode = ExplorationType.RANDOM if exploration == "random" else ExplorationType.DETERMINISTIC
    episodes, steps = [], 0
    with set_exploration_type(mode), torch.no_grad():
        while (num_episodes and len(episodes) < num_episodes) or (
            not num_episodes and steps < min_steps
        ):
            env.set_seed(seed + len(episodes))
            td = env.rollout(max_steps, policy, break_when_any_done=True)
            episodes.append(td.select(*TED_KEYS))
            steps += td.shape[0]
    return episodes


def episode_return(td: TensorDict) -> float:
    return float(td["next", "reward"].sum())


def ted_episode_to_minari(td: TensorDict) -> dict[str, np.ndarray]:
    """One episode of TED transitions (batch ``[L]``) -> Minari arrays (``observations`` ``[L+1]``)."""
    obs = torch.cat([td["observation"], td["next", "observation"][-1:]], 0)
    return {
        "observations": obs.double().numpy(),
        "actions": td["action"].float().numpy(),
        "rewards": td["next", "reward"].reshape(-1).double().numpy(),
        "terminations": td["next", "terminated"].reshape(-1).numpy().astype(bool),
        "truncations": td["next", "truncated"].reshape(-1).numpy().astype(bool),
    }


def split_transitions(data: TensorDict) -> list[dict[str, np.ndarray]]:
    """Consecutive transitions of one env (replay-buffer order) -> Minari episodes.

    Episodes end after each ``done`` step; ``terminated``/``truncated`` are kept as they are.
    A trailing episode that had not ended is closed with ``truncations=True`` (it was cut, not
    terminated), so every transition of ``data`` is kept.
    """
    done = data["next", "done"].reshape(-1)
    ends = (torch.nonzero(done).reshape(-1) + 1).tolist()
    if not ends or ends[-1] != data.shape[0]:
        ends.append(data.shape[0])
    episodes, start = [], 0
    for end in ends:
        ep = ted_episode_to_minari(data[start:end])
        if not (ep["terminations"][-1] or ep["truncations"][-1]):
            ep["truncations"][-1] = True
        episodes.append(ep)
        start = end
    return episodes


def random_reference(env_id: str, episodes: int, seed: int, max_steps: int) -> float:
    import gymnasium as gym
    from env_rollouts import rollout_episodes, uniform_random_policy

    env = gym.make(env_id)
    policy = uniform_random_policy(env.action_space, seed=seed)
    env.close()
    eps = rollout_episodes(env_id, policy, num_episodes=episodes, seed=seed, max_steps=max_steps)
    return float(np.mean([ep["rewards"].sum() for ep in eps]))


def resolve_reference(value: Any, kind: str, env_id: str, measured: float | None) -> float:
    from torchrl_bdpo.scores import d4rl_reference

    if isinstance(value, (int, float)):
        return float(value)
    if value == "d4rl":
        try:
            ref = d4rl_reference(env_short_name(env_id))
        except KeyError as err:
            raise CollectError(
                f"reference.{kind}=d4rl, but D4RL has no reference returns for {env_id} "
                f"({err.args[0]}); set reference.{kind} to a number or to "
                f"'{'measured' if kind == 'random' else 'final'}'."
            ) from None
        return float(ref.random if kind == "random" else ref.expert)
    if value in ("measured", "final"):
        if measured is None:
            raise CollectError(f"reference.{kind}={value} has no measured value")
        return float(measured)
    raise CollectError(
        f"reference.{kind} must be a number, 'd4rl' or '{'measured' if kind == 'random' else 'final'}'"
    )


# --------------------------------------------------------------------------- training
def train_sac(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Online SAC; returns the replay buffer, policy snapshots (one per evaluation and one at
    mid-training) and the final actor."""
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    t = cfg.train
    env_id, max_steps = str(cfg.env.id), int(cfg.env.max_episode_steps)
    total = int(t.total_frames)
    env = make_env(env_id, max_steps)
    env.set_seed(int(cfg.seed))
    eval_env = make_env(env_id, max_steps, reward_sum=False)
    actor, loss = make_sac(cfg, env)
    update = make_update(
        loss, lr=float(cfg.sac.lr), tau=float(cfg.sac.tau), compile=bool(cfg.sac.compile)
    )
    buffer = ReplayBuffer(storage=LazyTensorStorage(total), batch_size=int(cfg.sac.batch_size))
    collector = Collector(
        env,
        actor,
        frames_per_batch=int(t.frames_per_batch),
        total_frames=total,
        init_random_frames=int(t.init_random_frames),
        auto_register_policy_transforms=False,
    )
    snapshots: list[dict[str, Any]] = []
    midpoint: dict[str, Any] | None = None
    evals: list[dict[str, float]] = []
    train_returns: list[float] = []
    train_curve: list[tuple[int, float]] = []  # (env steps at the episode's end, its return)
    frames, updates, update_time, debt = 0, 0, 0.0, 0.0
    next_eval = int(t.eval_interval)
    t0 = time.time()
    # a bar on a terminal; in a file, a plain log line every minute
    bar = Progress(
        total, desc=f"SAC {env_id}", unit="frame", bar=None if cfg.progress else False, logger=log
    )
    last_eval = float("nan")
    try:
        for batch in collector:
            batch = batch.reshape(-1)
            n = batch.shape[0]
            buffer.extend(batch.select(*TED_KEYS))
            done = batch["next", "done"].reshape(-1)
            if done.any():
                ended = batch["next", "episode_reward"].reshape(-1)[done].tolist()
                train_returns += ended
                at = (frames + 1 + torch.nonzero(done).reshape(-1)).tolist()
                train_curve += list(zip(at, ended))
            frames += n
            # UTD updates for every env step after the random warm-up
            debt += max(0, min(n, frames - int(t.init_random_frames))) * float(t.utd)
            if debt >= 1:
                tu = time.time()
                while debt >= 1:
                    update(buffer.sample())
                    updates += 1
                    debt -= 1
                update_time += time.time() - tu
            collector.update_policy_weights_()
            if midpoint is None and frames >= total // 2:
                midpoint = {
                    "frames": frames,
                    "buffer_size": len(buffer),
                    "actor": copy.deepcopy(actor.state_dict()),
                    "eval_return": last_eval,  # of the evaluation before it
                }
            if frames >= next_eval or frames >= total:
                next_eval += int(t.eval_interval)
                eps = run_episodes(
                    eval_env,
                    actor,
                    num_episodes=int(t.eval_episodes),
                    max_steps=max_steps,
                    seed=int(cfg.seed) + 10_000 + frames,
                    exploration="deterministic",
                )
                last_eval = float(np.mean([episode_return(e) for e in eps]))
                evals.append(
                    {
                        "frames": frames,
                        "updates": updates,
                        "return": last_eval,
                        "time_s": time.time() - t0,
                    }
                )
                log.info("eval @ %d frames: return %.1f", frames, last_eval)
                snapshots.append(
                    {
                        "frames": frames,
                        "buffer_size": len(buffer),
                        "eval_return": last_eval,
                        "actor": copy.deepcopy(actor.state_dict()),
                    }
                )
            recent = np.mean(train_returns[-5:]) if train_returns else float("nan")
            bar.set_postfix(
                ep_return=f"{recent:.0f}",
                eval=f"{last_eval:.0f}",
                ups=f"{updates / max(update_time, 1e-9):.0f}/s",
            )
            bar.update(n)
    finally:
        bar.close()
        collector.shutdown()
        env.close()
    torch.save({"actor": actor.state_dict(), "loss": loss.state_dict()}, run_dir / "final_actor.pt")
    return {
        "actor": actor,
        "eval_env": eval_env,
        "buffer": buffer,
        "snapshots": snapshots,
        "midpoint": midpoint,
        "evals": evals,
        "train_returns": train_returns,
        "train_curve": train_curve,
        "frames": frames,
        "updates": updates,
        "train_time_s": time.time() - t0,
        "update_time_s": update_time,
    }


def choose_medium(
    snapshots: list[dict[str, Any]], midpoint: dict[str, Any], threshold: float, min_frames: int
) -> dict[str, Any]:
    """The first evaluated policy (after ``min_frames``) whose return reaches ``threshold``;
    the mid-training policy when none does."""
    for snap in snapshots:
        if snap["frames"] >= min_frames and snap["eval_return"] >= threshold:
            return {**snap, "rule": "threshold"}
    log.warning(
        "no evaluation reached the medium threshold %.1f; using the mid-training policy "
        "(%d env steps)",
        threshold,
        midpoint["frames"],
    )
    return {**midpoint, "rule": "midpoint"}


# ---------------------------------------------------------------------------- datasets
def _stats(episodes: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    returns = np.array([ep["rewards"].sum() for ep in episodes])
    return {
        "episodes": len(episodes),
        "transitions": int(sum(len(ep["rewards"]) for ep in episodes)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "terminations": int(sum(ep["terminations"].sum() for ep in episodes)),
        "truncations": int(sum(ep["truncations"].sum() for ep in episodes)),
    }


def collect(cfg: DictConfig) -> dict[str, Any]:
    """Runs everything; returns the summary (also written to ``<run_dir>/summary.json``)."""
    from minari_building import build_minari_dataset
    from mujoco_log import route_mujoco_warnings

    from torchrl_bdpo.data import minari_datasets_dir
    from torchrl_bdpo.scores import normalized_score

    try:
        validate_collect_config(cfg)
    except ConfigError as err:
        raise CollectError(str(err)) from None
    route_mujoco_warnings()  # MuJoCo's warnings to the log, not to ./MUJOCO_LOG.TXT
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    wanted = list(cfg.datasets)
    # everything that can be checked is checked here, before minutes of training
    env_id, max_steps = str(cfg.env.id), int(cfg.env.max_episode_steps)
    try:
        if ":" not in env_id:  # "module:EnvId" registers its env when gym.make imports the module
            gym.spec(env_id)
    except gym.error.Error as err:
        raise CollectError(f"env.id={env_id} is not a Gymnasium environment: {err}") from None
    if cfg.reference.expert != "final":  # a number or 'd4rl': resolvable now
        resolve_reference(cfg.reference.expert, "expert", env_id, None)
    ids = {k: v for k, v in dataset_ids(cfg).items() if k in wanted}
    run_dir = (
        Path(hydra.utils.to_absolute_path(str(cfg.run_dir))) if _in_hydra() else Path(cfg.run_dir)
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    with minari_path(cfg.output_dir):
        root = minari_datasets_dir()
        existing = [i for i in ids.values() if (root / i).exists()]
        if existing and not cfg.overwrite:
            raise CollectError(
                f"datasets {existing} already exist under {root}; pass overwrite=true "
                "or choose another dataset_version"
            )

        ref = cfg.reference
        t0 = time.time()
        measured_random = None
        if ref.random == "measured":
            measured_random = random_reference(
                env_id, int(ref.random_episodes), int(cfg.seed) + 777, max_steps
            )
        ref_min = resolve_reference(ref.random, "random", env_id, measured_random)
        random_time = time.time() - t0
        log.info("random reference return %.2f (%.1f s)", ref_min, random_time)

        result = train_sac(cfg, run_dir)
        actor, eval_env = result["actor"], result["eval_env"]
        final_state = copy.deepcopy(actor.state_dict())
        t0 = time.time()
        rollouts: dict[str, list[dict[str, np.ndarray]]] = {}

        def policy_rollouts(min_steps: int, seed_offset: int) -> list[dict[str, np.ndarray]]:
            """Whole episodes of ``actor`` (``rollouts.exploration``) until ``min_steps`` transitions."""
            eps = run_episodes(
                eval_env,
                actor,
                min_steps=min_steps,
                max_steps=max_steps,
                seed=int(cfg.seed) + seed_offset,
                exploration=str(cfg.rollouts.exploration),
            )
            return [ted_episode_to_minari(e) for e in eps]

        if "expert" in wanted or "medium-expert" in wanted:
            rollouts["expert"] = policy_rollouts(int(cfg.rollouts.expert_steps), 20_000)

        def policy_return() -> float:
            """Mean return of 10 deterministic episodes of ``actor`` (same env seeds each time)."""
            episodes = run_episodes(
                eval_env,
                actor,
                num_episodes=10,
                max_steps=max_steps,
                seed=int(cfg.seed) + 30_000,
                exploration="deterministic",
            )
            return float(np.mean([episode_return(e) for e in episodes]))

        final_return = policy_return()
        ref_max = resolve_reference(ref.expert, "expert", env_id, final_return)
        level = ref_max if cfg.medium.reference == "expert" else final_return
        threshold = float(cfg.medium.fraction) * level
        medium = choose_medium(
            result["snapshots"], result["midpoint"], threshold, int(cfg.medium.min_frames)
        )
        torch.save({"actor": medium["actor"]}, run_dir / "medium_actor.pt")
        actor.load_state_dict(medium["actor"])
        # the medium policy's own return, measured like the final one (the midpoint snapshot
        # falls between two periodic evaluations)
        medium["policy_eval_return"] = policy_return()
        if "medium" in wanted or "medium-expert" in wanted:
            rollouts["medium"] = policy_rollouts(int(cfg.rollouts.medium_steps), 40_000)
        actor.load_state_dict(final_state)
        if "medium-replay" in wanted:
            data = result["buffer"][: medium["buffer_size"]]
            rollouts["medium-replay"] = split_transitions(data)
        if "medium-expert" in wanted:  # D4RL's medium-expert: the two datasets' episodes, in one
            rollouts["medium-expert"] = rollouts["medium"] + rollouts["expert"]
        rollout_time = time.time() - t0
        eval_env.close()

        ref_note = (
            f"ref_min_score={ref_min:.3f} is "
            + (
                "the measured mean return of a uniform-random policy "
                f"({int(ref.random_episodes)} episodes)"
                if ref.random == "measured"
                else f"'{ref.random}'"
            )
            + f"; ref_max_score={ref_max:.1f} is "
            + (
                "D4RL's expert reference for this env family (so scores are on D4RL's scale)"
                if ref.expert == "d4rl"
                else (
                    "the final SAC policy's deterministic return"
                    if ref.expert == "final"
                    else "user-given"
                )
            )
            + "."
        )
        what = {
            "medium": f"episodes of the SAC policy at {medium['frames']} env steps (deterministic "
            f"return {medium['policy_eval_return']:.1f}; rule: {medium['rule']}), actions "
            f"{cfg.rollouts.exploration}",
            "medium-replay": f"the SAC replay buffer up to {medium['frames']} env steps "
            f"({medium['buffer_size']} transitions, {int(cfg.train.init_random_frames)} "
            "uniform-random warm-up steps included); the last, unfinished episode "
            "ends with a truncation",
            "expert": f"episodes of the final SAC policy ({result['frames']} env steps, eval return "
            f"{final_return:.1f}), actions {cfg.rollouts.exploration}",
        }
        what["medium-expert"] = (
            f"the union of the medium and expert datasets' episodes (medium first): {what['medium']}; "
            f"then {what['expert']}"
        )
        t0 = time.time()
        datasets = {}
        for kind, dataset_id in ids.items():
            if cfg.overwrite and (root / dataset_id).exists():
                shutil.rmtree(root / dataset_id)
            build_minari_dataset(
                dataset_id,
                env_id,
                rollouts[kind],
                ref_min_score=ref_min,
                ref_max_score=ref_max,
                algorithm_name=f"torchrl SACLoss (recipes/collect_dataset.py), {kind}",
                max_episode_steps=max_steps,  # the stored env spec carries the data's limit
                author="torchrl_bdpo",
                description=f"{env_id} {kind} in D4RL's manner: {what[kind]}. {ref_note}",
            )
            stats = _stats(rollouts[kind])
            stats["normalized_return_mean"] = float(
                normalized_score(stats["return_mean"], ref_min=ref_min, ref_max=ref_max)
            )
            datasets[kind] = {"id": dataset_id, **stats}
            log.info("%s: %s", dataset_id, stats)
        write_time = time.time() - t0

    summary = {
        "env_id": env_id,
        "seed": int(cfg.seed),
        "output_dir": str(root),
        "datasets": datasets,
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "reference": {
            "random": str(ref.random),
            "expert": str(ref.expert),
            "measured_random": measured_random,
        },
        "medium": {k: v for k, v in medium.items() if k != "actor"}
        | {"threshold": threshold, "reference": str(cfg.medium.reference)},
        "final_eval_return": final_return,
        "frames": result["frames"],
        "updates": result["updates"],
        "evaluations": result["evals"],
        "train_episodes": [{"frames": f, "return": r} for f, r in result["train_curve"]],
        "timings_s": {
            "random_reference": random_time,
            "sac_training": result["train_time_s"],
            "sac_updates": result["update_time_s"],
            "updates_per_s": result["updates"] / max(result["update_time_s"], 1e-9),
            "env_steps_per_s_overall": result["frames"] / max(result["train_time_s"], 1e-9),
            "rollouts": rollout_time,
            "writing": write_time,
            "total": time.time() - t_start,
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _in_hydra() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def parse_and_validate(cfg: DictConfig) -> None:
    """Checks the settings before torch loads (exit code 2, one line), then loads it."""
    exit_on_config_error(validate_collect_config, cfg, log)
    _import_runtime()


@hydra.main(config_path="config_collect", config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    parse_and_validate(cfg)
    if cfg.output_dir is not None:
        cfg.output_dir = hydra.utils.to_absolute_path(str(cfg.output_dir))
    try:
        plain_torchrl_logging()  # no ANSI colour codes from TorchRL's own handler
        summary = collect(cfg)
    except CollectError as err:
        log.error("%s", err)
        sys.exit(2)
    for d in summary["datasets"].values():
        print(
            f"{d['id']}: {d['transitions']} transitions, {d['episodes']} episodes, "
            f"return {d['return_mean']:.1f} ± {d['return_std']:.1f} "
            f"(normalised {d['normalized_return_mean']:.1f})"
        )
    print(f"total {summary['timings_s']['total']:.0f} s")
    run_dir = Path(hydra.utils.to_absolute_path(str(cfg.run_dir)))
    print(run_dir / "summary.json")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
