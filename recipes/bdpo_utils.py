"""Helpers of the BDPO recipe: data, components, optimisers, evaluation.

Laid out like TorchRL's sota-implementations ``utils.py`` files: ``make_task_data``,
``make_replay_buffer``, ``make_loss_module``, ``make_target_updaters``, ``make_optimizers``,
``make_update_steps`` (shared with ``benchmarks/bench_bdpo.py``), ``make_eval_env``,
``evaluate_env``. The settings' schema and ``validate_config`` are in ``bdpo_config`` (which
imports no torch), the 2D evaluation in ``toy2d_evaluation``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from bdpo_config import TOY2D_PREFIX, ConfigError
from graph_step import make_graph_step
from omegaconf import DictConfig, OmegaConf
from run_dir import RUN_ONLY
from tensordict import TensorDict
from toy2d import TOY2D_DATASETS, toy2d_transitions

from torchrl_bdpo import (
    BDPODiffusionActor,
    BDPOLoss,
    BDPOLossConfig,
    DiffusionSampler,
    DiffusionValueEnsemble,
    GroupSoftUpdate,
    NoiseNet,
    QEnsemble,
    VPSchedule,
    make_qvalue_operator,
    make_value_operator,
)
from torchrl_bdpo.data import (
    GOAL_OBSERVATION_KEYS,
    DatasetUnavailableError,
    DatasetValidationError,
    clip_dataset_actions,
    load_offline_dataset,
    make_offline_replay_buffer,
    scale_rewards,
    scale_rewards_by_return_range,
    validate_transitions,
)

log = logging.getLogger("bdpo")


# ----------------------------------------------------------------------------- config
# The settings' schema and checks live in bdpo_config (no torch: they run before it loads).


def uses_cuda_graphs(cfg: DictConfig, device: torch.device) -> bool:
    """Whether the compiled updates run as CUDA graphs (inductor's cudagraph trees)."""
    return (
        bool(cfg.compile)
        and device.type == "cuda"
        and cfg.compile_mode in ("reduce-overhead", "max-autotune")
    )


def compile_functions(fns, mode: str, *, strict: bool = False) -> list:
    """``torch.compile`` each of ``fns`` with ``mode``. A function whose compilation fails logs a
    warning, with the error, and runs eagerly from then on; dynamo's settings are not changed
    (a process-wide ``suppress_errors`` would hide every other compile failure too), and errors
    that are not compile failures propagate. ``strict``: a compile failure raises instead (a
    benchmark must not time eager code as compiled).

    (Here, not in the Hydra script: the script's functions are pickled by value for
    joblib/submitit launchers, and dynamo's config module cannot be pickled.)
    """
    if strict:
        return [_compile(fn, mode) for fn in fns]
    return [_eager_on_compile_failure(fn, mode) for fn in fns]


def _compile(fn, mode: str):
    return torch.compile(fn, mode=None if mode == "default" else mode)


def _eager_on_compile_failure(fn, mode: str, compiled: Callable | None = None):
    """``compiled`` (default: ``fn`` compiled with ``mode``), or ``fn`` from its first compile
    failure on."""
    from torch._dynamo.exc import TorchDynamoException

    state = {"call": _compile(fn, mode) if compiled is None else compiled}

    def call(*args, **kwargs):
        if state["call"] is fn:
            return fn(*args, **kwargs)
        try:
            return state["call"](*args, **kwargs)
        except TorchDynamoException as err:  # a compile failure: the eager function runs instead
            log.warning(
                "torch.compile failed for %s (%s: %s); it runs eagerly from now on.",
                getattr(fn, "__name__", fn),
                type(err).__name__,
                (str(err).splitlines() or [""])[0],
            )
            state["call"] = fn
            return fn(*args, **kwargs)

    return call


PRECISIONS = ("fp32", "bf16")


def precision_autocast(device: torch.device, precision: str):
    """A context-manager factory for the losses' forward passes: bfloat16 autocast for
    ``precision="bf16"`` (matmuls in bfloat16; weights, gradients, Adam and EMA stay float32),
    a no-op for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    return functools.partial(
        torch.autocast, torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that determine what a run computes, as ``{dotted key: value}``: everything
    but the seed, run-only keys and the checkpoint interval (groups seeds for aggregation)."""
    skip = set(RUN_ONLY) | {"seed", "checkpoint"}
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not (prefix == "" and k in skip):
                    walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def set_threads_and_device(cfg: DictConfig) -> torch.device:
    """Sets torch's CPU threads; the run's device, refused in one line where it is absent."""
    torch.set_num_threads(int(cfg.threads))
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(str(cfg.device))
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": torch.backends.mps}
    if device.type in backend:
        module = backend[device.type]
        if module is None or not module.is_available():
            raise ConfigError(
                f"device={cfg.device} was asked for but this machine has no "
                f"{device.type.upper()} device; use device=cpu (or device=auto)."
            )
        count = module.device_count() if hasattr(module, "device_count") else 1
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device={cfg.device} was asked for but this machine has {count} "
                f"{device.type.upper()} device(s) (indices 0..{count - 1})."
            )
    return device


