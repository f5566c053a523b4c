"""The Hydra recipe end to end on tiny settings: 2D task, local Minari Hopper data, resume, errors."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

pytestmark = pytest.mark.slow  # end to end: excluded from the unit loop (-m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(RECIPES))

import bdpo_offline  # noqa: E402
import bdpo_utils  # noqa: E402
from bdpo_utils import ConfigError  # noqa: E402
from run_dir import RunDirError  # noqa: E402

from torchrl_bdpo.checkpoint import read_checkpoint  # noqa: E402

TINY = [
    "diffusion.hidden_sizes=[16,16]",
    "critic.hidden_sizes=[16]",
    "critic.num_members=3",
    "loss.num_samples=2",
    "optim.batch_size=32",
    "logger.backend=csv",
    "logger.log_interval=5",
]


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(RECIPES / "config"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _toy(*extra: str):
    return _cfg(
        "task=toy2d-8gaussians-cpu",
        *TINY,
        "data.toy2d_size=2000",
        "diffusion.num_steps=4",
        "optim.pretrain_steps=20",
        "optim.train_steps=20",
        "optim.value_warmup_steps=5",
        "eval.interval=10",
        "checkpoint.interval=10",
        "eval.toy2d_samples=300",
        *extra,
    )


def test_toy2d_run_writes_every_output(tmp_path):
    path = bdpo_offline.run(_toy(), tmp_path)
    assert path == tmp_path / "summary.json"
    summary = json.loads(path.read_text())
    assert summary["task"] == "toy2d-8gaussians-cpu" and summary["domain"] == "toy2d"
    assert summary["steps"] == {"pretrain": 20, "train": 20}
    settings = summary["settings"]  # what aggregation groups seeds by
    assert settings["loss.eta"] == 0.05 and settings["optim.train_steps"] == 20
    assert not {"seed", "resume", "threads", "checkpoint.interval"} & set(settings)
    for key in (
        "energy_distance_actor",
        "energy_distance_behavior",
        "sliced_wasserstein_actor",
        "mean_reward_actor",
        "mean_reward_target",
    ):
        assert np.isfinite(summary["toy2d"][key]), key
    assert summary["wall_time_s"] > 0
    rates = summary["updates_per_s"]  # per phase, update time only
    assert set(rates) == {"pretrain", "train"} and rates["pretrain"] > 0 and rates["train"] > 0
    # evaluations are not update time: 40 updates at these rates take less than the whole run
    evals = sum(e["eval_time_s"] for e in summary["evaluations"])
    assert 20 / rates["pretrain"] + 20 / rates["train"] < summary["wall_time_s"] - evals
    with np.load(tmp_path / "samples.npz") as npz:
        assert npz["samples"].shape == (300, 2) and npz["data"].shape == (2000, 2)
        assert npz["rewards"].shape == (2000,) and float(npz["eta"]) == pytest.approx(0.05)
    for name in (
        "samples.png",
        "value_landscape.png",
        "curves.png",
        "config.yaml",
        "checkpoints/latest.torchrl",
    ):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "logs").rglob("*.csv")), "CSV scalars were not written"


def test_minari_hopper_run_with_env_evaluation(tmp_path, minari_hopper_dataset):
    cfg = _cfg(
        "task=custom",
        f"data.name={minari_hopper_dataset}",
        *TINY,
        "optim.pretrain_steps=10",
        "optim.train_steps=10",
        "optim.value_warmup_steps=2",
        "optim.actor_update_period=2",
        "eval.interval=5",
        "eval.episodes=2",
        "eval.num_candidates=3",
        "env.max_episode_steps=15",
        "checkpoint.interval=5",
    )
    summary = json.loads(bdpo_offline.run(cfg, tmp_path).read_text())
    final, best = summary["eval"]["final"], summary["eval"]["best"]
    assert final["episodes"] == 2 and final["step"] == 20
    ref_min, ref_max = -20.272305, 3234.3  # the D4RL hopper references stored in the test dataset
    expected = 100 * (final["return_mean"] - ref_min) / (ref_max - ref_min)
    assert final["normalized_score_mean"] == pytest.approx(expected)
    assert best["normalized_score_mean"] >= final["normalized_score_mean"]
    # the Q target's KL terms are logged per diffusion step (N = 5 in the base config)
    train = next((tmp_path / "logs").rglob("scalars")) / "train"
    assert sorted(p.name for p in train.glob("kl_per_step/*.csv")) == [
        f"{n}.csv" for n in range(1, 6)
    ]
    # curves.png of a control run: its panels from the CSV logs, KL terms and scores included
    from plots import curve_panels, read_scalars

    assert (tmp_path / "curves.png").is_file()
    panels = {
        title: [key for key, *_ in series]
        for title, series, _ in curve_panels(read_scalars(tmp_path))
    }
    assert panels["KL terms"] == ["train/penalty", "train/actor_kl"] + [
        f"train/kl_per_step/{n}" for n in range(1, 6)
    ]
    assert panels["evaluation: normalised score"] == ["eval/normalized_score_mean"]
    assert {"behavior loss (noise prediction)", "critic losses", "Q and V (batch means)"} <= set(
        panels
    )


SHORT_ENV_RUN = (
    *TINY,
    "compile=false",
    "optim.pretrain_steps=6",
    "optim.train_steps=6",
    "optim.value_warmup_steps=2",
    "optim.actor_update_period=2",
    "eval.interval=3",
    "eval.episodes=2",
    "eval.num_candidates=2",
    "env.max_episode_steps=10",
    "checkpoint.interval=6",
)


def _write_d4rl_hopper_file(
    path: Path, episodes: int = 4, length: int = 20, *, v0: bool = False
) -> Path:
    """A D4RL-layout HDF5 file (random Hopper-sized rows, each episode ending in a timeout;
    with ``v0`` the timeouts and next observations are left out, as in D4RL's -v0 files)."""
    import h5py

    rng = np.random.default_rng(0)
    rows = episodes * length
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(rows, 11)).astype(np.float32)
        if not v0:
            f["next_observations"] = rng.normal(size=(rows, 11)).astype(np.float32)
            f["timeouts"] = np.arange(rows) % length == length - 1
        f["actions"] = rng.uniform(-1, 1, size=(rows, 3)).astype(np.float32)
        f["rewards"] = rng.uniform(0, 3, size=rows).astype(np.float32)
        f["terminals"] = np.zeros(rows, bool)
    return path


