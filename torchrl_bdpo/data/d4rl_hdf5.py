"""Read D4RL's own HDF5 files, as ``d4rl`` downloads them into ``~/.d4rl/datasets``.

D4RL keeps each dataset as one file named after its download URL (``hopper-medium-v2`` is
``hopper_medium-v2.hdf5``) in ``$D4RL_DATASET_DIR``, by default ``~/.d4rl/datasets``. A file
holds one row per environment step, episodes back to back::

    observations [N, obs_dim]   actions [N, act_dim]   rewards [N]
    terminals [N]               timeouts [N] (optional)   next_observations [N, obs_dim] (optional)

:func:`read_d4rl_hdf5` turns the rows into the layout of TorchRL's processed D4RL copy
(``observation``, ``action``, ``next/observation``, ``next/reward``, ``next/terminated``,
``next/truncated``), which :func:`~torchrl_bdpo.data.d4rl_loader.d4rl_transitions_from_torchrl`
splits into episodes. Without ``next_observations`` the next observation of row ``i`` is row
``i + 1``'s observation, as in D4RL's ``qlearning_dataset`` and IQL's loader: a timeout row
(whose following row starts another episode) and the file's last row (unless terminal) have
no usable next observation and are dropped by the conversion, the row before them ending its
episode as a truncation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from .errors import DatasetValidationError
from .validation import check_flag_values

__all__ = [
    "d4rl_datasets_dir",
    "d4rl_file_name",
    "d4rl_name_of_file",
    "read_d4rl_hdf5",
    "time_limit_rows",
]

_REQUIRED = ("observations", "actions", "rewards", "terminals")


def d4rl_datasets_dir() -> Path:
    """D4RL's download directory: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``."""
    root = os.environ.get("D4RL_DATASET_DIR")
    return Path(root).expanduser() if root else Path("~/.d4rl/datasets").expanduser()


def _d4rl_urls() -> dict[str, str]:
    from torchrl.data.datasets.d4rl_infos import D4RL_DATASETS

    return D4RL_DATASETS


def d4rl_file_name(name: str) -> str | None:
    """File name D4RL stores dataset ``name`` under (the last part of its URL), ``None`` if unknown.

    Examples:
        >>> d4rl_file_name("hopper-medium-replay-v2")
        'hopper_medium_replay-v2.hdf5'
    """
    url = _d4rl_urls().get(name)
    return None if url is None else url.rsplit("/", 1)[-1]


def d4rl_name_of_file(path: str | os.PathLike) -> str | None:
    """The D4RL dataset name of a file named as D4RL names it, ``None`` if none matches.

    Examples:
        >>> d4rl_name_of_file("/data/hopper_medium-v2.hdf5")
        'hopper-medium-v2'
    """
    file_name = Path(path).name
    for name, url in _d4rl_urls().items():
        if url.rsplit("/", 1)[-1] == file_name:
            return name
    return None


