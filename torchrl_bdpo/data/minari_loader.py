"""Load Minari datasets into TED transitions (without torchrl's MinariExperienceReplay).

torchrl 0.14's ``MinariExperienceReplay`` stores an all-zero dataset (it memory-maps the
structure of the loaded data but not its contents), so episodes are read with
``minari.load_dataset`` and stacked here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import OfflineDataset
from .errors import DatasetUnavailableError, DatasetValidationError
from .ted import GOAL_OBSERVATION_KEYS, episodes_to_ted
from .validation import validate_transitions

__all__ = ["load_minari_dataset", "minari_datasets_dir"]

logger = logging.getLogger(__name__)


def minari_datasets_dir() -> Path:
    """Where Minari keeps datasets: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    if root is None:
        return Path("~/.minari/datasets").expanduser()
    return Path(root)


def _unavailable(dataset_id: str, reason: str) -> DatasetUnavailableError:
    root = minari_datasets_dir()
    where = "MINARI_DATASETS_PATH" if "MINARI_DATASETS_PATH" in os.environ else "default"
    return DatasetUnavailableError(
        f"Minari dataset {dataset_id!r} is not available: {reason}. Searched "
        f"{root / dataset_id} ({where} datasets directory {root}). To get it, run "
        f"`minari download {dataset_id}` on a machine with network access, then copy its "
        f"folder ~/.minari/datasets/{dataset_id} (or $MINARI_DATASETS_PATH/{dataset_id}) to "
        f"{root / dataset_id} here, or set MINARI_DATASETS_PATH to a directory that holds it."
    )


