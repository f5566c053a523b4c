"""Write small Minari datasets from in-memory episodes (no jax, works offline).

Reference scores: ``minari.create_dataset_from_buffers`` writes ``ref_min_score`` and
``ref_max_score`` into the dataset's ``metadata.json`` only when an evaluation env is
known and ``ref_max_score`` (or an expert policy) is given; a ``ref_min_score`` passed
alone is dropped, and a missing ``ref_min_score`` is estimated with 100 random-policy
episodes. :func:`build_minari_dataset` therefore takes both or neither and always
passes ``eval_env``, so nothing is rolled out and the scores read back unchanged.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from torchrl_bdpo.data import minari_datasets_dir

__all__ = ["build_minari_dataset"]

logger = logging.getLogger(__name__)


def _check_episode(index: int, ep: Mapping[str, Any]) -> int:
    keys = ("observations", "actions", "rewards", "terminations", "truncations")
    missing = [k for k in keys if k not in ep]
    if missing:
        raise ValueError(f"episode {index} lacks {missing}; has {sorted(ep)}")
    length = len(ep["actions"])
    if length == 0:
        raise ValueError(
            f"episode {index} has no steps (0 actions); every episode needs at least one"
        )
    obs = ep["observations"]
    obs_lengths = {len(v) for v in obs.values()} if isinstance(obs, Mapping) else {len(obs)}
    if obs_lengths != {length + 1}:
        raise ValueError(
            f"episode {index}: observations have length(s) {sorted(obs_lengths)}, expected "
            f"{length + 1} (one more than its {length} actions)"
        )
    for key in ("rewards", "terminations", "truncations"):
        if len(ep[key]) != length:
            raise ValueError(f"episode {index}: {key} has length {len(ep[key])}, expected {length}")
    return length


def build_minari_dataset(
    dataset_id: str,
    env_id: str,
    episodes: Sequence[Mapping[str, Any]],
    *,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str = "recipes/env_rollouts.py rollout_episodes",
    author: str | None = None,
    description: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> str:
    """Create the local Minari dataset ``dataset_id`` from episodes.

    Written under ``$MINARI_DATASETS_PATH`` (or ``~/.minari/datasets``) in Minari's
    default (HDF5) format, with ``env_id`` as both data-collection and evaluation env.

    Args:
        dataset_id: new Minari id, e.g. ``"bdpo-test/hopper/random-v0"``.
        env_id: Gymnasium id whose spaces describe the data (made once to read them).
        episodes: dicts with ``observations`` ``[L + 1, obs]``, ``actions`` ``[L, act]``,
            ``rewards``/``terminations``/``truncations`` ``[L]``, optional ``seed``
            (e.g. from ``env_rollouts.rollout_episodes``).
        ref_min_score, ref_max_score: reference returns, both or neither; stored as
            ``ref_min_score``/``ref_max_score`` in the dataset metadata.
        algorithm_name, author, description: stored in the metadata.
        env_kwargs: keyword arguments of ``gym.make(env_id, ...)`` (e.g. a maze layout);
            they are part of the env specs stored with the data.
        max_episode_steps: the step limit the episodes were collected under, stored in the
            env specs (default: the env's registered limit).

    Returns:
        ``dataset_id``.

    Raises:
        FileExistsError: the dataset already exists.
        ValueError: no episodes, an episode without steps, inconsistent episode arrays, or
            only one reference score (all checked before anything is written; a failed write
            removes what it wrote).

    Examples:
        >>> from env_rollouts import rollout_episodes, uniform_random_policy
        >>> import gymnasium as gym
        >>> policy = uniform_random_policy(gym.make("Hopper-v5").action_space, seed=0)
        >>> eps = rollout_episodes("Hopper-v5", policy, num_episodes=2, seed=0)  # doctest: +SKIP
        >>> build_minari_dataset("me/hopper/random-v0", "Hopper-v5", eps)  # doctest: +SKIP
        'me/hopper/random-v0'
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    if (ref_min_score is None) != (ref_max_score is None):
        raise ValueError(
            "pass both ref_min_score and ref_max_score or neither (Minari drops a lone "
            "ref_min_score and estimates a missing one with 100 random episodes); got "
            f"ref_min_score={ref_min_score}, ref_max_score={ref_max_score}"
        )
    if len(episodes) == 0:
        raise ValueError(f"cannot build Minari dataset {dataset_id!r} from zero episodes")
    target = minari_datasets_dir() / dataset_id
    if target.exists():
        raise FileExistsError(
            f"Minari dataset {dataset_id!r} already exists at {target}; choose another id or "
            "delete that folder"
        )

    for i, ep in enumerate(episodes):  # every episode is checked before anything is written
        _check_episode(i, ep)
    buffers = []
    for i, ep in enumerate(episodes):
        obs = ep["observations"]
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=None if ep.get("seed") is None else int(ep["seed"]),
                observations={k: np.asarray(v) for k, v in obs.items()}
                if isinstance(obs, Mapping)
                else np.asarray(obs),
                actions=np.asarray(ep["actions"]),
                rewards=np.asarray(ep["rewards"], dtype=np.float64),
                terminations=np.asarray(ep["terminations"], dtype=bool),
                truncations=np.asarray(ep["truncations"], dtype=bool),
            )
        )
    scores = {}
    if ref_max_score is not None:
        scores = {"ref_min_score": float(ref_min_score), "ref_max_score": float(ref_max_score)}
    with warnings.catch_warnings():
        # Minari warns for every optional metadata field left empty (permalink, email, ...).
        warnings.filterwarnings("ignore", message=r".*is set to None", category=UserWarning)
        import gymnasium as gym
        from mujoco_log import route_mujoco_warnings

        route_mujoco_warnings()
        limit = {} if max_episode_steps is None else {"max_episode_steps": int(max_episode_steps)}
        spec = gym.make(env_id, **limit, **dict(env_kwargs or {})).spec  # id, limit, kwargs
        try:
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=spec,
                eval_env=spec,
                algorithm_name=algorithm_name,
                author=author,
                description=description,
                **scores,
            )
        except BaseException:
            # a half-written dataset would block rebuilding this id
            shutil.rmtree(target, ignore_errors=True)
            raise
    logger.info(
        "wrote Minari dataset %s (%d episodes, %d steps) to %s",
        dataset_id,
        len(buffers),
        sum(len(b.rewards) for b in buffers),
        target,
    )
    return dataset_id
