"""Shared test fixtures. Tests run on one torch thread (the CI machine has 2 shared cores)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# the recipes' modules (2D tasks, dataset building, rollouts) are imported by their names
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

torch.set_num_threads(1)

#: Minari id of the small local Hopper dataset built by ``minari_hopper_dataset``.
HOPPER_TEST_DATASET_ID = "bdpo-test/hopper/random-v0"
#: D4RL hopper reference returns (random, expert), stored in that dataset's metadata.
HOPPER_REF_SCORES = (-20.272305, 3234.3)


@pytest.fixture(scope="session")
def minari_hopper_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Id of a local Minari dataset: 5 random-policy Hopper-v5 episodes of at most 100 steps.

    Sets ``MINARI_DATASETS_PATH`` to a session temp dir for the rest of the session (restored
    afterwards), so ``minari.load_dataset(id)`` / ``load_minari_dataset(id)`` find it. The
    dataset carries D4RL hopper reference scores and ``Hopper-v5`` as evaluation env.
    """
    import gymnasium as gym
    from env_rollouts import rollout_episodes, uniform_random_policy
    from minari_building import build_minari_dataset

    root = tmp_path_factory.mktemp("minari_datasets")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        env = gym.make("Hopper-v5")
        policy = uniform_random_policy(env.action_space, seed=0)
        env.close()
        episodes = rollout_episodes("Hopper-v5", policy, num_episodes=5, seed=0, max_steps=100)
        build_minari_dataset(
            HOPPER_TEST_DATASET_ID,
            "Hopper-v5",
            episodes,
            ref_min_score=HOPPER_REF_SCORES[0],
            ref_max_score=HOPPER_REF_SCORES[1],
            author="torchrl_bdpo tests",
            description="5 uniform-random Hopper-v5 episodes (<= 100 steps) for tests",
        )
        yield HOPPER_TEST_DATASET_ID
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
