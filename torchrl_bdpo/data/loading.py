"""`load_offline_dataset`: one entry point for Minari ids and D4RL names."""

from __future__ import annotations

from typing import Any

from .d4rl_loader import D4RL_NAME_PATTERN, load_d4rl_dataset, load_d4rl_hdf5
from .dataset import OfflineDataset
from .minari_loader import load_minari_dataset

__all__ = ["load_offline_dataset"]


def load_offline_dataset(name: str, *, path: str | None = None, **kwargs: Any) -> OfflineDataset:
    """Load ``name`` with the matching loader.

    - with ``path``: the HDF5 file in D4RL's layout at ``path``, named ``name``
      (:func:`~torchrl_bdpo.data.d4rl_loader.load_d4rl_hdf5`; ``kwargs``: only
      ``max_episode_steps``);
    - names containing ``/`` are Minari ids (``"mujoco/hopper/medium-v0"``):
      :func:`~torchrl_bdpo.data.minari_loader.load_minari_dataset`;
    - names ``<env>-<kind>-v<digit>`` are D4RL datasets (``"hopper-medium-v2"``):
      :func:`~torchrl_bdpo.data.d4rl_loader.load_d4rl_dataset`.

    ``kwargs`` go to the chosen loader (``download`` for Minari; ``root``/``download``/
    ``max_episode_steps`` for D4RL).

    Raises:
        ValueError: ``name`` has neither form.

    Examples:
        >>> load_offline_dataset("hopper")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cannot tell the source of dataset 'hopper': use a Minari id containing '/' ...
    """
    if path is not None:
        return load_d4rl_hdf5(path, name=name, **kwargs)
    if "/" in name:
        return load_minari_dataset(name, **kwargs)
    if D4RL_NAME_PATTERN.match(name):
        return load_d4rl_dataset(name, **kwargs)
    raise ValueError(
        f"cannot tell the source of dataset {name!r}: use a Minari id containing '/' "
        "(e.g. 'mujoco/hopper/medium-v0') or a D4RL name '<env>-<kind>-v<digit>' "
        "(e.g. 'hopper-medium-v2', 'antmaze-large-diverse-v0')"
    )