def test_d4rl_file_in_d4rl_default_directory_trains_and_evaluates(tmp_path, monkeypatch):
    """A user's ``$D4RL_DATASET_DIR/hopper_medium-v2.hdf5`` is found by the task's name, offline."""
    import torchrl.data.datasets.d4rl as torchrl_d4rl

    def no_download(url, directory):
        raise AssertionError("the recipe tried to download")

    monkeypatch.setattr(torchrl_d4rl, "_download_dataset_from_url", no_download)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    _write_d4rl_hopper_file(tmp_path / "d4rl" / "hopper_medium-v2.hdf5")
    cfg = _cfg("task=hopper-medium-v2", *SHORT_ENV_RUN)
    summary = json.loads(bdpo_offline.run(cfg, tmp_path / "run").read_text())
    assert summary["dataset"] == "hopper-medium-v2"
    assert summary["eval"]["metric"] == "normalized_score"
    assert summary["eval"]["reference_scores"] == {"min": -20.272305, "max": 3234.3}
    final = summary["eval"]["final"]
    expected = 100 * (final["return_mean"] + 20.272305) / (3234.3 + 20.272305)
    assert final["normalized_score_mean"] == pytest.approx(expected)
    # resuming the finished run does nothing and ends cleanly (its evaluation envs never start)
    again = bdpo_offline.run(
        _cfg("task=hopper-medium-v2", *SHORT_ENV_RUN, "resume=true"), tmp_path / "run"
    )
    assert json.loads(again.read_text()) == summary
    # the data may move (a resume may point data.path at the same rows elsewhere) ...
    moved = tmp_path / "moved" / "hopper_medium-v2.hdf5"
    moved.parent.mkdir()
    shutil.copy(tmp_path / "d4rl" / "hopper_medium-v2.hdf5", moved)
    resume = ("task=hopper-medium-v2", *SHORT_ENV_RUN, "resume=true", f"data.path={moved}")
    assert bdpo_offline.run(_cfg(*resume), tmp_path / "run") == again
    # ... but other rows are refused by the checkpoint's data fingerprint
    _write_d4rl_hopper_file(moved, episodes=5)
    with pytest.raises(ConfigError, match="not the one the run started with"):
        bdpo_offline.run(_cfg(*resume), tmp_path / "run")
    # pre-training only: no evaluation runs, the run still ends cleanly
    pre = bdpo_offline.run(
        _cfg("task=hopper-medium-v2", *SHORT_ENV_RUN, "optim.train_steps=0"), tmp_path / "pre"
    )
    assert json.loads(pre.read_text())["eval"] is None
    # the same file anywhere, through data.path (here under another dataset name)
    other = _write_d4rl_hopper_file(tmp_path / "elsewhere" / "copy.hdf5")
    task = bdpo_utils.make_task_data(
        _cfg("task=hopper-medium-v2", f"data.path={other}", "data.download=false")
    )
    assert task.data.batch_size[0] == 80 and task.env_id == "Hopper-v5"
    # a -v0-style file marks no time-limit ends: data.max_episode_steps (default:
    # env.max_episode_steps) says where they fall
    v0 = _write_d4rl_hopper_file(tmp_path / "elsewhere" / "v0.hdf5", v0=True)
    for limit in ("data.max_episode_steps=20", "env.max_episode_steps=20"):
        task = bdpo_utils.make_task_data(_cfg("task=hopper-medium-v2", f"data.path={v0}", limit))
        assert task.data.batch_size[0] == 4 * 19  # each episode's limit row has no next state
        assert task.data["episode"].unique().numel() == 4
    task = bdpo_utils.make_task_data(
        _cfg("task=hopper-medium-v2", f"data.d4rl_root={tmp_path / 'd4rl'}", "data.download=false")
    )
    assert task.ref_max_score == 3234.3


