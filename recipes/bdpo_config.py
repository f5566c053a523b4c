"""The recipes' settings: typed schemas, strict validation and ``--help`` text (no torch).

Each recipe's settings are described once, by dataclasses whose fields carry a type, a rule
and a one-line meaning: :class:`RecipeSettings` (``bdpo_offline.py``) and
:class:`CollectSettings` (``collect_dataset.py``). :func:`check_settings` compares every leaf
of a composed Hydra config with its schema strictly: a boolean is ``true`` or ``false``
(never ``no``, ``off`` or ``1``), an integer is not a boolean, a number is finite, a choice is
one of its options, and a key the schema does not know (``+key=...``) is an error. The same
schema renders the ``--help`` table (the ``settings_help`` resolver in ``hydra.help``).

This module imports only the standard library and OmegaConf, so a recipe checks its
arguments and prints its help before torch and TorchRL are imported.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import types
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

SEED_LIMIT = 2**32  # numpy's seeding accepts 0 <= seed < 2**32
# torch.compile modes the recipe accepts ("default" is torch.compile's own default).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")


#: data.name prefix of the 2D bandit datasets (toy2d-<dataset>)
TOY2D_PREFIX = "toy2d-"


class ConfigError(ValueError):
    """A user-facing configuration problem (reported in one line, without a stack trace)."""


def setting(meaning: str, rule: Any = None, rule_text: str = "") -> Any:
    """A schema field: its ``--help`` line and an optional ``rule(value) -> bool``."""
    return field(metadata={"help": meaning, "rule": rule, "rule_text": rule_text})


def _at_least(low: float) -> dict[str, Any]:
    return {"rule": lambda v: v >= low, "rule_text": f">= {low}"}


_POSITIVE = {"rule": lambda v: v > 0, "rule_text": "> 0"}
_RATE = {"rule": lambda v: 0 < v <= 1, "rule_text": "in (0, 1]"}
_SEED = {"rule": lambda v: 0 <= v < SEED_LIMIT, "rule_text": "in 0 .. 2**32 - 1"}


# ------------------------------------------------------------------------ the recipe
@dataclass
class DataSettings:
    name: str = setting(
        "D4RL name (hopper-medium-v2), Minari id (mujoco/hopper/medium-v0) or toy2d-<dataset>"
    )
    domain: Literal["locomotion", "antmaze", "toy2d", "custom"] = setting(
        "the kind of task; toy2d tasks are evaluated against the exact target distribution"
    )
    reward_transform: Literal["locomotion", "antmaze", "none"] = setting(
        "locomotion: rewards x 1000 / the data's return range | antmaze: x 100 | none"
    )
    action_clip: float | None = setting(
        "clip dataset actions to +-action_clip (the spec's 1 - 1e-5); null: no clipping",
        lambda v: 0 < v <= 1,
        "in (0, 1] or null",
    )
    toy2d_size: int = setting("points of a 2D dataset", **_at_least(1))
    d4rl_root: str | None = setting(
        "directory holding D4RL's HDF5 files or torchrl's D4RL copies (<root>/<name>); null: "
        "$D4RL_DATASET_DIR or ~/.d4rl/datasets for the files, ~/.cache/torchrl/d4rl for the copies"
    )
    path: str | None = setting(
        "an HDF5 file in D4RL's layout to train on (any file name); data.name names it"
    )
    download: bool | None = setting(
        "null: a missing D4RL dataset is downloaded into data.d4rl_root, Minari ids are read "
        "locally only | true: download both when missing | false: never download"
    )
    max_episode_steps: int | None = setting(
        "the step limit D4RL data were collected under, for files that mark neither timeouts "
        "nor next observations (-v0 MuJoCo): the rows where it falls end their episodes; "
        "null: env.max_episode_steps",
        **_at_least(1),
    )
    sample_block: int = setting(
        "batches drawn per replay-buffer call (uniform with replacement: the same batch "
        "distribution; one call per block saves ~0.1-0.5 ms per update on CPU); 1: one call per update",
        **_at_least(1),
    )


@dataclass
class EnvSettings:
    id: str | None = setting("Gymnasium id of the evaluation env; null: the one the dataset names")
    max_episode_steps: int = setting(
        "step limit of an evaluation episode (an env made from its id gets it as Gymnasium's "
        "limit too; one rebuilt from a dataset's stored spec keeps that spec's limit as well)",
        **_at_least(1),
    )


@dataclass
class DiffusionSettings:
    num_steps: int = setting(
        "N: diffusion steps of the actor and the behavior model", **_at_least(1)
    )
    clip_sample: bool = setting("clip every reverse step's sample to [-1, 1]")
    hidden_sizes: list[int] = setting("hidden widths of the noise network, e.g. [256,256,256,256]")
    layer_norm: bool = setting("LayerNorm after each hidden layer of the noise network")


@dataclass
class CriticSettings:
    num_members: int = setting("K: members of the Q and diffusion-value ensembles", **_at_least(1))
    hidden_sizes: list[int] = setting("hidden widths of every ensemble member, e.g. [256,256,256]")
    q_layer_norm: bool = setting("LayerNorm in the Q networks")
    v_layer_norm: bool = setting("LayerNorm in the diffusion-value networks")
    v_step_hidden: list[int] = setting(
        "widths of the diffusion values' step-embedding MLP (authors' code [128, 64]; the "
        "ICML-era code, flow-rl 9e8c667, [64, 64]); its last width is the step features' size"
    )


@dataclass
class LossSettings:
    eta: float = setting(
        "eta: weight of the KL to the behavior model (the regularisation)", **_POSITIVE
    )
    rho: float = setting(
        "rho: LCB coefficient, mean_k - rho * std_k over the ensemble", **_at_least(0)
    )
    gamma: float = setting("discount", lambda v: 0 <= v <= 1, "in [0, 1]")
    num_samples: int = setting(
        "M: actions sampled per state for the Q and V targets", **_at_least(1)
    )
    backup: Literal["mean", "max"] = setting(
        "how the Q target reduces the M sampled next actions: mean | max (max-Q backup, AntMaze)"
    )
    penalty_placement: Literal["inside", "outside"] = setting(
        "where the KL penalty enters the Q target: inside gamma * (1 - done) (authors' code) "
        "| outside it, r - eta * KL + gamma * (1 - done) * Q (paper-era code)"
    )
    aggregation: Literal["lcb", "mean", "min"] = setting(
        "how the K ensemble members make one target: lcb (mean - rho * std) | mean | min"
    )
    stratified_steps: bool = setting(
        "false: i.i.d. n ~ U{1..N} for the V and actor losses (authors' code) | true: our fast "
        "path, stratified n (ceil(B/N) rows get n = 1; the Q and V targets run on their rows only)"
    )
    error_reduction: Literal["mean", "sum"] = setting(
        "squared errors over the K members (Q, V) and action dims (behavior): mean (authors' "
        "code) | sum (the paper's ||.||^2: gradients K or A times larger, clipped more often)"
    )


@dataclass
class OptimSettings:
    batch_size: int = setting("transitions per update (at most the dataset's size)", **_at_least(1))
    pretrain_steps: int = setting("behavior pre-training updates", **_at_least(0))
    train_steps: int = setting(
        "BDPO training updates after pre-training (0: pre-training only)", **_at_least(0)
    )
    behavior_lr: float = setting("Adam learning rate of the behavior model", **_POSITIVE)
    critic_lr: float = setting(
        "Adam learning rate of the critics (cosine decay to 0 over train_steps)", **_POSITIVE
    )
    actor_lr: float = setting(
        "Adam learning rate of the actor (cosine decay over actor_lr_decay_steps)", **_POSITIVE
    )
    actor_lr_decay_steps: int | None = setting(
        "the actor's cosine horizon in actor updates; null: train_steps (authors' code)",
        **_at_least(1),
    )
    actor_update_period: int = setting("the actor updates every k-th training step", **_at_least(1))
    value_warmup_steps: int = setting(
        "training steps of the critics alone before the actor's first update (< train_steps)",
        **_at_least(0),
    )
    grad_clip: float = setting("gradient-norm clipping threshold", **_POSITIVE)
    fused_adam: bool = setting("fused Adam kernels (about 7x faster optimiser steps on CPU)")
    critic_tau: float = setting("EMA rate of the target critics", **_RATE)
    actor_tau: float = setting("EMA rate of the target (evaluation) actor", **_RATE)
    behavior_tau: float = setting(
        "EMA rate of the target behavior model (the KL's reference)", **_RATE
    )
    continue_behavior_training: bool = setting(
        "one behavior update per actor update, on the actor's batch (authors' code)"
    )


@dataclass
class EvalSettings:
    env: bool = setting(
        "roll out in the evaluation env (false: train only; 2D tasks always evaluate)"
    )
    interval: int = setting("training updates between evaluations", **_at_least(1))
    episodes: int = setting("evaluation episodes (run as parallel envs)", **_at_least(1))
    num_candidates: int = setting(
        "actions sampled per state, the one with the highest target Q acts (1: no selection)",
        **_at_least(1),
    )
    toy2d_samples: int = setting(
        "actor and target samples drawn for the 2D evaluation (<= data.toy2d_size); the sliced "
        "Wasserstein distance uses all, the energy distance a fixed subsample of at most 2000 of each",
        **_at_least(1),
    )


@dataclass
class CheckpointSettings:
    interval: int = setting(
        "updates between checkpoints (<run dir>/checkpoints/latest.torchrl)", **_at_least(1)
    )


@dataclass
class LoggerSettings:
    backend: Literal["csv", "wandb", "tensorboard", "none"] = setting(
        "scalar logger (<run dir>/logs)"
    )
    project: str = setting("wandb project")
    wandb_mode: Literal["offline", "disabled", "online"] = setting(
        "wandb mode (online only when asked)"
    )
    log_interval: int = setting("updates per logged (averaged) scalar", **_at_least(1))


@dataclass
class RecipeSettings:
    """Every setting of ``recipes/bdpo_offline.py`` (values: ``config/config.yaml`` and the task file)."""

    task_name: str = setting("the task's name (set by the task file; names the run directory)")
    seed: int = setting("seed of torch, NumPy, the 2D data and evaluation", **_SEED)
    device: str = setting(
        "cpu | cuda | cuda:<index> | auto (cuda when available) | mps | xpu (where present)"
    )
    threads: int = setting(
        "torch CPU threads (1 is fastest on a busy 2-core machine)", **_at_least(1)
    )
    resume: bool = setting(
        "continue the run in hydra.run.dir from its checkpoints, with the settings saved there"
    )
    overwrite: bool = setting("replace a run already in hydra.run.dir (refused without it)")
    data: DataSettings = setting("the dataset")
    env: EnvSettings = setting("the evaluation env")
    diffusion: DiffusionSettings = setting("the diffusion actor and behavior model")
    critic: CriticSettings = setting("the Q and diffusion-value ensembles")
    loss: LossSettings = setting("BDPO's losses")
    optim: OptimSettings = setting("the schedule and optimisers")
    eval: EvalSettings = setting("evaluation")
    checkpoint: CheckpointSettings = setting("checkpoints")
    logger: LoggerSettings = setting("logging")
    compile: bool = setting("torch.compile the updates (a failure to compile falls back to eager)")
    compile_scope: Literal["graph", "losses"] = setting(
        "graph: each update compiled as one graph (forward, gradients, clipping, Adam, EMA); "
        "losses: only the losses' forward and backward (always so under CUDA graphs)"
    )
    precision: Literal["fp32", "bf16"] = setting(
        "fp32 | bf16: the losses' forward passes under bfloat16 autocast (float32 weights, "
        "gradients, Adam and EMA); faster on CPUs with AMX-bf16 and on GPUs"
    )
    compile_mode: Literal[COMPILE_MODES] = setting(
        "torch.compile mode (reduce-overhead adds CUDA graphs on a GPU)"
    )


def validate_config(cfg: DictConfig) -> None:
    """Checks the recipe's settings before anything is built; one error listing every problem."""
    _require_set(cfg, " (task=custom needs data.name=<Minari id or D4RL name>)", "data.name")
    problems = check_settings(cfg, RecipeSettings)
    device = OmegaConf.select(cfg, "device")
    if isinstance(device, str) and device == "meta":
        problems.append("device=meta holds no data: a run cannot train on it; use cpu or cuda")
    elif isinstance(device, str) and not _DEVICE.match(device):
        problems.append(
            f"device must be cpu, cuda, cuda:<index>, auto, mps or xpu (got {device!r})"
        )
    if not problems:  # relations between settings (their types are known to be right)
        o = cfg.optim
        if o.train_steps > 0 and o.value_warmup_steps >= o.train_steps:
            problems.append(
                f"optim.value_warmup_steps ({o.value_warmup_steps}) must be < optim.train_steps "
                f"({o.train_steps}): the actor would never train (optim.train_steps=0 runs "
                "behavior pre-training only)"
            )
        bandit = cfg.data.domain == "toy2d" or str(cfg.data.name).startswith(TOY2D_PREFIX)
        if bandit and cfg.loss.penalty_placement == "outside":
            problems.append(
                "loss.penalty_placement=outside needs next states: the 2D tasks are one-step "
                "bandits (their Q target is the reward); use inside"
            )
        if cfg.data.domain == "toy2d" and cfg.eval.toy2d_samples > cfg.data.toy2d_size:
            problems.append(
                f"eval.toy2d_samples ({cfg.eval.toy2d_samples}) must be <= data.toy2d_size "
                f"({cfg.data.toy2d_size}): the behavior samples are drawn without replacement"
            )
    if problems:
        raise ConfigError("Invalid configuration: " + "; ".join(problems) + ".")