# ------------------------------------------------------------------------------ data
@dataclass
class TaskData:
    """Everything the recipe needs to know about a task's data."""

    name: str
    domain: str
    data: TensorDict
    obs_dim: int
    action_dim: int
    bandit: bool
    env_id: str | None = None
    #: the evaluation env's full Gymnasium spec (JSON, with kwargs such as a maze layout), if known
    env_spec: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    toy2d: dict[str, Any] = field(default_factory=dict)

    @property
    def has_reference_scores(self) -> bool:
        """Whether returns can be normalised: both reference returns known, finite and distinct."""
        lo, hi = self.ref_min_score, self.ref_max_score
        if lo is None or hi is None:
            return False
        return math.isfinite(lo) and math.isfinite(hi) and lo != hi

    @property
    def score_metric(self) -> str:
        """``"normalized_score"`` with reference scores, else ``"return"`` (raw returns)."""
        return "normalized_score" if self.has_reference_scores else "return"


def make_task_data(cfg: DictConfig) -> TaskData:
    """Loads and preprocesses the dataset named by ``cfg.data.name``."""
    name = str(cfg.data.name)
    if name.startswith(TOY2D_PREFIX):
        toy = name[len(TOY2D_PREFIX) :]
        if toy not in TOY2D_DATASETS:
            raise ConfigError(f"Unknown 2D dataset {toy!r}; known: {', '.join(TOY2D_DATASETS)}.")
        data = toy2d_transitions(toy, int(cfg.data.toy2d_size), seed=int(cfg.seed))
        return TaskData(
            name=name,
            domain="toy2d",
            data=data,
            obs_dim=1,
            action_dim=2,
            bandit=True,
            toy2d={"dataset": toy},
        )
    try:
        kwargs = {} if cfg.data.download is None else {"download": bool(cfg.data.download)}
        if "/" not in name and cfg.data.d4rl_root is not None:
            kwargs["root"] = str(cfg.data.d4rl_root)
        if cfg.data.get("path") is not None:  # a D4RL-format file: nothing to find or fetch
            kwargs = {"path": str(cfg.data.path)}
        if "path" in kwargs or "/" not in name:  # D4RL data without timeouts: their time limit
            limit = cfg.data.get("max_episode_steps")
            kwargs["max_episode_steps"] = int(cfg.env.max_episode_steps if limit is None else limit)
        dataset = load_offline_dataset(name, **kwargs)
    except DatasetUnavailableError as err:
        if getattr(err, "path", None) is not None:  # a D4RL name: say what to set, briefly
            raise DatasetUnavailableError(_d4rl_unavailable(name, err, cfg)) from None
        raise DatasetUnavailableError(f"{err}{_known_datasets()}") from err
    except DatasetValidationError:
        raise
    except ValueError as err:  # a name that is neither a Minari id nor a D4RL name
        raise ConfigError(f"{err}.{_known_datasets()}") from err
    data = dataset.data
    # The diffusion actor samples in [-1, 1]: refuse data outside it (beyond a small
    # tolerance) before the spec's clipping to +-(1 - 1e-5) could hide it.
    validate_transitions(data)
    if cfg.data.action_clip is not None:
        data = clip_dataset_actions(data, float(cfg.data.action_clip))
    if cfg.data.reward_transform == "locomotion":
        try:
            data = scale_rewards_by_return_range(data, 1000.0)
        except ValueError as err:
            raise ConfigError(
                f"data.reward_transform=locomotion: {err}; choose data.reward_transform=none "
                "or antmaze for these data."
            ) from err
    elif cfg.data.reward_transform == "antmaze":
        data = scale_rewards(data, 100.0)
    env_id = cfg.env.id or dataset.env_id
    # the dataset's own evaluation spec (kwargs included) unless env.id names another env
    spec = None if cfg.env.id else dataset.metadata.get("eval_env_spec")
    return TaskData(
        name=name,
        domain=str(cfg.data.domain),
        data=data,
        obs_dim=dataset.obs_dim,
        action_dim=dataset.action_dim,
        bandit=False,
        env_id=env_id,
        env_spec=spec if isinstance(spec, str) else None,
        ref_min_score=dataset.ref_min_score,
        ref_max_score=dataset.ref_max_score,
    )