def test_datasets_without_reference_scores_report_raw_returns(tmp_path, monkeypatch, caplog):
    """A Minari dataset without ref scores (like Minari's mujoco/* remakes): raw returns, labelled,
    in the log, summary.json and the aggregate tables; no normalised score anywhere."""
    import aggregate_results as agg
    import gymnasium as gym
    from env_rollouts import rollout_episodes, uniform_random_policy
    from minari_building import build_minari_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    space = gym.make("Hopper-v5").action_space
    episodes = rollout_episodes(
        "Hopper-v5", uniform_random_policy(space, 0), 4, seed=0, max_steps=20
    )
    build_minari_dataset("bdpo-test/hopper/norefs-v0", "Hopper-v5", episodes)
    cfg = _cfg("task=custom", "data.name=bdpo-test/hopper/norefs-v0", *SHORT_ENV_RUN)
    with caplog.at_level("INFO", logger="bdpo"):
        summary = json.loads(bdpo_offline.run(cfg, tmp_path / "run").read_text())
    assert "no reference scores" in caplog.text and "raw returns" in caplog.text
    evals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval @")]
    assert evals and all("raw returns" in m and "normalized" not in m for m in evals)
    block = summary["eval"]
    assert block["metric"] == "return" and block["reference_scores"] is None
    for which in ("final", "best"):
        assert block[which]["normalized_score_mean"] is None
        assert np.isfinite(block[which]["return_mean"])
    assert all(e["metric"] == "return" for e in summary["evaluations"])
    logged = {p.stem for p in (tmp_path / "run" / "logs").rglob("eval/*.csv")}
    assert "return_mean" in logged and not any("normalized" in n for n in logged)
    rows = agg.aggregate([summary])
    assert rows[0].metric == "return"
    assert "| custom † |" in agg.to_markdown(rows)
    agg.to_csv(rows, tmp_path / "table.csv")
    header, row = (
        line.split(",") for line in (tmp_path / "table.csv").read_text().splitlines()[:2]
    )
    assert row[header.index("metric")] == "return"


class _Interrupting(bdpo_offline.BDPOTrainer):
    at = 17

    def train_step(self):
        out = super().train_step()
        if self.step + 1 == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return out


def test_interrupt_and_resume_give_identical_parameters(tmp_path):
    extra = ("checkpoint.interval=7",)
    torch.manual_seed(0)
    bdpo_offline.run(_toy(*extra), tmp_path / "straight")
    straight = read_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.torchrl")

    with pytest.raises(bdpo_offline.Interrupted):
        bdpo_offline.run(_toy(*extra), tmp_path / "split", trainer_cls=_Interrupting)
    partial = read_checkpoint(tmp_path / "split" / "checkpoints" / "latest.torchrl")
    assert partial["step"] == _Interrupting.at
    bdpo_offline.run(_toy(*extra, "resume=true"), tmp_path / "split")
    resumed = read_checkpoint(tmp_path / "split" / "checkpoints" / "latest.torchrl")
    assert resumed["step"] == straight["step"] == 40
    for key, value in straight["loss"].items():
        torch.testing.assert_close(resumed["loss"][key], value, rtol=0, atol=0, msg=key)


class _Crashing(bdpo_offline.BDPOTrainer):
    """Dies (like a killed process) at update 19: after the log line at 15, checkpoint at 14."""

    def train_step(self):
        if self.step == 18:
            raise RuntimeError("killed")
        return super().train_step()


def _csv_steps(run_dir: Path) -> dict[str, list[int]]:
    return {name: [step for step, _ in rows] for name, rows in _csv_rows(run_dir).items()}