# --------------------------------------------------------------------- the collector
@dataclass
class CollectEnvSettings:
    id: str = setting("Gymnasium MuJoCo env to train SAC on, e.g. Hopper-v5, HalfCheetah-v5")
    name: str | None = setting("short name in the dataset ids; null: env.id lowercased without -vN")
    max_episode_steps: int = setting("step limit of an episode", **_at_least(1))


@dataclass
class SACSettings:
    actor_hidden: list[int] = setting("hidden widths of the SAC actor")
    critic_hidden: list[int] = setting("hidden widths of each SAC critic")
    num_qvalue_nets: int = setting("SAC critics (min over them)", **_at_least(1))
    gamma: float = setting("discount", lambda v: 0 <= v <= 1, "in [0, 1]")
    tau: float = setting("Polyak rate of the target critics", **_RATE)
    lr: float = setting("Adam learning rate (actor, critics, entropy weight)", **_POSITIVE)
    alpha_init: float = setting("initial entropy weight", **_POSITIVE)
    batch_size: int = setting("transitions per update", **_at_least(1))
    compile: bool = setting(
        "torch.compile the gradient step (compiles for tens of seconds; no faster on one CPU "
        "thread at 256x256, see benchmarks/DATASETS.md)"
    )


@dataclass
class CollectTrainSettings:
    total_frames: int = setting("env steps of online training", **_at_least(1))
    init_random_frames: int = setting(
        "uniform-random env steps before the policy acts and updates start", **_at_least(0)
    )
    frames_per_batch: int = setting("env steps per collector batch", **_at_least(1))
    utd: float = setting("gradient updates per env step", **_POSITIVE)
    eval_interval: int = setting("env steps between evaluations", **_at_least(1))
    eval_episodes: int = setting(
        "deterministic (mean-action) episodes per evaluation", **_at_least(1)
    )