def _d4rl_unavailable(name: str, err: DatasetUnavailableError, cfg: DictConfig) -> str:
    """The missing-D4RL message in the recipe's terms (``data.path``, ``data.d4rl_root``,
    ``data.download``)."""
    reason = err.reason
    if cfg.data.download is False and not err.path.exists():
        reason = "there is no copy and data.download=false"
    file = err.files[0] if getattr(err, "files", None) else None
    where = f"Put D4RL's {file.name} in {file.parent}, set" if file is not None else "Set"
    return (
        f"D4RL dataset {name!r} is not available: {reason}. {where} data.path=<file> or "
        f"data.d4rl_root=<dir>, or download it elsewhere and copy {err.path} here."
    )


def _known_datasets() -> str:
    """A hint listing the datasets this machine can load without network."""
    try:
        import minari

        local = sorted(minari.list_local_datasets())
    except Exception:  # noqa: BLE001 - the hint must never mask the real error
        local = []
    d4rl = sorted(p.stem for p in (Path(__file__).parent / "config" / "task").glob("*-v[0-9].yaml"))
    return (
        f" Local Minari datasets: {', '.join(local) or 'none'}."
        f" D4RL tasks with configs: {', '.join(d4rl)}."
        f" 2D datasets: {', '.join(TOY2D_PREFIX + t for t in TOY2D_DATASETS)}."
    )


def make_replay_buffer(task: TaskData, cfg: DictConfig, device: torch.device):
    keep = [
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "terminated"),
        ("next", "done"),
    ]
    data = task.data.select(*keep, strict=False)
    try:
        return make_offline_replay_buffer(data, int(cfg.optim.batch_size), device=device)
    except ValueError as err:
        raise ConfigError(str(err)) from err


# ------------------------------------------------------------------------ components
def make_diffusion_actor(cfg: DictConfig, obs_dim: int, action_dim: int) -> BDPODiffusionActor:
    net = NoiseNet(
        obs_dim,
        action_dim,
        hidden_sizes=tuple(cfg.diffusion.hidden_sizes),
        layer_norm=bool(cfg.diffusion.layer_norm),
    )
    policy = DiffusionSampler(
        net, VPSchedule(int(cfg.diffusion.num_steps)), clip_sample=bool(cfg.diffusion.clip_sample)
    )
    return BDPODiffusionActor(policy)


def make_loss_module(cfg: DictConfig, task: TaskData, device: torch.device) -> BDPOLoss:
    k = int(cfg.critic.num_members)
    hidden = tuple(cfg.critic.hidden_sizes)
    q = make_qvalue_operator(
        QEnsemble(
            task.obs_dim, task.action_dim, k, hidden, layer_norm=bool(cfg.critic.q_layer_norm)
        )
    )
    v = make_value_operator(
        DiffusionValueEnsemble(
            task.obs_dim,
            task.action_dim,
            k,
            hidden,
            layer_norm=bool(cfg.critic.v_layer_norm),
            step_hidden=tuple(cfg.critic.v_step_hidden),
        )
    )
    settings = BDPOLossConfig(
        **OmegaConf.to_container(cfg.loss),  # every loss keyword, and gamma
        bandit=task.bandit,
        validate_inputs=False,  # the data were validated once, at load (no host sync per update)
    )
    loss = settings.build(
        make_diffusion_actor(cfg, task.obs_dim, task.action_dim),
        q,
        v,
        make_diffusion_actor(cfg, task.obs_dim, task.action_dim),
    )
    return loss.to(device)