def _csv_rows(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    scalars = next((run_dir / "logs").glob("*/scalars"))
    rows = {}
    for path in sorted(scalars.rglob("*.csv")):
        pairs = [line.split(",") for line in path.read_text().split()]
        rows[str(path.relative_to(scalars))] = [(int(step), value) for step, value in pairs]
    return rows


def _logged_values(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """The CSV rows of the training metrics (not the timing, not the evaluations)."""
    return {
        name: rows
        for name, rows in _csv_rows(run_dir).items()
        if not name.endswith("updates_per_s.csv") and not name.startswith("eval/")
    }


def test_resume_after_a_crash_logs_each_update_once(tmp_path):
    """The CSV rows logged after the last checkpoint are dropped on resume, not duplicated."""
    extra = ("checkpoint.interval=7",)
    bdpo_offline.run(_toy(*extra), tmp_path / "straight")
    with pytest.raises(RuntimeError, match="killed"):
        bdpo_offline.run(_toy(*extra), tmp_path / "split", trainer_cls=_Crashing)
    assert 15 in _csv_steps(tmp_path / "split")["pretrain/loss_behavior.csv"]
    bdpo_offline.run(_toy(*extra, "resume=true"), tmp_path / "split")
    assert _csv_steps(tmp_path / "split") == _csv_steps(tmp_path / "straight")
    # the window open at the checkpoint (14: updates 11-14 of the row at 15) was kept
    assert _logged_values(tmp_path / "split") == _logged_values(tmp_path / "straight")
    # killed before its first checkpoint: a fresh start in the same directory logs afresh
    early = ("checkpoint.interval=1000",)
    with pytest.raises(RuntimeError, match="killed"):
        bdpo_offline.run(_toy(*early), tmp_path / "early", trainer_cls=_Crashing)
    assert not (tmp_path / "early" / "checkpoints" / "latest.torchrl").exists()
    bdpo_offline.run(_toy(*early), tmp_path / "early")
    assert _csv_steps(tmp_path / "early") == _csv_steps(tmp_path / "straight")


def test_compiled_run_equals_eager_run(tmp_path, caplog):
    """compile=true trains the same parameters as eager (same random draws), with no fallback
    to eager (none is logged) and dynamo's process-wide settings untouched."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    extra = ("optim.pretrain_steps=4", "optim.train_steps=6", "optim.value_warmup_steps=1")
    extra += ("optim.actor_update_period=2", "checkpoint.interval=100", "eval.interval=100")
    bdpo_offline.run(_toy(*extra), tmp_path / "eager")
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True), caplog.at_level("WARNING", logger="bdpo"):
        trainer = bdpo_offline.BDPOTrainer(_toy(*extra, "compile=true"), tmp_path / "compiled")
        trainer.train()
    assert "runs eagerly" not in caplog.text
    assert not torch._dynamo.config.suppress_errors
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs >= 3, "the behavior, critic and actor updates were not all compiled"
    eager = read_checkpoint(tmp_path / "eager" / "checkpoints" / "latest.torchrl")
    assert trainer.step == eager["step"] == 10
    compiled = trainer.loss.state_dict()
    for key, value in eager["loss"].items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_compile_scopes(tmp_path, monkeypatch):
    """compile=true compiles each update as one graph (compile_scope=graph, the default), or only
    the losses (compile_scope=losses); compile=false compiles nothing; a bad scope is refused."""
    compiled: dict[str, list[str]] = {"losses": [], "graph": []}

    def record_losses(fns, mode, *, strict=False):
        compiled["losses"].extend(fn.__name__ for fn in fns)
        return list(fns)

    def record_graph(terms, *args, **kwargs):
        compiled["graph"].append(terms.__name__)
        return terms

    monkeypatch.setattr(bdpo_utils, "compile_functions", record_losses)
    monkeypatch.setattr(bdpo_utils, "make_graph_step", record_graph)
    bdpo_offline.BDPOTrainer(_toy("compile=true"), tmp_path / "run")
    assert compiled == {"losses": [], "graph": ["behavior_terms", "critic_terms", "actor_terms"]}
    compiled["graph"].clear()
    bdpo_offline.BDPOTrainer(_toy("compile=true", "compile_scope=losses"), tmp_path / "losses")
    assert compiled == {"losses": ["behavior_terms", "critic_terms", "actor_terms"], "graph": []}
    compiled["losses"].clear()
    bdpo_offline.BDPOTrainer(_toy("compile=false"), tmp_path / "eager")
    assert compiled == {"losses": [], "graph": []}
    with pytest.raises(ConfigError, match="compile_scope"):
        bdpo_offline.BDPOTrainer(_toy("compile_scope=steps"), tmp_path / "bad")
    trainer = bdpo_offline.BDPOTrainer(_toy(), tmp_path / "scopes")
    with pytest.raises(ValueError, match=r"compile_scope must be one of \('graph', 'losses'\)"):
        bdpo_utils.make_update_steps(
            trainer.loss,
            trainer.opts,
            trainer.updaters,
            trainer.device,
            compile_scope="whole",
        )


def test_a_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    """A function that fails to compile runs eagerly (one warning); other errors propagate."""
    import bdpo_utils
    from torch._dynamo.exc import TorchDynamoException

    def broken_compile(fn, mode=None):
        def call(*args, **kwargs):
            raise TorchDynamoException("inductor failed")

        return call

    monkeypatch.setattr(bdpo_utils.torch, "compile", broken_compile)
    (add_one,) = bdpo_utils.compile_functions([lambda x: x + 1], "default")
    with caplog.at_level("WARNING", logger="bdpo"):
        assert add_one(1) == 2 and add_one(2) == 3
    assert caplog.text.count("runs eagerly") == 1 and "inductor failed" in caplog.text

    def user_error(x):
        raise ValueError("not a compile failure")

    monkeypatch.setattr(bdpo_utils.torch, "compile", lambda fn, mode=None: fn)
    (fails,) = bdpo_utils.compile_functions([user_error], "default")
    with pytest.raises(ValueError, match="not a compile failure"):
        fails(1)


def test_resume_without_checkpoint_and_with_other_settings(tmp_path):
    with pytest.raises(RunDirError, match="no checkpoint"):  # before any data are loaded
        bdpo_offline.run(_toy("resume=true"), tmp_path)
    bdpo_offline.run(_toy(), tmp_path)
    with pytest.raises(ConfigError, match=r"loss\.eta: checkpoint 0\.05 vs now 0\.1"):
        bdpo_offline.run(_toy("resume=true", "loss.eta=0.1"), tmp_path)


@pytest.mark.parametrize(
    "override,match",
    [
        ("loss.eta=0", "loss.eta"),
        ("loss.rho=-1", "loss.rho"),
        ("critic.num_members=0", "num_members"),
        ("diffusion.num_steps=0", "num_steps"),
        ("loss.num_samples=0", "num_samples"),
        ("optim.actor_update_period=0", "actor_update_period"),
        ("optim.batch_size=5000", "batch"),
        ("loss.eta=abc", "loss.eta must be a number"),
        ("loss.backup=median", "loss.backup must be one of mean, max"),
        ("compile_mode=fast", "compile_mode must be one of default, reduce-overhead"),
        ("device=foo", "device must be cpu, cuda"),
        ("seed=abc", "seed must be an integer"),
        ("eval.toy2d_samples=5000", "eval.toy2d_samples .5000. must be <= data.toy2d_size"),
        ("diffusion.hidden_sizes=[]", "diffusion.hidden_sizes must be a non-empty list"),
        ("data.action_clip=2", "data.action_clip must be in"),
        ("logger.log_interval=0", "logger.log_interval must be >= 1"),
    ],
)
def test_bad_settings_are_reported(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        bdpo_offline.run(_toy(override), tmp_path)


def test_goal_conditioned_minari_data_are_evaluated_in_their_own_env(tmp_path, monkeypatch):
    """A Minari dataset over a gymnasium-robotics AntMaze with a fixed goal: the data's dict
    observations and the evaluation env's are flattened alike, and the env is rebuilt from the
    dataset's spec with its kwargs (the maze layout), not from its id alone."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("gymnasium_robotics")
    from minari_building import build_minari_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    maze = [[1, 1, 1, 1, 1], [1, "r", 0, 0, 1], [1, 1, 1, 0, 1], [1, "g", 0, 0, 1], [1, 1, 1, 1, 1]]
    kwargs = {"maze_map": maze, "continuing_task": True}
    env = gym.make("AntMaze_UMaze-v4", **kwargs)
    env.action_space.seed(0)
    episodes = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        trace = {k: [v] for k, v in obs.items()}
        actions = []
        for _ in range(25):
            actions.append(env.action_space.sample())
            obs, *_ = env.step(actions[-1])
            for k, v in obs.items():
                trace[k].append(v)
        episodes.append(
            {
                "observations": {k: np.stack(v) for k, v in trace.items()},
                "actions": np.stack(actions),
                "rewards": np.zeros(25),
                "terminations": np.zeros(25, bool),
                "truncations": np.eye(25, dtype=bool)[-1],
                "seed": seed,
            }
        )
    goal = episodes[0]["observations"]["desired_goal"][0]
    env.close()
    name = "bdpo-test/antmaze/umaze-fixed-goal-v0"
    build_minari_dataset(name, "AntMaze_UMaze-v4", episodes, env_kwargs=kwargs)
    cfg = _cfg(
        "task=custom",
        f"data.name={name}",
        "data.domain=antmaze",
        "data.reward_transform=antmaze",
        *TINY,
        "optim.pretrain_steps=4",
        "optim.train_steps=4",
        "optim.value_warmup_steps=1",
        "eval.interval=4",
        "eval.episodes=2",
        "eval.num_candidates=2",
        "env.max_episode_steps=10",
    )
    trainer = bdpo_offline.BDPOTrainer(cfg, tmp_path / "run")
    # concat(achieved_goal, observation, desired_goal): the ant's x, y, the rest of its state
    # (D4RL's 29-entry AntMaze state together), then the goal
    assert trainer.task.obs_dim == 2 + 27 + 2
    first = trainer.task.data["observation"][0]
    start = episodes[0]["observations"]
    torch.testing.assert_close(first[:2], torch.as_tensor(start["achieved_goal"][0]).float())
    torch.testing.assert_close(first[2:29], torch.as_tensor(start["observation"][0]).float())
    torch.testing.assert_close(first[-2:], torch.as_tensor(goal).float())
    trainer.train()
    assert trainer.evals[-1]["episodes"] == 2
    td = trainer.eval_env.reset()
    assert td["observation"].shape[-1] == 31
    # the env's x, y leads its observation, as in the data (reset: near the "r" cell)
    assert (td["observation"][..., :2] - torch.tensor([-4.0, 4.0])).abs().max() <= 1.0 + 1e-4
    # the goal comes from the layout stored with the data: the "g" cell, centred at (-4, -4)
    # (maze scaling 4), up to the env's +-1 noise; the default layout draws any free cell
    assert (td["observation"][..., -2:] + 4).abs().max() <= 1.0 + 1e-4
    assert (torch.as_tensor(goal) + 4).abs().max() <= 1.0 + 1e-4
    trainer.eval_env.close()


def test_toy2d_pretraining_only_run_still_writes_samples_and_pictures(tmp_path, caplog):
    """Without training the pictures show the behavior model, not an untrained actor."""
    seen = []

    class Spy(bdpo_offline.BDPOTrainer):
        def evaluate(self):
            actor = self.loss.target_actor_network_params.flatten_keys()
            behavior = self.loss.target_behavior_network_params.flatten_keys()
            seen.append(all(torch.equal(actor[k], behavior[k]) for k in actor.keys()))
            return super().evaluate()

    with caplog.at_level(logging.INFO, logger="bdpo"):
        bdpo_offline.run(_toy("optim.train_steps=0"), tmp_path, trainer_cls=Spy)
    for name in ("samples.npz", "samples.png", "value_landscape.png", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert seen == [True]  # evaluated once, with the actor = the behavior model's EMA
    assert "eval @ 20 (behavior model): step=20, train_step=0" in caplog.text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["toy2d"] == {}  # no training evaluation to report
    assert summary["updates_per_s"]["train"] is None


def test_custom_task_without_a_dataset_name_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="data.name must be set .task=custom needs data.name"):
        bdpo_offline.run(_cfg("task=custom", *TINY), tmp_path)


def test_actor_and_continued_behavior_metrics_are_logged(tmp_path):
    """Metrics of updates that do not run every step are averaged over the log window."""
    bdpo_offline.run(_toy("logger.log_interval=4", "optim.actor_update_period=3"), tmp_path)
    scalars = next((tmp_path / "logs").rglob("scalars"))
    # 20 training updates logged every 4; the actor (and a behavior step with it) runs at
    # updates 6, 9, ..., 18 after the 5-update value warm-up: none in the first window
    expected = {"loss_qvalue": 5, "loss_actor": 4, "grad_actor": 4}
    expected.update(loss_behavior=4, grad_behavior=4)
    for name, count in expected.items():
        rows = (scalars / "train" / f"{name}.csv").read_text().split()
        assert len(rows) == count, name
        assert all(np.isfinite(float(r.split(",")[-1])) for r in rows), name


def test_refused_resume_keeps_the_run_config_and_a_finished_run_is_left_alone(tmp_path):
    bdpo_offline.run(_toy(), tmp_path)
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="different settings"):
        bdpo_offline.run(_toy("resume=true", "loss.eta=0.1"), tmp_path)
    assert (tmp_path / "config.yaml").read_text() == config
    summary = (tmp_path / "summary.json").read_text()
    (tmp_path / "curves.png").unlink()  # killed after writing the summary, before the plot
    bdpo_offline.run(_toy("resume=true"), tmp_path)
    assert (tmp_path / "summary.json").read_text() == summary
    assert (tmp_path / "curves.png").is_file()


# each launcher with the modules it needs: joblib's comes with the `recipes` extra, submitit's
# only with the `slurm` extra (the documented dev install `pip install -e ".[dev]"` lacks it)
LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
}