@dataclass
class MediumSettings:
    reference: Literal["expert", "final"] = setting(
        "the level the medium policy reaches a fraction of: expert (the expert reference "
        "score) | final (the final policy's return)"
    )
    fraction: float = setting("that fraction (D4RL: about 1/3)", lambda v: 0 < v <= 1, "in (0, 1]")
    min_frames: int = setting(
        "the medium policy is never taken before this many env steps", **_at_least(0)
    )


@dataclass
class RolloutSettings:
    medium_steps: int = setting(
        "transitions of the medium dataset (whole episodes, at least this many)", **_at_least(1)
    )
    expert_steps: int = setting(
        "transitions of the expert dataset (whole episodes)", **_at_least(1)
    )
    exploration: Literal["random", "deterministic"] = setting(
        "random: sample the SAC policy (as D4RL) | deterministic: its mean action"
    )


@dataclass
class ReferenceSettings:
    random: Union[float, str] = setting(
        "ref_min_score (normalised 0): measured (mean return of a uniform-random policy) "
        "| d4rl | <number>"
    )
    random_episodes: int = setting("episodes of the measured random return", **_at_least(1))
    expert: Union[float, str] = setting(
        "ref_max_score (normalised 100): d4rl (D4RL's expert reference) | final (the final "
        "policy's return) | <number>"
    )


