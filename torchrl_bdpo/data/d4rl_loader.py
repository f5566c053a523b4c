"""Load D4RL datasets as TED transitions: D4RL's own HDF5 files or TorchRL's processed cache.

Where a dataset ``name`` is looked for, in order (:func:`load_d4rl_dataset`):

1. D4RL's HDF5 file, named as D4RL names it (``hopper-medium-v2`` ->
   ``hopper_medium-v2.hdf5``, or ``<name>.hdf5``), in ``root`` when given, else in D4RL's
   download directory ``$D4RL_DATASET_DIR`` (default ``~/.d4rl/datasets``), read by
   :mod:`~torchrl_bdpo.data.d4rl_hdf5`; any other file: :func:`load_d4rl_hdf5`;
2. TorchRL's processed copy ``<root>/<name>`` (default root ``~/.cache/torchrl/d4rl``);
3. a download through TorchRL when allowed.

``torchrl.data.datasets.D4RLExperienceReplay(name, direct_download=True)`` downloads the
D4RL hdf5 file once and memory-maps a processed copy under ``<root>/<name>`` (default
root ``~/.cache/torchrl/d4rl``); later constructions read that copy. Its layout, for
rows ``i = 0 .. N-2`` of the hdf5 file (the last row is dropped)::

    observation = observations[i]          action = actions[i]
    next/observation = next_observations[i]  (observations[i + 1] when the file has none)
    next/reward = rewards[i]   next/terminated = terminals[i]   next/truncated = timeouts[i]
    next/done = terminated (| truncated with use_truncated_as_done=True, the default)
    root reward/done/terminated/truncated = the previous row's (TED "reset" flags)
    info/..., next/info/...    the hdf5 "infos" group

and ``next/observation`` is **zeroed** wherever ``next/done`` is set. With the default
``use_truncated_as_done=True`` that includes every timeout, whose true next observation
is then lost. This module constructs it with ``use_truncated_as_done=False`` and, for any
cache, drops the timeout transitions whose next observation is unusable (all zeros, or
just a copy of the following row's observation, i.e. the next episode's first state);
the transition before such a dropped one is marked truncated instead. Timeouts stay
truncations (bootstrapped through), never terminals.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase

from ..scores import D4RL_REF_SCORES
from .d4rl_hdf5 import (
    d4rl_datasets_dir,
    d4rl_file_name,
    d4rl_name_of_file,
    read_d4rl_hdf5,
    time_limit_rows,
)
from .dataset import OfflineDataset
from .errors import DatasetUnavailableError, DatasetValidationError
from .validation import validate_transitions

__all__ = [
    "D4RL_NAME_PATTERN",
    "d4rl_cache_dir",
    "d4rl_eval_env_id",
    "d4rl_hdf5_candidates",
    "d4rl_transitions_from_torchrl",
    "load_d4rl_dataset",
    "load_d4rl_hdf5",
]

logger = logging.getLogger(__name__)

#: ``<env>-<kind>-v<digit>``, e.g. ``hopper-medium-replay-v2``, ``antmaze-umaze-v0``.
D4RL_NAME_PATTERN = re.compile(
    r"^(?P<env>[a-z0-9]+)-(?P<kind>[a-z0-9]+(?:-[a-z0-9]+)*)-v(?P<version>\d+)$"
)

_GYMNASIUM_IDS = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}
_ANTMAZE_IDS = {
    "umaze": "AntMaze_UMaze-v5",
    "medium": "AntMaze_Medium-v5",
    "large": "AntMaze_Large-v5",
}

#: Observation sizes of the D4RL data (the v5 envs above match for hopper/halfcheetah/walker2d).
_D4RL_OBS_DIMS = {"hopper": 11, "halfcheetah": 17, "walker2d": 17, "ant": 111, "antmaze": 29}

_EVAL_NOTES = {
    "antmaze": "AntMaze_*-v5 needs gymnasium-robotics; D4RL antmaze observations (29) are "
    "concat(achieved_goal, observation) of the v5 env's dict observation, without the goal",
    "ant": "D4RL ant observations have 111 entries, Ant-v5 has 105 by default: "
    "not directly comparable",
}


def d4rl_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Directory holding torchrl's processed D4RL datasets (default ``~/.cache/torchrl/d4rl``)."""
    if root is not None:
        return Path(root)
    from torchrl.data.datasets.utils import _get_root_dir

    return Path(_get_root_dir("d4rl"))