def _require_launcher(launcher: str) -> None:
    """Skips the test, naming the missing package and extra, when the launcher is not installed."""
    for module in LAUNCHERS[launcher]:
        pytest.importorskip(
            module,
            reason=f"hydra/launcher={launcher} needs {module}"
            + (" (the `slurm` extra)" if launcher.startswith("submitit") else ""),
        )


def _sweep(sweep_dir: Path, launcher: str, *sweep: str) -> subprocess.CompletedProcess:
    """A tiny 2D sweep (``-m``) over ``sweep`` with ``launcher`` (2 parallel jobs with joblib)."""
    cmd = [
        sys.executable,
        str(RECIPES / "bdpo_offline.py"),
        "-m",
        *TINY,
        "data.toy2d_size=2000",
        "optim.pretrain_steps=3",
        "optim.value_warmup_steps=1",
        "eval.toy2d_samples=200",
        "logger.backend=none",
        *sweep,
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    if launcher == "joblib":
        cmd.append("hydra.launcher.n_jobs=2")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_sweep_launchers_run_every_job(tmp_path, launcher):
    _require_launcher(launcher)
    proc = _sweep(tmp_path, launcher, "optim.train_steps=3", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(tmp_path.rglob("summary.json"))) == 2, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    # output to a pipe: plain lines, no colour codes or bar refreshes
    assert "\x1b[" not in output and "\r" not in output
    if launcher == "joblib":  # its jobs log to this process's terminal: each line names its job
        for seed in (0, 1):
            assert f"[toy2d-8gaussians-cpu seed={seed}] " in output
    # the sweep ends with where its results are and the command that aggregates them
    report = proc.stdout.strip().splitlines()[-2:]
    assert report[0].startswith(
        f"Sweep finished: 2 of 2 jobs wrote a summary.json under {tmp_path}"
    )
    words = report[1].split()
    assert words[:3] == ["Aggregate", "them:", "python"] and words[4] == str(tmp_path)
    assert Path(words[3]).resolve() == RECIPES / "aggregate_results.py"  # from the same cwd


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path, launcher):
    """Job 0 has an impossible setting; job 1 still runs, and the report names job 0."""
    if launcher != "basic":  # Hydra's own
        _require_launcher(launcher)
    proc = _sweep(tmp_path, launcher, "optim.train_steps=-1,3")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert [p.parent.name.rsplit("_", 1)[-1] for p in tmp_path.rglob("summary.json")] == ["1"]
    report = proc.stdout.strip().splitlines()[-3:]
    assert report[0].startswith(
        f"Sweep finished: 1 of 2 jobs wrote a summary.json under {tmp_path}"
    )
    assert report[1].startswith("  job 0 failed (exit 2): optim.train_steps=-1: Invalid")
    assert "optim.train_steps" in report[1] and ">= 0" in report[1]
    assert report[2].startswith("Aggregate them:")


