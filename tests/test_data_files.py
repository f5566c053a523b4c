"""Data files users already have: D4RL's HDF5 files, and malformed Minari/D4RL files.

Every file is written here with h5py in the layout its library uses; loading goes through the
same functions (and directory look-ups) a user's file goes through.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from minari_building import build_minari_dataset

from torchrl_bdpo.data import (
    DatasetUnavailableError,
    DatasetValidationError,
    load_d4rl_dataset,
    load_d4rl_hdf5,
    load_minari_dataset,
    load_offline_dataset,
    validate_transitions,
)
from torchrl_bdpo.data.d4rl_hdf5 import time_limit_rows

OBS, ACT = 11, 3  # Hopper's sizes: D4RL's hopper datasets are checked against them
N = 10  # rows: episode 0 = rows 0-3 (terminal), 1 = rows 4-6 (timeout), 2 = rows 7-9 (file ends)


def _d4rl_arrays(next_observations: bool) -> dict[str, np.ndarray]:
    obs = np.arange(N * OBS, dtype=np.float32).reshape(N, OBS) + 1
    arrays = {
        "observations": obs,
        "actions": np.linspace(-1, 1, N * ACT, dtype=np.float32).reshape(N, ACT),
        "rewards": np.arange(N, dtype=np.float32) + 0.5,
        "terminals": np.isin(np.arange(N), [3]),
        "timeouts": np.isin(np.arange(N), [6]),
    }
    if next_observations:  # the true next states: distinct from the next row at episode ends
        nxt = np.concatenate([obs[1:], obs[-1:] + 7])
        nxt[3] += 500
        nxt[6] += 1000
        arrays["next_observations"] = nxt
    return arrays


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
        f["infos/qpos"] = np.zeros((N, 6))  # D4RL files carry more groups; they are ignored
    return path


def _qlearning_rows(arrays: dict[str, np.ndarray]) -> list[int]:
    """Rows D4RL's ``qlearning_dataset`` keeps (terminate_on_end=False), written out here."""
    kept = []
    for i in range(len(arrays["observations"]) - 1):
        if arrays["timeouts"][i] and not arrays["terminals"][i]:
            continue  # a timeout's next row is another episode's first state
        kept.append(i)
    return kept


def _limit_rows_by_loop(terminals: np.ndarray, limit: int) -> list[int]:
    """Rows at an episode's ``limit``-th step, counted one row at a time (episodes start at
    row 0 and after each terminal or limit row)."""
    rows, step = [], 0
    for i, terminal in enumerate(terminals):
        step += 1
        if terminal:
            step = 0
        elif step == limit:
            rows.append(i)
            step = 0
    return rows


def test_time_limit_rows_match_a_row_by_row_count():
    rng = np.random.default_rng(0)
    for limit in (1, 2, 3, 7):
        terminals = rng.random(200) < 0.08
        got = time_limit_rows(torch.from_numpy(terminals), limit).nonzero().flatten().tolist()
        assert got == _limit_rows_by_loop(terminals, limit)
    with pytest.raises(ValueError, match="max_episode_steps must be >= 1"):
        time_limit_rows(torch.zeros(3, dtype=torch.bool), 0)
    assert time_limit_rows(torch.zeros(0, dtype=torch.bool), 5).shape == (0,)


def test_d4rl_file_without_timeouts_or_next_observations_is_cut_at_the_time_limit(tmp_path):
    """D4RL's -v0 layout: nothing marks a time-limit end; the limit tells where it falls."""
    arrays = _d4rl_arrays(next_observations=False)
    del arrays["timeouts"]
    # episodes: rows 0-3 (terminal), rows 4-7 (cut at the limit, 4 steps), rows 8-9 (file end)
    arrays["terminals"] = np.isin(np.arange(N), [3])
    path = _write(tmp_path / "hopper_medium-v0.hdf5", arrays)
    with pytest.raises(DatasetValidationError, match="neither 'timeouts' nor 'next_observations'"):
        load_d4rl_hdf5(path)
    ds = load_offline_dataset("hopper-medium-v0", path=str(path), max_episode_steps=4)
    data = ds.data
    # D4RL's qlearning_dataset drops the limit's row (its next row is a reset) and the last row
    limit_rows = _limit_rows_by_loop(arrays["terminals"], 4)
    assert limit_rows == [7]
    kept = [i for i in range(N - 1) if i not in limit_rows]
    np.testing.assert_array_equal(data["observation"].numpy(), arrays["observations"][kept])
    np.testing.assert_array_equal(
        data["next", "observation"].numpy(), arrays["observations"][[i + 1 for i in kept]]
    )
    assert data["episode"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    # the rows before the dropped ones end their episodes as truncations
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [6, 7]
    assert ds.metadata["time_limit_rows"] == 1 and not ds.metadata["has_timeouts"]


@pytest.fixture
def no_d4rl_download(monkeypatch):
    """Any attempt to download through torchrl fails the test."""
    import torchrl.data.datasets.d4rl as torchrl_d4rl

    def refuse(url, directory):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torchrl_d4rl, "_download_dataset_from_url", refuse)