def _space_obs_dim(space: Any) -> int | None:
    """Flat observation size implied by a Gymnasium space (see ``flatten_observation``)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict) and "observation" in space.spaces:
        parts = [space[k] for k in GOAL_OBSERVATION_KEYS if k in space.spaces]
        if all(isinstance(p, gym.spaces.Box) for p in parts):
            return int(sum(np.prod(p.shape) for p in parts))
        return None
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    return None


def _spec_id(spec_json: Any) -> str | None:
    if not isinstance(spec_json, str):
        return None
    try:
        return json.loads(spec_json).get("id")
    except (ValueError, AttributeError):
        return None


_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _check_minari_files(data_dir: Path) -> None:
    """Refuse a broken ``metadata.json`` or ``main_data.hdf5`` with one line naming the file.

    Checks that ``metadata.json`` is a JSON object with ``total_episodes`` and, for the HDF5
    format, that ``main_data.hdf5`` opens, holds that many episodes and that each has the
    five episode arrays with numeric (or bool) dtypes. Data that cannot be read later (a
    corrupted chunk) are reported by the caller.
    """
    import h5py

    meta_path = data_dir / "metadata.json"
    if not meta_path.is_file():
        raise DatasetValidationError(f"{meta_path} is missing: a Minari dataset needs it")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetValidationError(f"{meta_path} is not valid JSON ({_one_line(err)})") from err
    if not isinstance(meta, dict):
        raise DatasetValidationError(
            f"{meta_path} holds a JSON {type(meta).__name__}, expected an object"
        )
    total = meta.get("total_episodes")
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise DatasetValidationError(
            f"{meta_path}: 'total_episodes' is {total!r}, expected a positive integer"
        )
    if meta.get("data_format", "hdf5") != "hdf5":
        return  # other formats (arrow) are checked by minari and when the episodes are read
    main = data_dir / "main_data.hdf5"
    if not main.is_file():
        raise DatasetValidationError(f"{main} is missing: metadata.json names the hdf5 format")
    try:
        with h5py.File(main, "r") as f:
            if len(f) != total:
                raise DatasetValidationError(
                    f"{main} holds {len(f)} episodes but {meta_path.name} says {total}"
                )
            for name, group in f.items():
                missing = [k for k in _EPISODE_KEYS if k not in group]
                if missing:
                    raise DatasetValidationError(f"{main}: {name} lacks {missing}")

                def check_dtype(key, node, episode=name):
                    if isinstance(node, h5py.Dataset) and node.dtype.kind not in "biuf":
                        raise DatasetValidationError(
                            f"{main}: {episode}/{key} has dtype {node.dtype}, expected numbers "
                            "(float, int or bool)"
                        )

                for key in _EPISODE_KEYS:
                    node = group[key]
                    check_dtype(key, node)
                    if isinstance(node, h5py.Group):  # dict observations
                        node.visititems(lambda sub, n, k=key: check_dtype(f"{k}/{sub}", n))
    except DatasetValidationError:
        raise
    except Exception as err:  # h5py: OSError, KeyError, RuntimeError... for damaged files
        raise DatasetValidationError(
            f"{main} cannot be read as HDF5 ({_one_line(err)}); it is truncated or corrupted"
        ) from err


def load_minari_dataset(dataset_id: str, *, download: bool = False) -> OfflineDataset:
    """Load a Minari dataset as TED transitions.

    Dict observations are flattened to ``concat(achieved_goal, observation, desired_goal)``
    (the goals when present), see :func:`~torchrl_bdpo.data.ted.flatten_observation`.

    Args:
        dataset_id: Minari id, e.g. ``"mujoco/hopper/medium-v0"``.
        download: try ``minari``'s download when the dataset is not local.

    Returns:
        :class:`OfflineDataset` whose ``env_id`` is the evaluation env of the dataset
        (``eval_env_spec``, else the data-collection ``env_spec``), with reference
        scores from the dataset metadata (``ref_min_score``/``ref_max_score``) or ``None``.

    Raises:
        DatasetUnavailableError: not found locally and ``download`` is off or failed.
        DatasetValidationError: the stored transitions are malformed.

    Examples:
        >>> ds = load_minari_dataset("mujoco/hopper/medium-v0")  # doctest: +SKIP
        >>> ds.data["next", "reward"].shape  # doctest: +SKIP
        torch.Size([1000000, 1])
    """
    import minari

    data_dir = minari_datasets_dir() / dataset_id / "data"
    if not data_dir.is_dir() and not download:
        raise _unavailable(dataset_id, "not found locally and download=False")
    if data_dir.is_dir():
        _check_minari_files(data_dir)
    try:
        source = minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError as err:
        raise _unavailable(dataset_id, f"minari could not find it ({err})") from err
    except Exception as err:  # minari raises several types for network/remote failures
        if data_dir.is_dir():
            raise DatasetValidationError(
                f"Minari dataset {dataset_id!r} in {data_dir} cannot be loaded ({_one_line(err)})"
            ) from err
        raise _unavailable(dataset_id, f"download failed ({type(err).__name__}: {err})") from err

    raw_meta = source.storage.metadata
    try:
        episodes = [{k: getattr(ep, k) for k in _EPISODE_KEYS} for ep in source.iterate_episodes()]
    except Exception as err:  # h5py's errors for data that no longer decode (corrupted chunks)
        raise DatasetValidationError(
            f"Minari dataset {dataset_id!r}: the episodes in {data_dir} cannot be read "
            f"({_one_line(err)}); the data files are truncated or corrupted"
        ) from err
    try:
        data = episodes_to_ted(episodes)
    except DatasetValidationError as err:
        raise DatasetValidationError(f"Minari dataset {dataset_id!r} ({data_dir}): {err}") from err

    action_space = source.action_space
    low = getattr(action_space, "low", -np.inf)
    high = getattr(action_space, "high", np.inf)
    try:
        validate_transitions(
            data,
            action_low=np.asarray(low, dtype=np.float64).reshape(-1),
            action_high=np.asarray(high, dtype=np.float64).reshape(-1),
            obs_dim=_space_obs_dim(source.observation_space),
        )
    except DatasetValidationError as err:
        raise DatasetValidationError(f"Minari dataset {dataset_id!r} ({data_dir}): {err}") from err

    env_spec_id = source.spec.env_spec.id if source.spec.env_spec is not None else None
    eval_env_id = _spec_id(raw_meta.get("eval_env_spec"))
    ref_min, ref_max = raw_meta.get("ref_min_score"), raw_meta.get("ref_max_score")
    metadata = {
        "source": "minari",
        "path": str(data_dir),
        "env_spec_id": env_spec_id,
        "eval_env_id": eval_env_id,
        # full spec (kwargs such as AntMaze maze options): gym.make(EnvSpec.from_json(...))
        "eval_env_spec": raw_meta.get("eval_env_spec"),
        "total_episodes": len(episodes),
        "observation_layout": "concat({})".format(
            ", ".join(k for k in GOAL_OBSERVATION_KEYS if k in episodes[0]["observations"])
        )
        if isinstance(episodes[0]["observations"], dict)
        else "flat",
        **{
            k: raw_meta[k]
            for k in ("algorithm_name", "description", "minari_version", "dataset_size")
            if k in raw_meta
        },
    }
    logger.info(
        "loaded Minari dataset %s: %d transitions in %d episodes from %s",
        dataset_id,
        data.batch_size[0],
        len(episodes),
        data_dir,
    )
    return OfflineDataset(
        name=dataset_id,
        data=data,
        env_id=eval_env_id or env_spec_id,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        metadata=metadata,
    )