def test_unknown_task_lists_the_known_ones(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(RECIPES / "bdpo_offline.py"),
            "task=nope",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "hopper-medium-v2" in proc.stderr and "toy2d-8gaussians" in proc.stderr


def test_every_paper_task_has_a_config():
    names = {p.stem for p in (RECIPES / "config" / "task").glob("*.yaml")}
    for env in ("halfcheetah", "hopper", "walker2d"):
        for kind in ("medium", "medium-replay", "medium-expert"):
            assert f"{env}-{kind}-v2" in names
    for kind in (
        "umaze",
        "umaze-diverse",
        "medium-play",
        "medium-diverse",
        "large-play",
        "large-diverse",
    ):
        assert f"antmaze-{kind}-v0" in names
    for ds in ("swissroll", "8gaussians", "moons", "rings", "checkerboard", "2spirals"):
        assert f"toy2d-{ds}" in names and f"toy2d-{ds}-cpu" in names
    hopper = _cfg("task=hopper-medium-v2")
    assert (hopper.loss.eta, hopper.loss.rho, hopper.critic.num_members) == (0.2, 2.0, 20)
    large = _cfg("task=antmaze-large-diverse-v0")
    assert (large.loss.eta, large.loss.gamma, large.loss.backup, large.eval.episodes) == (
        1.0,
        0.995,
        "max",
        100,
    )
    assert _cfg("task=antmaze-umaze-diverse-v0").eval.num_candidates == 1


class _Poisoning(bdpo_offline.BDPOTrainer):
    """Makes the critics' parameters NaN after update 33 (train phase, after a checkpoint at 30)."""

    def train_step(self):
        if self.step == 33:
            with torch.no_grad():
                for p in self.loss.qvalue_network_params.values(True, True):
                    p.fill_(float("nan"))
        return super().train_step()


def test_non_finite_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    # the poisoned update is the 34th (33 done before it), as the logs count updates
    with pytest.raises(bdpo_offline.NumericalError, match=r"loss_qvalue.*non-finite at update 34"):
        bdpo_offline.run(
            _toy("checkpoint.interval=10", "eval.interval=100"), tmp_path, trainer_cls=_Poisoning
        )
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "latest.torchrl")
    assert ckpt["step"] == 30
    assert all(torch.isfinite(v).all() for v in ckpt["loss"].values() if v.is_floating_point())


