"""Offline data: loading (Minari, D4RL files or TorchRL's D4RL cache) into TED transitions, preprocessing, sampling.

Every loader returns an :class:`OfflineDataset` whose ``data`` is a TensorDict of
transitions, batch size ``[T]``: ``observation`` float32 ``[T, obs_dim]``, ``action``
float32 ``[T, act_dim]``, ``episode`` int64 ``[T]`` and under ``"next"``:
``observation``, ``reward`` float32 ``[T, 1]``, ``terminated``/``truncated``/``done``
bool ``[T, 1]`` (``done = terminated | truncated``).
"""

from __future__ import annotations

from .batch_blocks import BlockSampler
from .d4rl_hdf5 import d4rl_datasets_dir, read_d4rl_hdf5
from .d4rl_loader import d4rl_cache_dir, d4rl_eval_env_id, load_d4rl_dataset, load_d4rl_hdf5
from .dataset import OfflineDataset
from .errors import DatasetUnavailableError, DatasetValidationError
from .loading import load_offline_dataset
from .minari_loader import load_minari_dataset, minari_datasets_dir
from .replay_buffer import make_offline_replay_buffer
from .ted import GOAL_OBSERVATION_KEYS, TED_KEYS, episodes_to_ted, flatten_observation
from .transforms import (
    clip_dataset_actions,
    episode_returns,
    return_range_scale,
    scale_rewards,
    scale_rewards_by_return_range,
)
from .validation import validate_transitions

__all__ = [
    "GOAL_OBSERVATION_KEYS",
    "TED_KEYS",
    "BlockSampler",
    "DatasetUnavailableError",
    "DatasetValidationError",
    "OfflineDataset",
    "clip_dataset_actions",
    "d4rl_cache_dir",
    "d4rl_datasets_dir",
    "d4rl_eval_env_id",
    "episode_returns",
    "episodes_to_ted",
    "flatten_observation",
    "load_d4rl_dataset",
    "load_d4rl_hdf5",
    "load_minari_dataset",
    "load_offline_dataset",
    "make_offline_replay_buffer",
    "minari_datasets_dir",
    "read_d4rl_hdf5",
    "return_range_scale",
    "scale_rewards",
    "scale_rewards_by_return_range",
    "validate_transitions",
]