def make_target_updaters(loss: BDPOLoss, cfg: DictConfig) -> dict[str, GroupSoftUpdate]:
    """One EMA updater per group, built once, before any training or checkpoint loading."""
    return {
        "critic": GroupSoftUpdate(
            loss, groups=["qvalue_network", "value_network"], tau=float(cfg.optim.critic_tau)
        ),
        "actor": GroupSoftUpdate(loss, groups=["actor_network"], tau=float(cfg.optim.actor_tau)),
        "behavior": GroupSoftUpdate(
            loss, groups=["behavior_network"], tau=float(cfg.optim.behavior_tau)
        ),
    }


def trainable(params) -> list[torch.Tensor]:
    return [p for p in params.values(True, True) if isinstance(p, torch.Tensor) and p.requires_grad]


def actor_lr_decay_steps(cfg: DictConfig) -> int:
    """The actor's cosine horizon in actor updates: ``optim.actor_lr_decay_steps``, or ``train_steps``
    when null (the authors' code, whose actor makes far fewer updates than that: its learning
    rate ends near 0.91x its start at the paper's settings)."""
    steps = cfg.optim.get("actor_lr_decay_steps")
    return max(1, int(cfg.optim.train_steps if steps is None else steps))


def make_optimizers(loss: BDPOLoss, cfg: DictConfig):
    """Adam per group; cosine decay over ``train_steps`` for the critics (per step) and over
    :func:`actor_lr_decay_steps` for the actor (per actor step); the behavior model's is constant."""
    o = cfg.optim
    fused = {"fused": True} if o.fused_adam else {}

    def adam(params, lr):
        return torch.optim.Adam(params, lr=float(lr), **fused)

    opts = {
        "behavior": adam(trainable(loss.behavior_network_params), o.behavior_lr),
        "critic": adam(
            trainable(loss.qvalue_network_params) + trainable(loss.value_network_params),
            o.critic_lr,
        ),
        "actor": adam(trainable(loss.actor_network_params), o.actor_lr),
    }
    scheds = {
        "critic": torch.optim.lr_scheduler.CosineAnnealingLR(
            opts["critic"], T_max=max(1, int(o.train_steps))
        ),
        "actor": torch.optim.lr_scheduler.CosineAnnealingLR(
            opts["actor"], T_max=actor_lr_decay_steps(cfg)
        ),
    }
    return opts, scheds


# ---------------------------------------------------------------------- update steps
class UpdateSteps(NamedTuple):
    """One optimisation step per parameter group, each over a batch TensorDict. Outputs are
    detached and valid until the next call (CUDA-graph outputs):

    * ``behavior(batch) -> (loss_behavior, grad_norm)``;
    * ``critic(batch) -> (loss_qvalue, loss_value, grad_norm_q, grad_norm_v, meta_q, meta_v)``;
    * ``actor(batch) -> (loss_actor, grad_norm, meta)``.
    """

    behavior: Callable
    critic: Callable
    actor: Callable


COMPILE_SCOPES = ("graph", "losses")


