"""Collect episodes from a Gymnasium env with a numpy policy (for building small datasets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["rollout_episodes", "uniform_random_policy"]

Policy = Callable[[Any], np.ndarray]


def uniform_random_policy(action_space: Any, seed: int) -> Policy:
    """Policy drawing actions uniformly from a bounded ``gymnasium.spaces.Box``.

    Examples:
        >>> import gymnasium as gym
        >>> policy = uniform_random_policy(gym.spaces.Box(-1.0, 1.0, (3,)), seed=0)
        >>> policy(None).shape
        (3,)
    """
    low, high = np.asarray(action_space.low), np.asarray(action_space.high)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(f"uniform_random_policy needs a bounded Box, got {action_space}")
    rng = np.random.default_rng(seed)
    dtype = action_space.dtype

    def policy(_obs: Any) -> np.ndarray:
        return rng.uniform(low, high).astype(dtype)

    return policy


def _stack(items: list[Any]) -> Any:
    """Stack per-step observations; dict observations are stacked per key."""
    if isinstance(items[0], dict):
        return {k: np.stack([it[k] for it in items]) for k in items[0]}
    return np.stack(items)


def rollout_episodes(
    env_id: str,
    policy_fn: Policy,
    num_episodes: int,
    seed: int,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Run ``num_episodes`` episodes of ``gymnasium.make(env_id)`` with ``policy_fn``.

    Episode ``i`` resets with seed ``seed + i``. With ``max_steps`` the env's time limit
    is set to it (the last step of a cut episode is then a truncation).

    Args:
        env_id: Gymnasium id, e.g. ``"Hopper-v5"``.
        policy_fn: maps one observation to one action (numpy).
        num_episodes: number of episodes.
        seed: base reset seed.
        max_steps: episode length limit, or ``None`` for the env's default.

    Returns:
        Episodes as dicts: ``observations`` ``[L + 1, obs]`` (dict of arrays for dict
        observations), ``actions`` ``[L, act]``, ``rewards`` float ``[L]``,
        ``terminations``/``truncations`` bool ``[L]`` and ``seed``.
    """
    import gymnasium as gym
    from mujoco_log import route_mujoco_warnings

    route_mujoco_warnings()
    kwargs = {} if max_steps is None else {"max_episode_steps": int(max_steps)}
    env = gym.make(env_id, **kwargs)
    episodes = []
    try:
        for i in range(num_episodes):
            obs, _ = env.reset(seed=seed + i)
            observations, actions, rewards, terms, truncs = [obs], [], [], [], []
            done = False
            while not done:
                action = np.asarray(policy_fn(obs), dtype=env.action_space.dtype)
                obs, reward, terminated, truncated, _ = env.step(action)
                observations.append(obs)
                actions.append(action)
                rewards.append(float(reward))
                terms.append(bool(terminated))
                truncs.append(bool(truncated))
                done = terminated or truncated
            episodes.append(
                {
                    "observations": _stack(observations),
                    "actions": np.stack(actions),
                    "rewards": np.asarray(rewards, dtype=np.float64),
                    "terminations": np.asarray(terms, dtype=bool),
                    "truncations": np.asarray(truncs, dtype=bool),
                    "seed": seed + i,
                }
            )
    finally:
        env.close()
    return episodes