def d4rl_eval_env_id(name: str) -> str | None:
    """Gymnasium (v5) environment id to evaluate a D4RL dataset on, ``None`` if unknown.

    Examples:
        >>> d4rl_eval_env_id("walker2d-medium-expert-v2"), d4rl_eval_env_id("antmaze-large-play-v0")
        ('Walker2d-v5', 'AntMaze_Large-v5')
    """
    match = D4RL_NAME_PATTERN.match(name)
    if match is None:
        return None
    env, kind = match["env"], match["kind"]
    if env == "antmaze":
        return _ANTMAZE_IDS.get(kind.split("-")[0])
    return _GYMNASIUM_IDS.get(env)


def d4rl_hdf5_candidates(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Paths where D4RL's HDF5 file of ``name`` may lie: D4RL's file name, then ``<name>.hdf5``,
    in ``root`` when given, else in D4RL's download directory (:func:`d4rl_datasets_dir`)."""
    directory = Path(root).expanduser() if root is not None else d4rl_datasets_dir()
    names = [n for n in (d4rl_file_name(name), f"{name}.hdf5") if n is not None]
    return [directory / n for n in dict.fromkeys(names)]


def _unavailable(name: str, cache: Path, files: list[Path], reason: str) -> DatasetUnavailableError:
    err = DatasetUnavailableError(
        f"D4RL dataset {name!r} is not available: {reason}. Looked for D4RL's HDF5 file at "
        f"{', '.join(map(str, files))} and for torchrl's processed copy at {cache / name}. "
        f"Copy D4RL's file ({files[0].name}, as d4rl downloads it into $D4RL_DATASET_DIR or "
        "~/.d4rl/datasets) into one of those places or pass its path (load_d4rl_hdf5), or "
        "allow the download on a machine with network access."
    )
    err.reason, err.path, err.files = reason, cache / name, files  # callers word their own hint
    return err


def d4rl_transitions_from_torchrl(
    raw: TensorDictBase, *, max_episode_steps: int | None = None
) -> tuple[TensorDict, dict]:
    """Convert torchrl's processed D4RL TensorDict ``[N]`` to TED transitions ``[T]``.

    Episodes end after a terminal or a timeout, or where ``next/observation`` differs from
    the following row's ``observation`` (L2 distance > 1e-6, as in IQL's D4RL split).
    Unusable timeout transitions are dropped (see the module docstring). Every episode
    ends with ``done``: an end without a flag (and the data's last row) becomes a truncation.
    Data that mark no timeouts (no ``next/truncated``) and whose next observations are the
    following rows' (a file without ``timeouts`` and ``next_observations``) show no time-limit
    ends: ``max_episode_steps``, the limit they were collected under, marks them
    (:func:`~torchrl_bdpo.data.d4rl_hdf5.time_limit_rows`).

    Returns:
        ``(transitions, info)`` where ``info`` counts dropped transitions and episodes.

    Raises:
        DatasetValidationError: time-limit ends cannot be told and ``max_episode_steps`` is
            not given.
    """
    obs = raw.get("observation").to(torch.float32)
    next_obs = raw.get(("next", "observation")).to(torch.float32)
    num = obs.shape[0]
    terminated = raw.get(("next", "terminated")).reshape(num).bool()
    timeouts = raw.get(("next", "truncated"), None)
    truncated = torch.zeros_like(terminated) if timeouts is None else timeouts.reshape(num).bool()
    # next observation equal to the following row's observation (a continuation or a copy);
    # the tolerance follows the usual D4RL episode split (IQL): L2 distance <= 1e-6.
    copies_following = torch.zeros(num, dtype=torch.bool)
    copies_following[:-1] = torch.linalg.vector_norm(next_obs[:-1] - obs[1:], dim=-1) <= 1e-6
    zeroed = (next_obs == 0).all(-1)  # torchrl zeroes terminal rows' next observations
    limits = {}
    if timeouts is None and bool((copies_following[:-1] | zeroed[:-1]).all()):
        if max_episode_steps is None:
            raise DatasetValidationError(
                "the data mark no timeouts and their next observations are the following "
                "rows', so the ends of episodes cut by the time limit cannot be told from the "
                "data; pass the limit the data were collected under (max_episode_steps; the "
                "recipe: data.max_episode_steps)"
            )
        truncated = time_limit_rows(terminated, max_episode_steps)
        limits = {"time_limit_rows": int(truncated.sum()), "max_episode_steps": max_episode_steps}
    done = terminated | truncated
    boundary = done.clone()
    boundary[:-1] |= ~copies_following[:-1] & ~zeroed[:-1]
    boundary[-1] = True
    unflagged = boundary & ~done
    episode = torch.zeros(num, dtype=torch.int64)
    episode[1:] = torch.cumsum(boundary[:-1].long(), 0)

    drop = truncated & ~terminated & (zeroed | copies_following)
    # the transition before a dropped timeout becomes the (truncated) end of its episode
    prev_end = torch.zeros(num, dtype=torch.bool)
    prev_end[:-1] = drop[1:] & ~drop[:-1] & (episode[1:] == episode[:-1])
    # every episode ends with done: unflagged ends (and the data's last row) become truncations
    truncated = truncated | prev_end | unflagged
    keep = ~drop
    # renumber episodes 0..E-1 over the kept rows
    episode = torch.unique(episode[keep], return_inverse=True)[1]
    terminated, truncated = terminated[keep].unsqueeze(-1), truncated[keep].unsqueeze(-1)
    data = TensorDict(
        {
            "observation": obs[keep],
            "action": raw.get("action")[keep].to(torch.float32),
            "episode": episode,
            "next": {
                "observation": next_obs[keep],
                "reward": raw.get(("next", "reward"))[keep].reshape(-1, 1).to(torch.float32),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        batch_size=[int(keep.sum())],
    )
    info = {
        "raw_rows": num,
        "dropped_timeouts": int(drop.sum()),
        "unflagged_episode_ends": int(unflagged.sum()),
        "num_episodes": int(episode.max()) + 1 if episode.numel() else 0,
        **limits,
    }
    return data, info


def load_d4rl_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    max_episode_steps: int | None = None,
) -> OfflineDataset:
    """Load a D4RL dataset (e.g. ``"hopper-medium-v2"``) as TED transitions.

    Reads D4RL's own HDF5 file when there is one (see :func:`d4rl_hdf5_candidates`), else
    torchrl's processed copy ``<root>/<name>``; otherwise (and only if ``download``) lets
    ``D4RLExperienceReplay(direct_download=True)`` fetch it into that copy.

    Args:
        name: D4RL dataset name known to torchrl.
        root: a directory holding D4RL's HDF5 file or torchrl's processed copy (defaults:
            ``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets`` for the file,
            ``~/.cache/torchrl/d4rl`` for the copy).
        download: allow downloading when neither is there.
        max_episode_steps: the step limit the data were collected under; needed only for
            data that mark neither timeouts nor next observations (D4RL's ``-v0`` MuJoCo
            files), see :func:`~torchrl_bdpo.data.d4rl_hdf5.time_limit_rows`.

    Returns:
        :class:`OfflineDataset` with the Gymnasium v5 evaluation env id (see
        :func:`d4rl_eval_env_id`) and D4RL reference scores.

    Raises:
        ValueError: ``name`` is not a D4RL dataset torchrl knows.
        DatasetUnavailableError: neither the file nor the copy is here, or the copy is
            unreadable, and it could not be (re)obtained.
        DatasetValidationError: the data is malformed (the message names the file).

    Examples:
        >>> ds = load_d4rl_dataset("hopper-medium-v2")  # doctest: +SKIP
        >>> ds.env_id, ds.ref_max_score  # doctest: +SKIP
        ('Hopper-v5', 3234.3)
    """
    from torchrl.data.datasets.d4rl import D4RLExperienceReplay
    from torchrl.data.datasets.d4rl_infos import D4RL_DATASETS

    match = D4RL_NAME_PATTERN.match(name)
    if match is None or name not in D4RL_DATASETS:
        family = name.split("-", 1)[0]
        similar = sorted(k for k in D4RL_DATASETS if k.startswith(family + "-"))
        raise ValueError(
            f"{name!r} is not a D4RL dataset known to torchrl; "
            + (
                f"datasets for {family!r}: {similar}"
                if similar
                else "expected e.g. 'hopper-medium-v2'"
            )
        )
    files = d4rl_hdf5_candidates(name, root)
    for path in files:
        if path.is_file():
            return load_d4rl_hdf5(path, name=name, max_episode_steps=max_episode_steps)
    cache = d4rl_cache_dir(root)
    cached = (cache / name).exists()
    if not cached and not download:
        raise _unavailable(name, cache, files, "no D4RL file, no cached copy and download=False")

    saved_env = os.environ.get("D4RL_DATASET_DIR")  # torchrl points it at a deleted temp dir
    try:
        # creates the cache when missing (download), or checks that it is there
        D4RLExperienceReplay(
            name,
            batch_size=1,
            direct_download=True,
            use_truncated_as_done=False,
            root=str(cache),
            download=not cached,
        )
        raw = TensorDict.load_memmap(cache / name)
    except Exception as err:
        reason = (
            f"the cached copy could not be read ({type(err).__name__}: {err}); delete it and "
            "fetch it again"
            if cached
            else f"download failed ({type(err).__name__}: {err})"
        )
        raise _unavailable(name, cache, files, reason) from err
    finally:
        if saved_env is None:
            os.environ.pop("D4RL_DATASET_DIR", None)
        else:
            os.environ["D4RL_DATASET_DIR"] = saved_env

    try:
        data, info = d4rl_transitions_from_torchrl(raw, max_episode_steps=max_episode_steps)
    except DatasetValidationError as err:
        raise DatasetValidationError(f"{cache / name}: {err}") from err
    return _d4rl_dataset(name, data, {"source": "d4rl", "path": str(cache / name), **info})


def load_d4rl_hdf5(
    path: str | os.PathLike, *, name: str | None = None, max_episode_steps: int | None = None
) -> OfflineDataset:
    """Load an HDF5 file in D4RL's layout (see :mod:`~torchrl_bdpo.data.d4rl_hdf5`).

    Args:
        path: the file, e.g. ``~/.d4rl/datasets/hopper_medium-v2.hdf5``.
        name: the dataset's name; defaults to the D4RL name of a file named as D4RL names
            it, else the file's stem. A D4RL dataset name known to torchrl brings its
            evaluation env and reference scores; any other name has neither (evaluation
            then needs an env id, and reports raw returns).
        max_episode_steps: the step limit the data were collected under; needed only for a
            file with neither ``timeouts`` nor ``next_observations`` (see
            :func:`~torchrl_bdpo.data.d4rl_hdf5.read_d4rl_hdf5`).

    Raises:
        DatasetUnavailableError: ``path`` is not a file.
        DatasetValidationError: the file is not readable HDF5 or its data are malformed.

    Examples:
        >>> ds = load_d4rl_hdf5("~/.d4rl/datasets/hopper_medium-v2.hdf5")  # doctest: +SKIP
        >>> ds.name, ds.env_id  # doctest: +SKIP
        ('hopper-medium-v2', 'Hopper-v5')
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = (
            "is a directory (pass the directory as root / data.d4rl_root)"
            if path.is_dir()
            else "does not exist"
        )
        raise DatasetUnavailableError(f"D4RL-format HDF5 file {path} {what}")
    name = name or d4rl_name_of_file(path) or path.stem
    rows, file_info = read_d4rl_hdf5(path, max_episode_steps=max_episode_steps)
    data, info = d4rl_transitions_from_torchrl(rows)
    return _d4rl_dataset(
        name, data, {"source": "d4rl-hdf5", "path": str(path), **file_info, **info}
    )


def _d4rl_dataset(name: str, data: TensorDict, metadata: dict) -> OfflineDataset:
    """Validates ``data`` and attaches what D4RL knows of ``name`` (env id, reference scores)."""
    from torchrl.data.datasets.d4rl_infos import D4RL_DATASETS

    match = D4RL_NAME_PATTERN.match(name)
    known = match is not None and name in D4RL_DATASETS
    env = match["env"] if known else None
    try:
        validate_transitions(data, obs_dim=_D4RL_OBS_DIMS.get(env))
    except DatasetValidationError as err:
        raise DatasetValidationError(f"{metadata['path']}: {err}") from err
    refs = D4RL_REF_SCORES.get(env) if known else None
    if env in _EVAL_NOTES:
        metadata["eval_note"] = _EVAL_NOTES[env]
    if metadata["dropped_timeouts"]:
        logger.info(
            "%s: dropped %d timeout transitions without a usable next observation",
            name,
            metadata["dropped_timeouts"],
        )
    logger.info(
        "loaded D4RL dataset %s: %d transitions in %d episodes from %s",
        name,
        data.batch_size[0],
        metadata["num_episodes"],
        metadata["path"],
    )
    return OfflineDataset(
        name=name,
        data=data,
        env_id=d4rl_eval_env_id(name) if known else None,
        ref_min_score=None if refs is None else refs.random,
        ref_max_score=None if refs is None else refs.expert,
        metadata=metadata,
    )