def test_unknown_dataset_lists_what_can_be_loaded(tmp_path, minari_hopper_dataset):
    from torchrl_bdpo.data import DatasetUnavailableError

    with pytest.raises(
        DatasetUnavailableError,
        match=r"bdpo-test/nothing/random-v0.*Local Minari datasets: .*"
        + minari_hopper_dataset.replace("/", "."),
    ):
        bdpo_offline.run(
            _cfg("task=custom", "data.name=bdpo-test/nothing/random-v0", *TINY), tmp_path
        )
    with pytest.raises(ConfigError, match=r"cannot tell the source.*hopper-medium-v2"):
        bdpo_offline.run(_cfg("task=custom", "data.name=hopper", *TINY), tmp_path)


def test_observation_size_must_match_the_evaluation_env(tmp_path, minari_hopper_dataset):
    cfg = _cfg("task=custom", f"data.name={minari_hopper_dataset}", "env.id=HalfCheetah-v5", *TINY)
    with pytest.raises(ConfigError, match=r"11 entries but HalfCheetah-v5 emits 17"):
        bdpo_offline.run(cfg, tmp_path)


def test_value_step_mlp_widths_are_a_setting():
    """critic.v_step_hidden: [128, 64] by default (flow-rl bae22f4), [64, 64] in the ICML code."""
    from bdpo_utils import make_loss_module, make_task_data

    for widths in ([128, 64], [64, 64]):
        cfg = _toy(f"critic.v_step_hidden=[{widths[0]},{widths[1]}]")
        loss = make_loss_module(cfg, make_task_data(cfg), torch.device("cpu"))
        step_mlp = loss.value_network.module.step_mlp
        shapes = [
            tuple(w.shape) for name, w in step_mlp.named_parameters() if name.endswith("weight")
        ]
        assert shapes == [(3, 64, widths[0]), (3, widths[0], widths[1])], shapes


def test_action_size_and_bounds_must_match_the_evaluation_env():
    """Checked when the run starts, not at the first evaluation after pre-training."""
    from bdpo_utils import make_eval_env

    with pytest.raises(ConfigError, match=r"actions have 2 entries but Hopper-v5 takes 3"):
        make_eval_env("Hopper-v5", 2, 10, 11, action_dim=2)
    # InvertedPendulum-v5 takes one action in [-3, 3]; the actor samples in [-1, 1]
    with pytest.raises(ConfigError, match=r"bounds are low \[-3.0\], high \[3.0\].*\[-1, 1\]"):
        make_eval_env("InvertedPendulum-v5", 1, 10, 4, action_dim=1)
    make_eval_env("Hopper-v5", 2, 10, 11, action_dim=3).close(raise_if_closed=False)
    # env.max_episode_steps also sets Gymnasium's own limit (1000 for HalfCheetah-v5)
    env = make_eval_env("HalfCheetah-v5", 1, 1003, 17, action_dim=6)
    td = env.rollout(1010, break_when_any_done=True)
    env.close()
    assert td.shape[-1] == 1003 and not td["next", "terminated"].any()