@dataclass
class CollectSettings:
    """Every setting of ``recipes/collect_dataset.py`` (values: ``config_collect/collect.yaml``)."""

    env: CollectEnvSettings = setting("the env")
    seed: int = setting("seed of torch, NumPy and the env", **_SEED)
    threads: int = setting("torch CPU threads", **_at_least(1))
    output_dir: str | None = setting(
        "Minari datasets directory; null: MINARI_DATASETS_PATH or ~/.minari/datasets"
    )
    dataset_prefix: str = setting(
        "first part of the dataset ids <prefix>/<env.name>/<kind>-<version>"
    )
    dataset_version: str = setting("last part of the ids, e.g. v0")
    overwrite: bool = setting("replace existing datasets of the same ids")
    datasets: list[Literal["medium", "medium-replay", "expert", "medium-expert"]] = setting(
        "datasets to write, any of medium, medium-replay, expert, medium-expert"
    )
    run_dir: str = setting("directory of summary.json and the policy checkpoints")
    sac: SACSettings = setting("the SAC agent")
    train: CollectTrainSettings = setting("online training")
    medium: MediumSettings = setting("the medium policy")
    rollouts: RolloutSettings = setting("dataset rollouts")
    reference: ReferenceSettings = setting("reference returns stored with the datasets")
    progress: bool = setting("show a progress bar")


