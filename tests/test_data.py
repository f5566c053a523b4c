"""Tests of the offline-data layer (torchrl_bdpo.data) and of torchrl_bdpo.scores."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from env_rollouts import rollout_episodes
from minari_building import build_minari_dataset
from tensordict import TensorDict

from torchrl_bdpo.data import (
    BlockSampler,
    DatasetUnavailableError,
    DatasetValidationError,
    OfflineDataset,
    clip_dataset_actions,
    episode_returns,
    episodes_to_ted,
    load_d4rl_dataset,
    load_minari_dataset,
    load_offline_dataset,
    make_offline_replay_buffer,
    scale_rewards,
    scale_rewards_by_return_range,
    validate_transitions,
)
from torchrl_bdpo.scores import D4RL_REF_SCORES, d4rl_reference, normalized_score

HOPPER_OBS, HOPPER_ACT = 11, 3


# ----------------------------------------------------------------------------- helpers


def _read_minari_hdf5(dataset_dir: Path) -> list[dict[str, np.ndarray]]:
    """Episodes straight from Minari's HDF5 file (independent of minari and of our loader)."""
    with h5py.File(dataset_dir / "data" / "main_data.hdf5", "r") as f:
        names = sorted(f.keys(), key=lambda n: int(n.split("_")[1]))
        return [
            {
                k: f[name][k][()]
                for k in ("observations", "actions", "rewards", "terminations", "truncations")
            }
            for name in names
        ]


def _synthetic_episode(length: int, rng: np.random.Generator, end: str) -> dict[str, np.ndarray]:
    """Hopper-shaped episode with random values, ending with a termination or a truncation."""
    terms = np.zeros(length, bool)
    truncs = np.zeros(length, bool)
    (terms if end == "terminated" else truncs)[-1] = True
    return {
        "observations": rng.normal(size=(length + 1, HOPPER_OBS)),
        "actions": rng.uniform(-1, 1, size=(length, HOPPER_ACT)).astype(np.float32),
        "rewards": rng.normal(size=length),
        "terminations": terms,
        "truncations": truncs,
    }