def _start(run_dir, *extra):
    cmd = [
        sys.executable,
        str(RECIPES / "bdpo_offline.py"),
        "task=toy2d-8gaussians-cpu",
        *TINY,
        "data.toy2d_size=2000",
        "diffusion.num_steps=4",
        "optim.pretrain_steps=100000",
        "optim.train_steps=10",
        "optim.value_warmup_steps=1",  # (the actor must get to train: checked at start-up)
        "eval.toy2d_samples=200",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, proc, timeout=90.0):
    import time

    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.2)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = _start(tmp_path, "checkpoint.interval=100000")
    # scalars are logged from inside the training loop, after the signal handlers are installed
    _wait_for(
        tmp_path
        / "logs"
        / "toy2d-8gaussians-cpu_seed0"
        / "scalars"
        / "pretrain"
        / "loss_behavior.csv",
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in out + err and "resume=true" in out + err
    state = read_checkpoint(tmp_path / "checkpoints" / "latest.torchrl")
    assert 0 < state["step"] < 100000


def test_kill_9_never_leaves_a_torn_checkpoint(tmp_path):
    import random
    import time

    proc = _start(tmp_path, "checkpoint.interval=1")  # a checkpoint after every update
    ckpt = tmp_path / "checkpoints" / "latest.torchrl"
    _wait_for(ckpt, proc)
    for _ in range(3):
        time.sleep(random.uniform(0.05, 0.5))
        state = read_checkpoint(ckpt)  # readable while being rewritten
        assert state["step"] > 0
    proc.kill()
    proc.communicate(timeout=30)
    state = read_checkpoint(ckpt)
    assert state["step"] > 0 and set(state) >= {"loss", "optimizers", "rng", "config"}


@pytest.mark.parametrize(
    "backend,pattern", [("tensorboard", "events.out.tfevents*"), ("wandb", "offline-run-*")]
)
def test_other_loggers(tmp_path, backend, pattern):
    bdpo_offline.run(_toy(f"logger.backend={backend}", "logger.wandb_mode=offline"), tmp_path)
    assert list(tmp_path.rglob(pattern)), f"no {backend} output in {tmp_path}"


def test_resumed_run_logs_to_the_same_wandb_run(tmp_path):
    extra = ("logger.backend=wandb", "logger.wandb_mode=offline", "checkpoint.interval=7")
    with pytest.raises(bdpo_offline.Interrupted):
        bdpo_offline.run(_toy(*extra), tmp_path, trainer_cls=_Interrupting)
    bdpo_offline.run(_toy(*extra, "resume=true"), tmp_path)
    runs = sorted(p.name for p in tmp_path.rglob("offline-run-*") if p.is_dir())
    assert len(runs) == 2, runs
    # offline-run-<time>-<run id>, with "-1" appended when both started in the same second
    ids = {re.match(r"offline-run-\d+_\d+-([0-9a-z]+)", name).group(1) for name in runs}
    assert len(ids) == 1, runs


def test_cli_prints_summary_path_last(tmp_path):
    cmd = [
        sys.executable,
        str(RECIPES / "bdpo_offline.py"),
        *TINY,
        "data.toy2d_size=2000",
        "optim.pretrain_steps=5",
        "optim.train_steps=5",
        "optim.value_warmup_steps=1",
        "eval.toy2d_samples=200",
        "logger.backend=wandb",
        "logger.wandb_mode=offline",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "summary.json")


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda ep: ep["rewards"].__setitem__(3, np.nan), r"non-finite|NaN"),
        (lambda ep: ep["observations"].__setitem__((2, 0), np.inf), r"non-finite|inf"),
    ],
)
def test_corrupt_dataset_gives_one_clear_error(tmp_path, minari_hopper_dataset, corrupt, match):
    """A user's dataset with NaN/inf values stops the recipe with a DatasetValidationError (exit 2)."""
    import uuid

    import gymnasium as gym
    from env_rollouts import rollout_episodes, uniform_random_policy
    from minari_building import build_minari_dataset

    from torchrl_bdpo.data import DatasetValidationError

    env = gym.make("Hopper-v5")
    episodes = rollout_episodes(
        "Hopper-v5", uniform_random_policy(env.action_space, 0), 2, seed=0, max_steps=20
    )
    env.close()
    corrupt(episodes[0])
    dataset_id = f"bdpo-test/hopper/bad{uuid.uuid4().hex[:6]}-v0"
    build_minari_dataset(dataset_id, "Hopper-v5", episodes, ref_min_score=0.0, ref_max_score=1.0)
    with pytest.raises(DatasetValidationError, match=match):
        bdpo_offline.run(_cfg("task=custom", f"data.name={dataset_id}", *TINY), tmp_path)
    assert DatasetValidationError in bdpo_offline.USER_ERRORS


def test_damaged_dataset_file_exits_2_with_one_line(tmp_path, monkeypatch):
    """A truncated Minari file: exit code 2, one error line naming the file, no traceback."""
    import gymnasium as gym
    from env_rollouts import rollout_episodes, uniform_random_policy
    from minari_building import build_minari_dataset

    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    space = gym.make("Hopper-v5").action_space
    episodes = rollout_episodes(
        "Hopper-v5", uniform_random_policy(space, 0), 2, seed=0, max_steps=20
    )
    build_minari_dataset("bdpo-test/hopper/cut-v0", "Hopper-v5", episodes)
    main = root / "bdpo-test" / "hopper" / "cut-v0" / "data" / "main_data.hdf5"
    main.write_bytes(main.read_bytes()[:4000])
    cmd = [
        sys.executable,
        str(RECIPES / "bdpo_offline.py"),
        "task=custom",
        "data.name=bdpo-test/hopper/cut-v0",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    # PYTHONPATH: this checkout's package, not an installed one
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(main) in errors[0] and "truncated" in errors[0]


def test_training_without_environment_evaluation(tmp_path, minari_hopper_dataset):
    cfg = _cfg(
        "task=custom",
        f"data.name={minari_hopper_dataset}",
        *TINY,
        "optim.pretrain_steps=5",
        "optim.train_steps=5",
        "optim.value_warmup_steps=1",
        "eval.interval=2",
        "eval.env=false",
        "env.id=NoSuchEnv-v0",
        "checkpoint.interval=5",
    )
    summary = json.loads(bdpo_offline.run(cfg, tmp_path).read_text())
    assert summary["eval"] is None and summary["evaluations"] == []
    assert summary["steps"] == {"pretrain": 5, "train": 5}