def validate_collect_config(cfg: DictConfig) -> None:
    """Checks the collector's settings (types, ranges, choices) before anything is built."""
    _require_set(cfg, "")
    problems = check_settings(cfg, CollectSettings)
    for key in ("random", "expert"):
        value = OmegaConf.select(cfg, f"reference.{key}")
        words = ("measured", "d4rl") if key == "random" else ("d4rl", "final")
        if isinstance(value, str) and value not in words:
            problems.append(
                f"reference.{key} must be {' | '.join(words)} | <number> (got {value!r})"
            )
    if not problems:
        total, per_batch = int(cfg.train.total_frames), int(cfg.train.frames_per_batch)
        if total % per_batch:
            problems.append(
                f"train.total_frames ({total}) must be a multiple of train.frames_per_batch "
                f"({per_batch}): TorchRL's collector would round it up to "
                f"{-(-total // per_batch) * per_batch} frames, past the replay buffer's size"
            )
    if problems:
        raise ConfigError("Invalid configuration: " + "; ".join(problems) + ".")


# ----------------------------------------------------------------------- the checker
def exit_on_config_error(validate, cfg: DictConfig, log: logging.Logger) -> None:
    """Runs ``validate(cfg)``; a :class:`ConfigError` is logged as one line, exit code 2."""
    try:
        validate(cfg)
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)


def _require_set(cfg: DictConfig, hint: str, hinted_key: str = "") -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"Invalid configuration: {', '.join(missing)} must be set"
            f"{hint if hinted_key in missing else ''}; the task file sets them for the named tasks."
        )


def check_settings(cfg: DictConfig, schema: type) -> list[str]:
    """Every leaf of ``cfg`` against the dataclass ``schema``: the problems, one phrase each.

    Integral floats given to integer settings (``optim.train_steps=2e6``) become ints in ``cfg``.
    """
    problems: list[str] = []
    _check_node(cfg, schema, "", problems)
    return problems


def _check_node(node: DictConfig, schema: type, prefix: str, problems: list[str]) -> None:
    hints = get_type_hints(schema)
    known = {f.name for f in fields(schema)}
    for key in node.keys():
        if key not in known:
            problems.append(
                f"{prefix}{key} is not a setting (nothing reads it; settings of "
                f"{prefix[:-1] or 'the top level'}: {', '.join(sorted(known))})"
            )
    for f in fields(schema):
        key, kind = prefix + f.name, hints[f.name]
        if f.name not in node:
            problems.append(f"{key} is missing (it has no default to fall back on)")
            continue
        if is_dataclass(kind):
            value = node[f.name]
            if isinstance(value, DictConfig):
                _check_node(value, kind, key + ".", problems)
            else:
                problems.append(f"{key} is a group of settings, not a value (got {value!r})")
            continue
        value = node[f.name]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        problem, checked = _check_value(key, value, kind)
        if problem is None and checked is not None and f.metadata.get("rule") is not None:
            if not f.metadata["rule"](checked):
                problem = f"{key} must be {f.metadata['rule_text']} (got {checked})"
        if problem is not None:
            problems.append(problem)
        elif isinstance(value, float) and isinstance(checked, int):
            node[f.name] = checked  # an integral float given to an integer setting