def test_d4rl_file_in_d4rl_dataset_dir_is_read_with_its_next_observations(
    tmp_path, monkeypatch, no_d4rl_download
):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    arrays = _d4rl_arrays(next_observations=True)
    path = _write(tmp_path / "d4rl" / "hopper_medium-v2.hdf5", arrays)
    ds = load_d4rl_dataset("hopper-medium-v2", root=None)
    data = ds.data
    assert ds.metadata["source"] == "d4rl-hdf5" and ds.metadata["path"] == str(path)
    assert ds.env_id == "Hopper-v5" and (ds.ref_min_score, ds.ref_max_score) == (
        -20.272305,
        3234.3,
    )
    # every row is a transition: the file holds the next observations
    np.testing.assert_array_equal(data["observation"].numpy(), arrays["observations"])
    np.testing.assert_array_equal(data["next", "observation"].numpy(), arrays["next_observations"])
    np.testing.assert_array_equal(data["action"].numpy(), arrays["actions"])
    np.testing.assert_array_equal(data["next", "reward"].squeeze(-1).numpy(), arrays["rewards"])
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    # the timeout is a truncation; so is the file's unflagged last row
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [6, 9]
    assert data["episode"].tolist() == [0] * 4 + [1] * 3 + [2] * 3


def test_d4rl_file_in_home_default_dir_without_next_observations(
    tmp_path, monkeypatch, no_d4rl_download
):
    """``~/.d4rl/datasets`` (D4RL_DATASET_DIR unset); next states from the following rows."""
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    arrays = _d4rl_arrays(next_observations=False)
    _write(tmp_path / ".d4rl" / "datasets" / "hopper_medium_replay-v2.hdf5", arrays)
    data = load_d4rl_dataset("hopper-medium-replay-v2", download=False).data
    kept = _qlearning_rows(arrays)
    assert kept == [0, 1, 2, 3, 4, 5, 7, 8]
    obs = arrays["observations"]
    np.testing.assert_array_equal(data["observation"].numpy(), obs[kept])
    np.testing.assert_array_equal(data["next", "observation"].numpy(), obs[[i + 1 for i in kept]])
    np.testing.assert_array_equal(
        data["next", "reward"].squeeze(-1).numpy(), arrays["rewards"][kept]
    )
    assert data["next", "terminated"].squeeze(-1).nonzero().flatten().tolist() == [3]
    # rows 5 and 8 end their episodes (before the dropped timeout, before the file's end)
    assert data["next", "truncated"].squeeze(-1).nonzero().flatten().tolist() == [5, 7]
    assert data["episode"].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_d4rl_root_and_any_path(tmp_path, no_d4rl_download):
    arrays = _d4rl_arrays(next_observations=True)
    _write(tmp_path / "mine" / "hopper_expert-v2.hdf5", arrays)
    assert load_d4rl_dataset("hopper-expert-v2", root=tmp_path / "mine").num_transitions == N
    # any file name: named by the caller, or after the file (then no env and no references)
    copy = _write(tmp_path / "elsewhere" / "my_copy.h5", arrays)
    named = load_offline_dataset("hopper-expert-v2", path=str(copy))
    assert named.env_id == "Hopper-v5" and named.ref_max_score == 3234.3
    anonymous = load_d4rl_hdf5(copy)
    assert anonymous.name == "my_copy" and anonymous.env_id is None
    assert anonymous.ref_min_score is None and anonymous.ref_max_score is None
    torch.testing.assert_close(anonymous.data.to_dict(), named.data.to_dict())
    # named as D4RL names its files: the D4RL name follows from the file name
    assert load_d4rl_hdf5(tmp_path / "mine" / "hopper_expert-v2.hdf5").name == "hopper-expert-v2"
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_d4rl_hdf5(tmp_path / "missing.hdf5")