def make_update_steps(
    loss: BDPOLoss,
    optimizers: dict[str, torch.optim.Optimizer],
    targets: dict[str, GroupSoftUpdate],
    device: torch.device,
    *,
    grad_clip: float = 1.0,
    precision: str = "fp32",
    compile: bool = False,
    compile_mode: str = "default",
    compile_scope: str = "graph",
    strict_compile: bool = False,
) -> UpdateSteps:
    """The update steps of the recipe and of ``benchmarks/bench_bdpo.py``: loss -> gradients ->
    grad-norm clipping (Q and V separately) -> Adam -> the group's EMA target step.

    Args:
        loss, optimizers, targets: from :func:`make_loss_module`, :func:`make_optimizers` and
            :func:`make_target_updaters` (keys ``behavior``, ``critic``, ``actor``).
        precision: ``"bf16"`` runs the losses' forward passes under bfloat16 autocast (weights,
            gradients, Adam and EMA stay float32).
        compile_scope: what ``torch.compile`` captures when ``compile``: ``"graph"`` compiles each
            whole update as one graph (:mod:`graph_step`: forward, gradients, clipping, Adam, EMA;
            a scheduler's new learning rate does not recompile); ``"losses"`` compiles the loss's
            forward, and through AOTAutograd its backward, while clipping, Adam and EMA run
            eagerly (the recipe's choice under CUDA graphs).
        strict_compile: a compile failure raises (a benchmark must not time eager code as
            compiled); otherwise that step runs eagerly, with a warning.
    """
    if compile_scope not in COMPILE_SCOPES:
        raise ValueError(f"compile_scope must be one of {COMPILE_SCOPES}, got {compile_scope!r}.")
    autocast = precision_autocast(device, precision)
    param_lists = {
        "behavior": [trainable(loss.behavior_network_params)],
        "critic": [trainable(loss.qvalue_network_params), trainable(loss.value_network_params)],
        "actor": [trainable(loss.actor_network_params)],
    }

    # terms(batch) -> (objective, losses returned detached, extras returned as they are)
    def behavior_terms(batch):
        with autocast():
            value = loss.behavior_loss(batch)[0].float()
        return value, (value,), ()

    def critic_terms(batch):
        with autocast():
            lq, meta_q = loss.qvalue_loss(batch)
            lv, meta_v = loss.value_loss(batch)
        lq, lv = lq.float(), lv.float()
        return lq + lv, (lq, lv), (meta_q, meta_v)

    def actor_terms(batch):
        with autocast():
            value, meta = loss.actor_loss(batch)
        value = value.float()
        return value, (value,), (meta,)

    terms = {"behavior": behavior_terms, "critic": critic_terms, "actor": actor_terms}
    if compile and compile_scope == "losses":
        compiled = compile_functions(list(terms.values()), compile_mode, strict=strict_compile)
        terms = dict(zip(terms, compiled))

    def eager_step(group: str) -> Callable:
        def step(batch):
            objective, outputs, extras = terms[group](batch)
            opt = optimizers[group]
            opt.zero_grad(set_to_none=True)
            objective.backward()
            norms = [torch.nn.utils.clip_grad_norm_(p, grad_clip) for p in param_lists[group]]
            opt.step()
            targets[group].step()
            return (*(o.detach() for o in outputs), *norms, *extras)

        step.__name__ = group
        return step

    steps = {group: eager_step(group) for group in terms}
    if compile and compile_scope == "graph":
        for group, eager in steps.items():
            graph = make_graph_step(
                terms[group],
                param_lists[group],
                optimizers[group],
                targets[group].step,
                grad_clip=grad_clip,
                compile_mode=compile_mode,
            )
            steps[group] = (
                graph
                if strict_compile
                else _eager_on_compile_failure(eager, compile_mode, compiled=graph)
            )
    return UpdateSteps(**steps)