def _read(handle, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(handle[key][()])
    except Exception as err:  # h5py raises OSError/KeyError/RuntimeError on damaged data
        raise DatasetValidationError(
            f"{path}: key {key!r} cannot be read ({type(err).__name__}: {err}); the file is "
            "truncated or corrupted"
        ) from err


def time_limit_rows(terminated: torch.Tensor, max_episode_steps: int) -> torch.Tensor:
    """Rows ``[N]`` where an episode reaches ``max_episode_steps`` steps without terminating.

    Episodes start at row 0 and after every terminal or marked row; a row is marked when it
    is the ``max_episode_steps``-th step of its episode. (D4RL's ``qlearning_dataset`` uses
    this rule for files without ``timeouts``, except that its counter starts the episode
    after a terminal at step 1.)

    Examples:
        >>> terminated = torch.tensor([False, True, False, False, False, False, False])
        >>> time_limit_rows(terminated, 2).tolist()
        [False, False, False, True, False, True, False]
    """
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    terminated = terminated.reshape(-1).bool()
    if terminated.numel() == 0:
        return terminated.clone()
    rows = torch.arange(terminated.numel(), device=terminated.device)
    starts = torch.zeros_like(terminated)
    starts[0] = True
    starts[1:] = terminated[:-1]
    # step of each row counted from the last terminal; time limits fall every max_episode_steps
    first = torch.cummax(torch.where(starts, rows, torch.zeros_like(rows)), 0).values
    return ((rows - first + 1) % max_episode_steps == 0) & ~terminated


def read_d4rl_hdf5(
    path: str | os.PathLike, *, max_episode_steps: int | None = None
) -> tuple[TensorDict, dict]:
    """Rows of a D4RL HDF5 file in TorchRL's processed layout, and facts about the file.

    Args:
        path: the ``.hdf5`` file.
        max_episode_steps: the step limit the data were collected under. Needed (and used)
            only for a file with neither ``timeouts`` nor ``next_observations``: the rows where
            the limit falls become timeouts (:func:`time_limit_rows`).

    Returns:
        ``(rows, info)``: ``rows`` has batch size ``[N]`` and float32 ``observation``,
        ``action``, ``next/observation``, ``next/reward`` ``[N, 1]``, bool
        ``next/terminated``/``next/truncated`` ``[N, 1]`` (without ``next_observations`` the
        last row's next observation is zero and, unless terminal, it is flagged truncated);
        ``info`` says whether the file had ``timeouts`` and ``next_observations`` and, for a
        file with neither, how many time-limit rows were marked.

    Raises:
        DatasetValidationError: the file is not readable HDF5, lacks a key, or holds arrays
            of the wrong dtype, shape or length, or flags other than 0/1, or has neither
            ``timeouts`` nor ``next_observations`` and no ``max_episode_steps`` (the message names
            the file, the key and, for flags, the row).
    """
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except Exception as err:  # OSError for truncated/corrupted files
        raise DatasetValidationError(
            f"{path} cannot be read as an HDF5 file ({type(err).__name__}: {err}); it is "
            "truncated, corrupted or not HDF5"
        ) from err
    with handle:
        keys = set(handle.keys())
        missing = [k for k in _REQUIRED if k not in keys]
        if missing:
            raise DatasetValidationError(
                f"{path} lacks D4RL keys {missing} (has {sorted(keys)}); a D4RL file needs "
                f"{list(_REQUIRED)}, optionally 'timeouts' and 'next_observations'"
            )
        arrays = {
            k: _read(handle, k, path)
            for k in (*_REQUIRED, "timeouts", "next_observations")
            if k in keys
        }
    num = len(arrays["observations"])
    for key, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise DatasetValidationError(
                f"{path}: {key!r} has dtype {arr.dtype}, expected numbers (float, int or bool)"
            )
        want_ndim = 2 if key in ("observations", "actions", "next_observations") else 1
        shape = arr.shape
        if key == "rewards" and arr.ndim == 2 and shape[1] == 1:
            arr = arrays[key] = arr[:, 0]
        if arr.ndim != want_ndim or len(arr) != num:
            expected = f"[{num}, dim]" if want_ndim == 2 else f"[{num}]"
            raise DatasetValidationError(
                f"{path}: {key!r} has shape {list(shape)}, expected {expected} (one row per "
                "step, as many rows as 'observations')"
            )
    if num == 0:
        raise DatasetValidationError(f"{path} holds no rows")
    if "next_observations" in arrays and arrays["next_observations"].shape != (
        arrays["observations"].shape
    ):
        raise DatasetValidationError(
            f"{path}: 'next_observations' has shape {list(arrays['next_observations'].shape)}, "
            f"'observations' {list(arrays['observations'].shape)}"
        )
    terminals = arrays["terminals"]
    timeouts = arrays.get("timeouts", np.zeros(num, dtype=bool))
    # episodes as the flags delimit them, to name the offending step
    ends = np.zeros(num, dtype=bool)
    for flags in (terminals, timeouts):
        ends |= np.asarray(flags, dtype=np.float64) != 0
    for key, flags in (("terminals", terminals), ("timeouts", timeouts)):
        check_flag_values(flags, f"{path}: {key}", episode_ends=ends)

    obs = torch.from_numpy(arrays["observations"]).to(torch.float32)
    terminated = torch.from_numpy(np.asarray(terminals) != 0).reshape(num, 1)
    truncated = torch.from_numpy(np.asarray(timeouts) != 0).reshape(num, 1)
    if "next_observations" in arrays:
        next_obs = torch.from_numpy(arrays["next_observations"]).to(torch.float32)
    else:
        # D4RL's qlearning_dataset: the next row's observation. The last row has none: its
        # next observation is zeroed and, unless terminal, it is marked as a timeout, so that
        # the conversion drops it like any timeout without a usable next observation.
        next_obs = torch.cat([obs[1:], torch.zeros_like(obs[:1])])
        truncated[-1] |= ~terminated[-1]
    time_limits = None
    if "timeouts" not in arrays and "next_observations" not in arrays:
        # the row at a time limit looks like any other: only the limit can tell where it is
        if max_episode_steps is None:
            raise DatasetValidationError(
                f"{path} has neither 'timeouts' nor 'next_observations', so the ends of "
                "episodes cut by the time limit cannot be told from the data; pass the limit "
                "the data were collected under (max_episode_steps; the recipe: "
                "data.max_episode_steps), or add a 'timeouts' key"
            )
        limit_rows = time_limit_rows(terminated, max_episode_steps).reshape(num, 1)
        time_limits = int(limit_rows.sum())
        truncated |= limit_rows

    data = TensorDict(
        {
            "observation": obs,
            "action": torch.from_numpy(arrays["actions"]).to(torch.float32),
            "next": {
                "observation": next_obs,
                "reward": torch.from_numpy(arrays["rewards"]).to(torch.float32).reshape(num, 1),
                "terminated": terminated,
                "truncated": truncated,
            },
        },
        batch_size=[num],
    )
    info = {
        "has_timeouts": "timeouts" in arrays,
        "has_next_observations": "next_observations" in arrays,
    }
    if time_limits is not None:
        info["time_limit_rows"] = time_limits
        info["max_episode_steps"] = int(max_episode_steps)
    return data, info