def test_missing_d4rl_data_names_every_place_and_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    with pytest.raises(DatasetUnavailableError) as info:
        load_d4rl_dataset("walker2d-medium-v2", root=None, download=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(tmp_path / "d4rl" / "walker2d_medium-v2.hdf5") in msg  # D4RL's directory
    assert "torchrl" in msg  # and torchrl's processed copy
    assert "load_d4rl_hdf5" in msg and "download" in msg  # the library's ways; the recipe names
    # its settings (data.path, data.d4rl_root, data.download): tests/test_config.py


def _flags_of_two(arrays):
    arrays["terminals"] = arrays["terminals"].astype(np.float32)
    arrays["terminals"][8] = 2.0
    return arrays


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda a: {k: v for k, v in a.items() if k != "rewards"},
            r"lacks D4RL keys \['rewards'\]",
        ),
        (
            lambda a: dict(a, rewards=np.array([b"x"] * N)),
            r"'rewards' has dtype \|S1, expected numbers",
        ),
        (lambda a: dict(a, actions=a["actions"][:-2]), r"'actions' has shape \[8, 3\]"),
        # row 8 is step 1 of episode 2
        (_flags_of_two, r"terminals is 2.0 at row 8 \(episode 2, step 1\).*must be 0 or 1"),
        (
            lambda a: dict(a, rewards=np.where(np.arange(N) == 5, 1e30, a["rewards"])),
            r"next/reward reaches 1e\+30 at episode 1, step 1",
        ),
    ],
)
def test_malformed_d4rl_file_is_one_line_naming_it(tmp_path, mutate, message):
    path = _write(tmp_path / "bad.hdf5", mutate(_d4rl_arrays(next_observations=True)))
    with pytest.raises(DatasetValidationError, match=message) as info:
        load_d4rl_hdf5(path, name="hopper-medium-v2")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_d4rl_file_is_one_line_naming_it(tmp_path):
    path = _write(tmp_path / "cut.hdf5", _d4rl_arrays(next_observations=True))
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DatasetValidationError, match="cannot be read as an HDF5 file") as info:
        load_d4rl_hdf5(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- Minari files


def _episode(length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    truncs = np.zeros(length, bool)
    truncs[-1] = True
    return {
        "observations": rng.normal(size=(length + 1, OBS)),
        "actions": rng.uniform(-1, 1, size=(length, ACT)).astype(np.float32),
        "rewards": rng.normal(size=length),
        "terminations": np.zeros(length, bool),
        "truncations": truncs,
    }


@pytest.fixture(scope="module")
def minari_source(tmp_path_factory):
    """A valid two-episode Minari dataset (5 and 6 steps) to copy and damage."""
    root = tmp_path_factory.mktemp("minari_files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        rng = np.random.default_rng(0)
        build_minari_dataset(
            "files/hopper/base-v0", "Hopper-v5", [_episode(5, rng), _episode(6, rng)]
        )
    return root / "files" / "hopper" / "base-v0"


def _rewrite(key: str, value):
    def mutate(data: Path) -> None:
        with h5py.File(data / "main_data.hdf5", "a") as f:
            del f[key]
            if value is not None:
                f[key] = value

    return mutate


def _flip_bytes(start: float, stop: float, step: int):
    """Inverts every ``step``-th byte between the fractions ``start`` and ``stop`` of the file."""

    def mutate(data: Path) -> None:
        path = data / "main_data.hdf5"
        raw = bytearray(path.read_bytes())
        for i in range(int(len(raw) * start), int(len(raw) * stop), step):
            raw[i] ^= 0xFF
        path.write_bytes(bytes(raw))

    return mutate


def _edit_metadata(edit):
    def mutate(data: Path) -> None:
        path = data / "metadata.json"
        path.write_text(edit(path.read_text()))

    return mutate


def _cut_file(data: Path) -> None:
    path = data / "main_data.hdf5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _huge_reward(data: Path) -> None:
    with h5py.File(data / "main_data.hdf5", "a") as f:
        f["episode_1/rewards"][2] = 1e30


@pytest.mark.parametrize(
    "mutate, file, message",
    [
        (_rewrite("episode_1/rewards", None), "main_data.hdf5", r"episode_1 lacks \['rewards'\]"),
        (
            _rewrite("episode_1/rewards", np.array([b"r"] * 6)),
            "main_data.hdf5",
            r"episode_1/rewards has dtype \|S1, expected numbers",
        ),
        (_cut_file, "main_data.hdf5", "cannot be read as HDF5.*truncated or corrupted"),
        (_flip_bytes(0.0, 0.001, 1), "main_data.hdf5", "cannot be read as HDF5.*corrupted"),
        (_flip_bytes(0.05, 0.95, 5), "main_data.hdf5", "cannot be read as HDF5.*corrupted"),
        (
            _edit_metadata(lambda text: text[:-20]),
            "metadata.json",
            "metadata.json is not valid JSON",
        ),
        (_edit_metadata(lambda text: "[1, 2]"), "metadata.json", "holds a JSON list"),
        (
            _edit_metadata(
                lambda text: json.dumps(
                    {k: v for k, v in json.loads(text).items() if k != "total_episodes"}
                )
            ),
            "metadata.json",
            "'total_episodes' is None",
        ),
        (
            _rewrite("episode_1/terminations", np.array([0, 0, 2, 0, 0, 0])),
            "data",
            r"terminations is 2 at episode 1, step 2 .*must be 0 or 1",
        ),
        (
            _rewrite("episode_0/truncations", np.array([0, 0, 0, 0, 0.5])),
            "data",
            r"truncations is 0.5 at episode 0, step 4",
        ),
        (_huge_reward, "data", r"next/reward reaches 1e\+30 at episode 1, step 2 \(transition 7\)"),
    ],
)
def test_malformed_minari_file_is_one_line_naming_it(
    tmp_path, monkeypatch, minari_source, mutate, file, message
):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    target = tmp_path / "files" / "hopper" / "bad-v0"
    shutil.copytree(minari_source, target)
    mutate(target / "data")
    with pytest.raises(DatasetValidationError, match=message) as info:
        load_minari_dataset("files/hopper/bad-v0")
    msg = str(info.value)
    assert "\n" not in msg
    assert str(target / "data" / file if file != "data" else target / "data") in msg


def test_intact_copy_of_the_source_loads(tmp_path, monkeypatch, minari_source):
    """The damage, not the copying, is what the test above detects."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    shutil.copytree(minari_source, tmp_path / "files" / "hopper" / "good-v0")
    assert load_minari_dataset("files/hopper/good-v0").num_transitions == 11


def test_build_minari_dataset_with_an_empty_episode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(1)
    empty = {
        "observations": rng.normal(size=(1, OBS)),
        "actions": np.zeros((0, ACT), np.float32),
        "rewards": np.zeros(0),
        "terminations": np.zeros(0, bool),
        "truncations": np.zeros(0, bool),
    }
    with pytest.raises(ValueError, match="episode 1 has no steps"):
        build_minari_dataset("files/hopper/empty-v0", "Hopper-v5", [_episode(3, rng), empty])
    assert not (tmp_path / "files").exists()
    # the id is free: building it with valid episodes works
    build_minari_dataset("files/hopper/empty-v0", "Hopper-v5", [_episode(3, rng)])
    assert load_minari_dataset("files/hopper/empty-v0").num_transitions == 3


def test_huge_values_are_refused_with_episode_and_step():
    from tensordict import TensorDict

    num = 6
    data = TensorDict(
        {
            "observation": torch.zeros(num, 2),
            "action": torch.zeros(num, 1),
            "episode": torch.tensor([0, 0, 0, 1, 1, 1]),
            "next": {
                "observation": torch.zeros(num, 2),
                "reward": torch.ones(num, 1),
                "terminated": torch.zeros(num, 1, dtype=torch.bool),
                "truncated": torch.zeros(num, 1, dtype=torch.bool),
                "done": torch.zeros(num, 1, dtype=torch.bool),
            },
        },
        [num],
    )
    validate_transitions(data)
    data["observation"][4, 1] = -3e7
    with pytest.raises(
        DatasetValidationError, match=r"observation reaches -3e\+07 at episode 1, step 1"
    ):
        validate_transitions(data)
    validate_transitions(data, max_abs=None)  # the limit can be lifted by library users
    validate_transitions(data, max_abs=1e8)