# ------------------------------------------------------------------------ evaluation
def make_eval_env(
    env_id: str,
    num_envs: int,
    max_episode_steps: int,
    obs_dim: int,
    device=None,
    env_spec: str | None = None,
    action_dim: int | None = None,
):
    """``num_envs`` copies of ``env_id`` in a ``SerialEnv`` (float32, outputs on ``device``).

    ``env_spec`` (a Gymnasium ``EnvSpec`` as JSON, e.g. a Minari dataset's evaluation spec)
    rebuilds the env with its kwargs (a maze layout, a fixed goal). With ``action_dim`` the
    env must take that many actions, bounded by ``[-1, 1]``. Goal-conditioned envs
    (dict observations with ``observation`` and goals) get the layout of the data:
    ``observation = concat(achieved_goal, observation, desired_goal)``.
    """
    from mujoco_log import route_mujoco_warnings
    from torchrl.envs import (
        CatTensors,
        Compose,
        DoubleToFloat,
        GymEnv,
        GymWrapper,
        RenameTransform,
        SerialEnv,
        StepCounter,
        TransformedEnv,
    )

    route_mujoco_warnings()  # MuJoCo's warnings to the log, not to ./MUJOCO_LOG.TXT

    def make():
        if env_spec is not None:
            import gymnasium as gym

            # the dataset's own env: its stored time limit and ours (StepCounter) both apply
            base = GymWrapper(gym.make(gym.envs.registration.EnvSpec.from_json(env_spec)))
            base = base.to(device) if device is not None else base
        else:
            # Gymnasium's registered limit (1000 for MuJoCo) set to ours, which may be longer
            base = GymEnv(env_id, device=device, max_episode_steps=max_episode_steps)
        env = TransformedEnv(base, DoubleToFloat())
        keys = set(env.observation_spec.keys())
        if "observation" in keys and keys & {"achieved_goal", "desired_goal"}:
            # the data's layout (flatten_observation): concat(achieved_goal, observation, desired_goal)
            parts = [k for k in GOAL_OBSERVATION_KEYS if k in keys]
            env.append_transform(
                Compose(
                    CatTensors(parts, out_key="flat_observation", sort=False),
                    RenameTransform(["flat_observation"], ["observation"]),
                )
            )
        return env

    try:
        probe = make()
    except Exception as err:  # noqa: BLE001 - any failure to build the env is a user-facing problem
        raise ConfigError(
            f"Cannot create the evaluation env {env_id!r}: {err}. Install its package "
            "(AntMaze needs `pip install gymnasium-robotics`), set env.id=..., or train "
            "without environment evaluation with eval.env=false."
        ) from err
    env_obs = probe.observation_spec["observation"].shape[-1]
    action_spec = probe.full_action_spec[probe.action_key]
    space = getattr(action_spec, "space", None)  # a Bounded spec's box
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    probe.close()
    if env_obs != obs_dim:
        raise ConfigError(
            f"The dataset's observations have {obs_dim} entries but {env_id} emits {env_obs}; "
            "set env.id to the environment the data came from (or eval.env=false). D4RL's "
            "AntMaze -v0 data do not match gymnasium-robotics' AntMaze observations or maze "
            "coordinates: evaluating them there is not supported."
        )
    if action_dim is not None and action_spec.shape[-1] != action_dim:
        raise ConfigError(
            f"The dataset's actions have {action_dim} entries but {env_id} takes "
            f"{action_spec.shape[-1]}; set env.id to the environment the data came from (or "
            "eval.env=false)."
        )
    if action_dim is not None and not (
        low is not None
        and torch.allclose(low.float(), torch.full_like(low.float(), -1.0))
        and torch.allclose(high.float(), torch.full_like(high.float(), 1.0))
    ):
        low, high = ("none", "none") if low is None else (low.tolist(), high.tolist())
        raise ConfigError(
            f"{env_id}'s action bounds are low {low}, high {high}, but BDPO's actor samples actions in "
            "[-1, 1], the range the data are checked against; evaluate in an env whose actions "
            "are in [-1, 1] (e.g. rescale them with a wrapper registered under its own id), or "
            "set eval.env=false."
        )
    if num_envs > 1:
        return TransformedEnv(SerialEnv(num_envs, make), StepCounter(max_steps=max_episode_steps))
    env = make()  # already a TransformedEnv: one more transform (nesting one would warn)
    env.append_transform(StepCounter(max_steps=max_episode_steps))
    return env


def evaluation_seed(seed: int) -> int:
    """The seed of a run's evaluation envs: fixed per run seed and apart from the training seed,
    so every evaluation of a run (and of a resumed run) meets the same initial states."""
    return int(seed) * 1000 + 7


def first_episode_returns(rewards: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Returns of each env's first episode in a rollout: rewards/done ``[E, T]`` -> ``[E]``."""
    done = done.to(torch.long)
    before_first_done = (done.cumsum(-1) - done) == 0
    return (rewards * before_first_done).sum(-1)


@torch.no_grad()
def evaluate_env(env, policy, max_steps: int, seed: int) -> np.ndarray:
    env.set_seed(seed)
    td = env.rollout(max_steps, policy, break_when_any_done=False, break_when_all_done=True)
    if td.batch_dims == 1:
        td = td.unsqueeze(0)
    return (
        first_episode_returns(td["next", "reward"].squeeze(-1), td["next", "done"].squeeze(-1))
        .cpu()
        .numpy()
    )