def _transitions(num: int = 6, obs_dim: int = 4, act_dim: int = 2) -> TensorDict:
    """Valid TED transitions of two episodes."""
    g = torch.Generator().manual_seed(0)
    terminated = torch.zeros(num, 1, dtype=torch.bool)
    truncated = torch.zeros(num, 1, dtype=torch.bool)
    terminated[num // 2 - 1] = True
    truncated[-1] = True
    return TensorDict(
        {
            "observation": torch.randn(num, obs_dim, generator=g),
            "action": torch.rand(num, act_dim, generator=g) * 2 - 1,
            "episode": torch.tensor([0] * (num // 2) + [1] * (num - num // 2)),
            "next": {
                "observation": torch.randn(num, obs_dim, generator=g),
                "reward": torch.randn(num, 1, generator=g),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        batch_size=[num],
    )


# ----------------------------------------------------------------------------- Minari


def test_minari_fixture_data_matches_stored_episodes(minari_hopper_dataset):
    ds = load_minari_dataset(minari_hopper_dataset)
    raw = _read_minari_hdf5(Path(os.environ["MINARI_DATASETS_PATH"]) / minari_hopper_dataset)
    assert len(raw) == 5 and all(len(ep["rewards"]) <= 100 for ep in raw)

    data = ds.data
    total = sum(len(ep["rewards"]) for ep in raw)
    assert data.batch_size == torch.Size([total])
    # values, not just shapes (torchrl's MinariExperienceReplay yields all zeros)
    assert data["observation"].abs().sum() > 0 and data["action"].abs().sum() > 0
    exp_obs = np.concatenate([ep["observations"][:-1] for ep in raw])
    exp_next = np.concatenate([ep["observations"][1:] for ep in raw])
    np.testing.assert_allclose(data["observation"].numpy(), exp_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data["next", "observation"].numpy(), exp_next, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        data["action"].numpy(), np.concatenate([ep["actions"] for ep in raw])
    )
    np.testing.assert_allclose(
        data["next", "reward"].squeeze(-1).numpy(),
        np.concatenate([ep["rewards"] for ep in raw]),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(
        data["next", "terminated"].squeeze(-1).numpy(),
        np.concatenate([ep["terminations"] for ep in raw]),
    )
    np.testing.assert_array_equal(
        data["episode"].numpy(), np.repeat(np.arange(5), [len(ep["rewards"]) for ep in raw])
    )
    assert data["observation"].dtype == torch.float32 and data["action"].dtype == torch.float32
    assert data["next", "done"].dtype == torch.bool and data["episode"].dtype == torch.int64

    assert ds.env_id == "Hopper-v5"
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    assert (ds.obs_dim, ds.action_dim, ds.num_transitions, ds.num_episodes) == (11, 3, total, 5)


def test_minari_next_observation_alignment(minari_hopper_dataset):
    data = load_minari_dataset(minari_hopper_dataset).data
    same_episode = data["episode"][1:] == data["episode"][:-1]
    # within an episode, next/observation[t] is observation[t + 1]
    torch.testing.assert_close(
        data["next", "observation"][:-1][same_episode], data["observation"][1:][same_episode]
    )
    # each episode ends with exactly one done transition, its last one
    last = torch.ones_like(data["episode"], dtype=torch.bool)
    last[:-1] = ~same_episode
    torch.testing.assert_close(data["next", "done"].squeeze(-1), last)


def test_minari_terminal_vs_truncation_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(1)
    episodes = [
        _synthetic_episode(4, rng, "terminated"),
        _synthetic_episode(3, rng, "truncated"),
        _synthetic_episode(5, rng, "terminated"),
    ]
    dataset_id = build_minari_dataset(
        "bdpo-test/hopper/synthetic-v0", "Hopper-v5", episodes, ref_min_score=1.0, ref_max_score=2.0
    )
    ds = load_offline_dataset(dataset_id)
    data = ds.data
    assert data.batch_size == torch.Size([12])
    np.testing.assert_array_equal(
        data["observation"].numpy(),
        np.concatenate([ep["observations"][:-1] for ep in episodes]).astype(np.float32),
    )
    np.testing.assert_array_equal(
        data["next", "observation"].numpy(),
        np.concatenate([ep["observations"][1:] for ep in episodes]).astype(np.float32),
    )
    np.testing.assert_array_equal(
        data["next", "reward"].squeeze(-1).numpy(),
        np.concatenate([ep["rewards"] for ep in episodes]).astype(np.float32),
    )
    flags = lambda key: data["next", key].squeeze(-1).nonzero().flatten().tolist()  # noqa: E731
    assert flags("terminated") == [3, 11]
    assert flags("truncated") == [6]
    assert flags("done") == [3, 6, 11]
    assert data["episode"].tolist() == [0] * 4 + [1] * 3 + [2] * 5
    assert (ds.ref_min_score, ds.ref_max_score) == (1.0, 2.0)


def test_build_minari_dataset_rejects_bad_input(minari_hopper_dataset):
    rng = np.random.default_rng(0)
    ep = _synthetic_episode(3, rng, "terminated")
    with pytest.raises(ValueError, match="both ref_min_score and ref_max_score"):
        build_minari_dataset("bdpo-test/hopper/lone-v0", "Hopper-v5", [ep], ref_max_score=1.0)
    with pytest.raises(FileExistsError, match="already exists"):
        build_minari_dataset(minari_hopper_dataset, "Hopper-v5", [ep])
    bad = dict(ep, rewards=np.zeros(2))
    with pytest.raises(ValueError, match="episode 0: rewards has length 2, expected 3"):
        build_minari_dataset("bdpo-test/hopper/bad-v0", "Hopper-v5", [bad])


def test_episodes_to_ted_flattens_dict_observations():
    obs = np.arange(12.0).reshape(3, 4)
    goal = np.array([[10.0, 11.0]] * 3)
    ep = {
        "observations": {"observation": obs, "desired_goal": goal, "achieved_goal": obs[:, :2]},
        "actions": np.zeros((2, 1)),
        "rewards": np.ones(2),
        "terminations": np.array([False, True]),
        "truncations": np.array([False, False]),
    }
    td = episodes_to_ted([ep])
    # concat(achieved_goal, observation, desired_goal), built here column by column
    expected = np.stack(
        [obs[:, 0], obs[:, 1], obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3], goal[:, 0], goal[:, 1]],
        axis=1,
    )
    np.testing.assert_array_equal(td["observation"].numpy(), expected[:-1])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), expected[1:])
    # without goals only the observation; with the desired goal alone, observation then goal
    no_goal = dict(ep, observations={"observation": obs})
    np.testing.assert_array_equal(episodes_to_ted([no_goal])["observation"].numpy(), obs[:-1])
    desired = dict(ep, observations={"desired_goal": goal, "observation": obs})
    np.testing.assert_array_equal(
        episodes_to_ted([desired])["observation"].numpy(), np.hstack([obs, goal])[:-1]
    )
    with pytest.raises(DatasetValidationError, match="3 observations for 3 actions"):
        episodes_to_ted([dict(ep, actions=np.zeros((3, 1)))])


def test_episode_without_an_end_flag_ends_as_a_truncation():
    ep = {
        "observations": np.arange(4.0).reshape(4, 1),
        "actions": np.zeros((3, 1)),
        "rewards": np.ones(3),
        "terminations": np.zeros(3, bool),
        "truncations": np.zeros(3, bool),
    }
    ended = dict(ep, terminations=np.array([False, False, True]))
    td = episodes_to_ted([ep, ended])
    assert td["next", "truncated"].squeeze(-1).tolist() == [False, False, True] + [False] * 3
    assert td["next", "terminated"].squeeze(-1).tolist() == [False] * 5 + [True]
    assert td["next", "done"].squeeze(-1).tolist() == [False, False, True, False, False, True]
    assert not ep["truncations"].any()  # the caller's arrays are left as they were


def test_rollout_episodes_marks_truncation_at_max_steps():
    episodes = rollout_episodes(
        "Hopper-v5", lambda obs: np.zeros(3), num_episodes=2, seed=3, max_steps=5
    )
    for ep in episodes:
        assert ep["observations"].shape == (6, HOPPER_OBS)
        assert ep["actions"].shape == (5, HOPPER_ACT)
        assert ep["truncations"].tolist() == [False] * 4 + [True]
        assert not ep["terminations"].any()


def test_minari_unavailable_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetUnavailableError) as info:
        load_minari_dataset("mujoco/hopper/medium-v0")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "mujoco/hopper/medium-v0" in msg and str(tmp_path) in msg
    assert "minari download mujoco/hopper/medium-v0" in msg and "MINARI_DATASETS_PATH" in msg


def test_minari_failed_download_is_unavailable(tmp_path, monkeypatch):
    import minari.storage.hosting as hosting

    def no_network(*args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setattr(hosting, "download_dataset", no_network)
    with pytest.raises(DatasetUnavailableError, match="download failed.*network unreachable"):
        load_minari_dataset("mujoco/hopper/medium-v0", download=True)


# ----------------------------------------------------------------------------- D4RL

_N = 10  # rows of the fake D4RL file; row 3 terminal, row 6 timeout


def _write_fake_d4rl(
    directory: str, with_next_observations: bool, gap: bool = False, with_timeouts: bool = True
) -> str:
    """A tiny hdf5 file in D4RL's layout (as the direct download would fetch).

    With ``gap``, row 1's next observation is not row 2's observation: an episode end
    without terminal or timeout flag. Without ``with_timeouts`` the file has no ``timeouts``
    key (D4RL's -v0 MuJoCo files).
    """
    path = os.path.join(directory, "fake_d4rl.hdf5")
    obs = np.arange(_N * HOPPER_OBS, dtype=np.float32).reshape(_N, HOPPER_OBS) + 1
    next_obs = np.concatenate([obs[1:], obs[-1:] + 7])
    next_obs[6] += 1000  # the timeout's true next state, not the next episode's first one
    if gap:
        next_obs[1] += 500
    terminals = np.zeros(_N, bool)
    terminals[3] = True
    timeouts = np.zeros(_N, bool)
    timeouts[6] = True
    with h5py.File(path, "w") as f:
        f["observations"] = obs
        if with_next_observations:
            f["next_observations"] = next_obs
        f["actions"] = np.linspace(-1, 1, _N * HOPPER_ACT, dtype=np.float32).reshape(_N, HOPPER_ACT)
        f["rewards"] = np.arange(_N, dtype=np.float32)
        f["terminals"] = terminals
        if with_timeouts:
            f["timeouts"] = timeouts
        f["infos/qpos"] = np.zeros((_N, 6))
    return path


@pytest.fixture
def fake_d4rl_download(monkeypatch):
    """Make torchrl's D4RL download write the fake file; returns a call counter."""
    import torchrl.data.datasets.d4rl as torchrl_d4rl

    state = {"calls": 0, "with_next": True, "gap": False, "timeouts": True}

    def fake(url, directory):
        state["calls"] += 1
        return _write_fake_d4rl(directory, state["with_next"], state["gap"], state["timeouts"])

    monkeypatch.setattr(torchrl_d4rl, "_download_dataset_from_url", fake)
    return state


def test_d4rl_conversion_with_next_observations(fake_d4rl_download, tmp_path):
    ds = load_d4rl_dataset("hopper-medium-v2", root=tmp_path)
    data = ds.data
    # torchrl drops the file's last row; the timeout keeps its true next observation
    assert data.batch_size == torch.Size([_N - 1])
    obs = np.arange(_N * HOPPER_OBS, dtype=np.float32).reshape(_N, HOPPER_OBS) + 1
    np.testing.assert_array_equal(data["observation"].numpy(), obs[:-1])
    expected_next = obs[1:].copy()
    expected_next[6] += 1000
    expected_next[3] = 0  # torchrl zeroes next observations of terminal transitions
    np.testing.assert_array_equal(data["next", "observation"].numpy(), expected_next)
    assert data["next", "reward"].squeeze(-1).tolist() == list(range(_N - 1))
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    # the timeout is a truncation, not a terminal; the data's last row is marked truncated too
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [6, 8]
    assert data["episode"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert episode_returns(data).tolist() == [6.0, 15.0, 15.0]
    assert ds.env_id == "Hopper-v5"
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    assert ds.metadata["dropped_timeouts"] == 0

    # the second load reads the cache and never downloads
    calls = fake_d4rl_download["calls"]
    again = load_d4rl_dataset("hopper-medium-v2", root=tmp_path, download=False)
    assert fake_d4rl_download["calls"] == calls == 1
    torch.testing.assert_close(again.data.to_dict(), data.to_dict())


def test_d4rl_timeouts_without_next_observation_are_dropped(fake_d4rl_download, tmp_path):
    fake_d4rl_download["with_next"] = False
    data = load_d4rl_dataset("hopper-medium-v2", root=tmp_path).data
    obs = np.arange(_N * HOPPER_OBS, dtype=np.float32).reshape(_N, HOPPER_OBS) + 1
    kept = [0, 1, 2, 3, 4, 5, 7, 8]  # row 6 (timeout whose "next" is the next episode) dropped
    np.testing.assert_array_equal(data["observation"].numpy(), obs[kept])
    assert data["next", "reward"].squeeze(-1).tolist() == [float(i) for i in kept]
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    # the step before the dropped timeout ends its episode as a truncation
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [5, 7]
    assert data["episode"].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_d4rl_copy_without_timeouts_or_next_observations_needs_the_time_limit(
    fake_d4rl_download, tmp_path
):
    """torchrl's copy of a -v0-style file: time-limit ends are invisible in the data."""
    fake_d4rl_download.update(with_next=False, timeouts=False)
    with pytest.raises(DatasetValidationError, match="no timeouts.*pass the limit") as info:
        load_d4rl_dataset("hopper-medium-v2", root=tmp_path)
    assert "max_episode_steps" in str(info.value)
    ds = load_d4rl_dataset("hopper-medium-v2", root=tmp_path, max_episode_steps=4)
    data = ds.data
    # torchrl's copy holds rows 0-8; episodes: rows 0-3 (terminal at its 4th step), rows
    # 4-7 (cut at its 4th step, row 7: no next state of its own, dropped), row 8 (data end)
    kept = [0, 1, 2, 3, 4, 5, 6, 8]
    obs = np.arange(_N * HOPPER_OBS, dtype=np.float32).reshape(_N, HOPPER_OBS) + 1
    np.testing.assert_array_equal(data["observation"].numpy(), obs[kept])
    assert data["episode"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [6, 7]
    assert ds.metadata["time_limit_rows"] == 1 and ds.metadata["max_episode_steps"] == 4
    # torchrl's cached copy is left as torchrl wrote it: the limit is needed again
    with pytest.raises(DatasetValidationError, match="no timeouts"):
        load_d4rl_dataset("hopper-medium-v2", root=tmp_path, download=False)


def test_d4rl_unflagged_episode_end_becomes_truncation(fake_d4rl_download, tmp_path):
    fake_d4rl_download["gap"] = True
    ds = load_d4rl_dataset("hopper-medium-v2", root=tmp_path)
    data = ds.data
    assert data.batch_size == torch.Size([_N - 1])
    assert data["episode"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [1, 6, 8]
    assert data["next", "observation"][1, 0] == 23.0 + 500  # the stored next state is kept
    assert ds.metadata["unflagged_episode_ends"] == 2  # row 1 and the data's last row
    torch.testing.assert_close(
        episode_returns(data), torch.tensor([1.0, 5.0, 15.0, 15.0], dtype=torch.float64)
    )


def test_d4rl_reads_torchrl_default_cache(fake_d4rl_download, tmp_path):
    """A cache made with torchrl's defaults (timeouts' next observations zeroed) still loads."""
    from torchrl.data.datasets import D4RLExperienceReplay

    D4RLExperienceReplay(
        "hopper-medium-replay-v2", batch_size=2, direct_download=True, root=str(tmp_path)
    )
    ds = load_d4rl_dataset("hopper-medium-replay-v2", root=tmp_path, download=False)
    assert fake_d4rl_download["calls"] == 1
    assert ds.num_transitions == _N - 2 and ds.metadata["dropped_timeouts"] == 1
    assert ds.env_id == "Hopper-v5"
    not_terminal = ~ds.data["next", "terminated"].squeeze(-1)
    assert not (ds.data["next", "observation"][not_terminal] == 0).all(-1).any()


def test_d4rl_unavailable_message(tmp_path, monkeypatch):
    import torchrl.data.datasets.d4rl as torchrl_d4rl

    def no_network(url, directory):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchrl_d4rl, "_download_dataset_from_url", no_network)
    with pytest.raises(DatasetUnavailableError) as info:
        load_d4rl_dataset("antmaze-large-diverse-v0", root=tmp_path)
    msg = str(info.value)
    assert "antmaze-large-diverse-v0" in msg and str(tmp_path) in msg
    assert "download failed" in msg and "name resolution" in msg
    assert "network access" in msg and "copy" in msg
    assert not (tmp_path / "antmaze-large-diverse-v0").exists()

    with pytest.raises(DatasetUnavailableError, match="no cached copy and download=False"):
        load_d4rl_dataset("hopper-medium-v2", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="not a D4RL dataset known to torchrl"):
        load_d4rl_dataset("hopper-superb-v2", root=tmp_path)


def test_d4rl_eval_env_ids():
    from torchrl_bdpo.data import d4rl_eval_env_id

    assert d4rl_eval_env_id("halfcheetah-medium-replay-v2") == "HalfCheetah-v5"
    assert d4rl_eval_env_id("hopper-medium-expert-v2") == "Hopper-v5"
    assert d4rl_eval_env_id("antmaze-umaze-diverse-v0") == "AntMaze_UMaze-v5"
    assert d4rl_eval_env_id("antmaze-medium-play-v0") == "AntMaze_Medium-v5"
    assert d4rl_eval_env_id("pen-human-v1") is None


# ----------------------------------------------------------------------------- dispatcher


def test_load_offline_dataset_dispatch(minari_hopper_dataset, tmp_path):
    assert load_offline_dataset(minari_hopper_dataset).name == minari_hopper_dataset
    with pytest.raises(DatasetUnavailableError, match="D4RL dataset 'hopper-medium-v2'"):
        load_offline_dataset("hopper-medium-v2", root=tmp_path, download=False)
    for bad in ("hopper", "Hopper-v5", "hopper-medium"):
        with pytest.raises(ValueError, match="Minari id containing '/'.*<env>-<kind>-v<digit>"):
            load_offline_dataset(bad)


# ----------------------------------------------------------------------------- transforms


def test_scale_rewards_by_return_range_matches_hand_computation():
    td = _transitions(num=6)
    rewards = td["next", "reward"].squeeze(-1).double().tolist()
    returns = [sum(rewards[:3]), sum(rewards[3:])]
    factor = 1000.0 / (max(returns) - min(returns))
    out = scale_rewards_by_return_range(td, scale=1000.0)
    expected = torch.tensor(rewards, dtype=torch.float64) * factor
    torch.testing.assert_close(
        out["next", "reward"].squeeze(-1).double(), expected, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(episode_returns(td), torch.tensor(returns, dtype=torch.float64))
    # input untouched, other entries shared
    assert td["next", "reward"].squeeze(-1).double().tolist() == rewards
    assert out["observation"] is td["observation"]

    scaled = scale_rewards(td, 100.0)
    torch.testing.assert_close(scaled["next", "reward"], td["next", "reward"] * 100.0)

    flat = td.clone()
    flat["next", "reward"] = torch.ones(6, 1)
    with pytest.raises(ValueError, match="same return"):
        scale_rewards_by_return_range(flat)
    flat["next", "reward"][4] = float("nan")
    with pytest.raises(ValueError, match="1 of 2 episode returns are not finite"):
        scale_rewards_by_return_range(flat)


def test_episode_returns_with_non_contiguous_ids():
    td = TensorDict(
        {
            "episode": torch.tensor([7, 7, 2, 9, 2]),
            "next": {"reward": torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])},
        },
        batch_size=[5],
    )
    assert episode_returns(td).tolist() == [8.0, 3.0, 4.0]  # ids 2, 7, 9


def test_clip_dataset_actions():
    td = _transitions()
    td["action"][0] = torch.tensor([1.0, -1.0])
    td["action"][1] = torch.tensor([0.3, -1.7])
    out = clip_dataset_actions(td)
    limit = 1 - 1e-5
    assert out["action"].abs().max() <= limit
    torch.testing.assert_close(out["action"][0], torch.tensor([limit, -limit]))
    torch.testing.assert_close(out["action"][1], torch.tensor([0.3, -limit]))
    torch.testing.assert_close(out["action"][2:], td["action"][2:])
    assert td["action"][1, 1] == -1.7  # input untouched


# ----------------------------------------------------------------------------- validation


def _drop_key(td):
    return td.exclude(("next", "terminated"), "action")


def _set(key, value):
    def mutate(td):
        td = td.clone()
        td.set(key, value(td[key]))
        return td

    return mutate


def _nan_obs(td):
    td = td.clone()
    td["observation"][1, 2] = float("nan")
    td["observation"][4, 0] = float("inf")
    return td


def _far_action(td):
    td = td.clone()
    td["action"][2, 1] = 1.25
    return td


@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (
            _drop_key,
            {},
            r"lack keys \['action', 'next/terminated'\]; present keys: \[.*'observation'",
        ),
        (lambda td: td[:0], {}, "empty"),
        (lambda td: td.reshape(2, 3), {}, "1-D batch size"),
        (_set("action", lambda a: a.unsqueeze(-1)), {}, r"must be \[T, dim\] \(2-D\)"),
        (
            _set(("next", "observation"), lambda o: o[:, :3]),
            {},
            r"next/observation has shape \[6, 3\]",
        ),
        (
            _set(("next", "reward"), lambda r: r.squeeze(-1)),
            {},
            r"next/reward has shape \[6\], expected \[6, 1\]",
        ),
        (
            _set("observation", lambda o: o.long()),
            {},
            "observation must be floating point, got torch.int64",
        ),
        (_set(("next", "terminated"), lambda t: t.float()), {}, "next/terminated must be bool"),
        (
            _set(("next", "done"), lambda d: torch.zeros_like(d)),
            {},
            r"next/done differs from terminated \| truncated in 2 transitions, the first at "
            r"episode 0, step 2 \(transition 2\)",
        ),
        (_set("episode", lambda e: e.float()), {}, "episode must be an integer tensor"),
        (_nan_obs, {}, r"observation has 2 non-finite entries \(NaN or inf\) in 2 transitions"),
        (
            _set(("next", "reward"), lambda r: r.fill_(float("nan"))),
            {},
            "next/reward has 6 non-finite",
        ),
        (
            _far_action,
            {},
            r"actions leave the box \[-1, 1\] by up to 0.25 .*in 1 transitions, the first at "
            r"episode 0, step 2 \(transition 2\)",
        ),
        (lambda td: td, {"action_high": 0.5}, "actions leave the box"),
        (
            lambda td: td,
            {"obs_dim": 11},
            "observation size 4 does not match the environment's obs_dim=11",
        ),
    ],
)
def test_validation_errors(mutate, kwargs, message):
    with pytest.raises(DatasetValidationError, match=message):
        validate_transitions(mutate(_transitions()), **kwargs)


def test_validation_accepts_valid_data_and_tolerance():
    td = _transitions()
    validate_transitions(td, obs_dim=4)
    td["action"][0, 0] = 1.0005  # within the default tolerance of 1e-3
    validate_transitions(td)
    validate_transitions(td, action_low=[-2.0, -np.inf], action_high=[2.0, np.inf], tolerance=0.0)


# ----------------------------------------------------------------------------- replay buffer


def test_offline_replay_buffer_samples_dataset_rows():
    td = _transitions(num=6)
    rb = make_offline_replay_buffer(td, batch_size=4)
    batch = rb.sample()
    assert batch.batch_size == torch.Size([4])
    assert batch["observation"].shape == (4, 4) and batch["action"].shape == (4, 2)
    assert (
        batch["next", "reward"].shape == (4, 1) and batch["next", "terminated"].dtype == torch.bool
    )
    torch.testing.assert_close(batch["observation"], td["observation"][batch["index"]])
    torch.testing.assert_close(
        batch["next", "observation"], td["next", "observation"][batch["index"]]
    )
    assert "index" not in td.keys()
    assert len(rb) == 6
    with pytest.raises(
        ValueError, match="batch_size=7 must be between 1 and the number of transitions"
    ):
        make_offline_replay_buffer(td, batch_size=7)


def test_offline_replay_buffer_with_room_keeps_the_dataset_when_extended():
    td = _transitions(num=6)
    online = _transitions(num=4)
    roomy = make_offline_replay_buffer(td, batch_size=2, max_size=10)
    roomy.extend(online.copy())
    assert len(roomy) == 10
    stored = roomy[:]
    torch.testing.assert_close(stored["observation"][:6], td["observation"])
    torch.testing.assert_close(stored["observation"][6:], online["observation"])
    full = make_offline_replay_buffer(td, batch_size=2)  # sized to the dataset: circular
    full.extend(online.copy())
    torch.testing.assert_close(full[:]["observation"][:4], online["observation"])
    with pytest.raises(ValueError, match="max_size=5 is smaller than the dataset"):
        make_offline_replay_buffer(td, batch_size=2, max_size=5)


@pytest.mark.filterwarnings("ignore:Got conflicting batch_sizes")
def test_block_sampler_splits_one_buffer_draw_into_batches_in_order():
    td = _transitions(num=50)
    rb = make_offline_replay_buffer(td, batch_size=4)
    torch.manual_seed(3)
    rows = rb.sample(batch_size=12)["index"]  # what one call for a block of 3 batches draws
    torch.manual_seed(3)
    batches = BlockSampler(rb, batch_size=4, block=3)
    got = [batches.sample() for _ in range(3)]
    for i, batch in enumerate(got):
        assert batch.batch_size == torch.Size([4])
        torch.testing.assert_close(batch["index"], rows[4 * i : 4 * i + 4])
        torch.testing.assert_close(batch["observation"], td["observation"][batch["index"]])
        torch.testing.assert_close(batch["next", "reward"], td["next", "reward"][batch["index"]])
    # block=1 draws every batch on its own: the buffer's own sample() sequence
    torch.manual_seed(5)
    plain = [rb.sample()["index"] for _ in range(3)]
    torch.manual_seed(5)
    single = BlockSampler(rb, batch_size=4, block=1)
    for expected in plain:
        torch.testing.assert_close(single.sample()["index"], expected)


def test_block_sampler_rows_are_uniform_over_the_dataset():
    td = _transitions(num=10)
    batches = BlockSampler(make_offline_replay_buffer(td, batch_size=8), batch_size=8, block=16)
    torch.manual_seed(0)
    index = torch.cat([batches.sample()["index"] for _ in range(1250)])  # 10,000 rows
    counts = torch.bincount(index, minlength=10).double()
    chi2 = ((counts - 1000.0) ** 2 / 1000.0).sum().item()
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom: p = 0.001


def test_block_sampler_state_continues_with_the_same_batches():
    td = _transitions(num=40)
    rb = make_offline_replay_buffer(td, batch_size=4)
    torch.manual_seed(1)
    batches = BlockSampler(rb, batch_size=4, block=5)
    batches.sample(), batches.sample()
    state = batches.state_dict()
    assert state["index"].shape == (3, 4) and state["index"].dtype == torch.long
    rest = [batches.sample() for _ in range(3)]
    resumed = BlockSampler(rb, batch_size=4, block=5)
    resumed.load_state_dict(state)
    for a, b in zip(rest, [resumed.sample() for _ in range(3)]):
        assert (a == b).all()
    assert batches.state_dict()["index"].shape == (0, 4)  # the block is used up
    resumed.load_state_dict(batches.state_dict())
    assert resumed.sample().batch_size == torch.Size([4])  # a new block
    with pytest.raises(ValueError, match=r"must have shape \[r, 4\]"):
        resumed.load_state_dict({"index": torch.zeros(2, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="block must be >= 1"):
        BlockSampler(rb, batch_size=4, block=0)


# ----------------------------------------------------------------------------- scores


def test_normalized_score_hand_values():
    assert normalized_score(50.0, ref_min=0.0, ref_max=200.0) == pytest.approx(25.0)
    assert normalized_score(-20.272305, ref_min=-20.272305, ref_max=3234.3) == 0.0
    got = normalized_score(np.array([3234.3, 1607.0139]), ref_min=-20.272305, ref_max=3234.3)
    np.testing.assert_allclose(
        got, [100.0, (1607.0139 + 20.272305) / 3254.572305 * 100], rtol=1e-12
    )
    tensor = normalized_score(torch.tensor([0.0, 1.0]), ref_min=0.0, ref_max=1.0)
    assert isinstance(tensor, torch.Tensor) and tensor.tolist() == [0.0, 100.0]
    assert normalized_score([1.0, 2.0], ref_min=0.0, ref_max=4.0).tolist() == [25.0, 50.0]
    with pytest.raises(ValueError, match="ref_max != ref_min"):
        normalized_score(1.0, ref_min=1.0, ref_max=1.0)


def test_d4rl_reference_lookup():
    assert d4rl_reference("hopper-medium-v2") == (-20.272305, 3234.3)
    assert d4rl_reference("halfcheetah-medium-replay-v2") == (-280.178953, 12135.0)
    assert d4rl_reference("walker2d-medium-expert-v2") == (1.629008, 4592.3)
    assert d4rl_reference("ant-medium-v2") == (-325.6, 3879.7)
    assert d4rl_reference("antmaze-large-diverse-v0") == (0.0, 1.0)
    assert set(D4RL_REF_SCORES) == {"hopper", "halfcheetah", "walker2d", "ant", "antmaze"}
    with pytest.raises(KeyError, match="no D4RL reference scores for 'pen-human-v1'"):
        d4rl_reference("pen-human-v1")


def test_offline_dataset_normalized_score_needs_refs():
    ds = OfflineDataset("toy", _transitions(), None, None, None, {})
    with pytest.raises(ValueError, match="has no reference scores"):
        ds.normalized_score(1.0)
    assert ds.with_data(_transitions(num=4)).num_transitions == 4