def _fmt(value: Any) -> str:
    """A value as written on the command line: booleans as true/false, strings quoted."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _check_value(key: str, value: Any, kind: Any) -> tuple[str | None, Any]:
    """``(problem or None, value)``; integer settings turn integral floats into ints."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is types.UnionType:  # X | Y
        origin = Union
    if origin is Union and type(None) in args:  # X | None
        if value is None:
            return None, None
        rest = tuple(a for a in args if a is not type(None))
        kind = rest[0] if len(rest) == 1 else Union[rest]
        origin, args = get_origin(kind), get_args(kind)
    if kind is bool:
        if isinstance(value, bool):
            return None, value
        return f"{key} must be true or false (got {_fmt(value)})", value
    if kind is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return None, value
        return f"{key} must be an integer (got {_fmt(value)})", value
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return None, value
            return f"{key} must be a finite number (got {value})", value
        return f"{key} must be a number (got {_fmt(value)})", value
    if kind is str:
        if isinstance(value, str):
            return None, value
        return f"{key} must be a string (got {value!r}; quote it: {key}='{value}')", value
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return None, value
        return f"{key} must be one of {', '.join(args)} (got {value!r})", value
    if origin is Union:  # a number or a word (checked by the caller)
        if isinstance(value, str):
            return None, value
        return _check_value(key, value, float)
    if origin is list:
        item = args[0]
        if item is int:
            if (
                isinstance(value, list)
                and value
                and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value)
            ):
                return None, value
            return f"{key} must be a non-empty list of positive integers (got {value})", value
        options = get_args(item)
        if isinstance(value, list) and all(isinstance(v, str) and v in options for v in value):
            return None, value
        return f"{key} must be a list of {', '.join(options)} (got {value})", value
    raise TypeError(f"schema type {kind!r} of {key} is not supported")  # a schema bug


# ------------------------------------------------------------------------- --help text
SCHEMAS = {"recipe": RecipeSettings, "collect": CollectSettings}


def settings_help(schema: type, cfg: DictConfig | None = None, prefix: str = "") -> str:
    """One line per setting, ``key=<current value>  meaning [rule or choices]``; values first,
    then one block per section."""
    hints = get_type_hints(schema)
    values = [f for f in fields(schema) if not is_dataclass(hints[f.name])]
    sections = [f for f in fields(schema) if is_dataclass(hints[f.name])]
    lines: list[str] = []
    for f in values:
        kind, meaning = hints[f.name], f.metadata["help"]
        if get_origin(kind) is Literal and not all(a in meaning for a in get_args(kind)):
            meaning = f"{meaning} [{' | '.join(get_args(kind))}]"
        if f.metadata.get("rule_text") and f.metadata["rule_text"] not in meaning:
            meaning = f"{meaning} [{f.metadata['rule_text']}]"
        lines.append(f"  {prefix + f.name + '=' + _shown(cfg, f.name):<36} {meaning}")
    for f in sections:
        sub = cfg.get(f.name) if isinstance(cfg, DictConfig) else None
        lines.append(f"\n{prefix + f.name}: {f.metadata['help']}")
        lines.append(settings_help(hints[f.name], sub, prefix + f.name + "."))
    return "\n".join(lines)


def _shown(cfg: DictConfig | None, key: str) -> str:
    if not isinstance(cfg, DictConfig) or key not in cfg.keys():
        return "?"
    if OmegaConf.is_missing(cfg, key):  # ``key in cfg`` is false for these
        return "???"
    try:
        value = cfg[key]
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: show it as written
        return str(OmegaConf.to_container(cfg)[key])
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _help_resolver(name: str, *, _root_: DictConfig) -> str:
    job = OmegaConf.masked_copy(_root_, [k for k in _root_ if k != "hydra"])
    text = settings_help(SCHEMAS[name], job)
    return text.replace("$", "$$")  # the help template is a string.Template


OmegaConf.register_new_resolver("settings_help", _help_resolver, replace=True)
