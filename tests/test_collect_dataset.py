"""recipes/collect_dataset.py on a tiny run: SAC for a few hundred steps, four Minari datasets."""

from __future__ import annotations

import json
import os
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

import collect_dataset  # noqa: E402

from torchrl_bdpo.data import TED_KEYS, load_minari_dataset  # noqa: E402

HOPPER_EXPERT_REF = 3234.3  # D4RL's hopper expert reference (torchrl_bdpo.scores)

TINY = [
    "env.max_episode_steps=60",
    "sac.actor_hidden=[16]",
    "sac.critic_hidden=[16]",
    "sac.batch_size=16",
    "train.total_frames=400",
    "train.init_random_frames=100",
    "train.frames_per_batch=50",
    "train.eval_interval=200",
    "train.eval_episodes=1",
    "medium.min_frames=0",
    "rollouts.medium_steps=150",
    "rollouts.expert_steps=120",
    "reference.random_episodes=3",
    "progress=false",
]


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(RECIPES / "config_collect"), version_base="1.3"):
        return compose("collect", overrides=list(overrides))


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("collect")
    before = os.environ.get("MINARI_DATASETS_PATH")
    torch.manual_seed(0)
    cfg = _cfg(*TINY, f"output_dir={out / 'minari'}", f"run_dir={out / 'run'}")
    summary = collect_dataset.collect(cfg)
    # the env var is only changed while collecting
    assert os.environ.get("MINARI_DATASETS_PATH") == before
    return out, summary


def test_summary_and_files(collected):
    out, summary = collected
    assert json.loads((out / "run" / "summary.json").read_text())["frames"] == 400
    assert summary["frames"] == 400 and summary["updates"] == 300  # UTD 1 after 100 random steps
    assert (out / "run" / "medium_actor.pt").is_file() and (
        out / "run" / "final_actor.pt"
    ).is_file()
    ids = {k: d["id"] for k, d in summary["datasets"].items()}
    assert ids == {
        "medium": "bdpo-local/hopper/medium-v0",
        "medium-replay": "bdpo-local/hopper/medium-replay-v0",
        "expert": "bdpo-local/hopper/expert-v0",
        "medium-expert": "bdpo-local/hopper/medium-expert-v0",
    }
    for dataset_id in ids.values():
        assert (out / "minari" / dataset_id / "data" / "metadata.json").is_file()
    # medium = the midpoint here (the threshold is out of reach in 400 steps)
    assert summary["medium"]["rule"] == "midpoint" and summary["medium"]["frames"] == 200
    assert np.isfinite(summary["medium"]["policy_eval_return"])
    assert np.isfinite(summary["final_eval_return"])
    # the learning curve: one entry per evaluation and per finished training episode
    assert [e["frames"] for e in summary["evaluations"]] == [200, 400]
    ends = [e["frames"] for e in summary["train_episodes"]]
    assert ends and ends == sorted(ends) and 0 < ends[-1] <= 400
    assert all(np.isfinite(e["return"]) for e in summary["train_episodes"])


def test_medium_expert_is_the_union_of_medium_and_expert(collected, monkeypatch):
    """D4RL's medium-expert: the medium dataset's episodes, then the expert dataset's."""
    out, summary = collected
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out / "minari"))
    info = summary["datasets"]
    for key in ("transitions", "episodes", "terminations", "truncations"):
        assert info["medium-expert"][key] == info["medium"][key] + info["expert"][key], key
    both = load_minari_dataset(info["medium-expert"]["id"]).data
    medium = load_minari_dataset(info["medium"]["id"]).data
    expert = load_minari_dataset(info["expert"]["id"]).data
    n = medium.shape[0]
    for key in ("observation", "action", ("next", "reward"), ("next", "terminated")):
        assert torch.equal(both[key][:n], medium[key]), key
        assert torch.equal(both[key][n:], expert[key]), key


def test_datasets_load_with_scores_and_data(collected, monkeypatch):
    out, summary = collected
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out / "minari"))
    ref_min = summary["ref_min_score"]
    assert ref_min == pytest.approx(summary["reference"]["measured_random"])
    assert summary["ref_max_score"] == pytest.approx(HOPPER_EXPERT_REF)
    for kind, info in summary["datasets"].items():
        ds = load_minari_dataset(info["id"])
        data = ds.data
        present = set(data.keys(include_nested=True, leaves_only=True))
        assert all(k in present for k in TED_KEYS), kind
        assert ds.env_id == "Hopper-v5" and (ds.obs_dim, ds.action_dim) == (11, 3)
        # the stored env spec carries the collection's step limit (TINY: 60), not Gymnasium's 1000
        assert json.loads(ds.metadata["eval_env_spec"])["max_episode_steps"] == 60
        assert ds.ref_min_score == pytest.approx(ref_min)
        assert ds.ref_max_score == pytest.approx(HOPPER_EXPERT_REF)
        assert ds.num_transitions == info["transitions"]
        assert ds.num_episodes == info["episodes"]
        # not an all-zero dataset
        for key in ("observation", "action", ("next", "observation"), ("next", "reward")):
            assert data[key].abs().sum() > 0, (kind, key)
        assert data["action"].abs().max() <= 1.0
        done = data["next", "done"]
        assert torch.equal(done, data["next", "terminated"] | data["next", "truncated"])
        # every episode ends with exactly one done flag, at its last step
        ends = torch.nonzero(done.reshape(-1)).reshape(-1)
        assert len(ends) == info["episodes"] and ends[-1] == ds.num_transitions - 1
        # consecutive steps inside an episode chain next_obs -> obs
        inside = ~done.reshape(-1)[:-1]
        assert torch.allclose(
            data["next", "observation"][:-1][inside], data["observation"][1:][inside]
        )
        returns = torch.zeros(info["episodes"]).index_add_(
            0, data["episode"], data["next", "reward"].reshape(-1)
        )
        assert returns.mean().item() == pytest.approx(info["return_mean"], rel=1e-4, abs=1e-3)
    sizes = {k: d["transitions"] for k, d in summary["datasets"].items()}
    assert sizes["medium"] >= 150 and sizes["expert"] >= 120
    # medium-replay holds exactly what the buffer held at the medium point
    assert sizes["medium-replay"] == summary["medium"]["buffer_size"] == 200
    # time limits (60 steps) are truncations, falls are terminations; both must be present somewhere
    flags = {k: (d["terminations"], d["truncations"]) for k, d in summary["datasets"].items()}
    assert sum(t for t, _ in flags.values()) > 0 and sum(u for _, u in flags.values()) > 0


def test_recipe_loads_collected_dataset(collected, monkeypatch):
    from bdpo_utils import make_task_data

    out, summary = collected
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out / "minari"))
    with initialize_config_dir(config_dir=str(RECIPES / "config"), version_base="1.3"):
        cfg = compose(
            "config", overrides=["task=custom", "data.name=bdpo-local/hopper/medium-replay-v0"]
        )
    task = make_task_data(cfg)
    assert task.env_id == "Hopper-v5" and task.data.batch_size[0] == 200
    assert task.ref_max_score == pytest.approx(HOPPER_EXPERT_REF)
    with initialize_config_dir(config_dir=str(RECIPES / "config"), version_base="1.3"):
        cfg = compose("config", overrides=["task=hopper-local-expert"])
    assert cfg.loss.eta == 0.2 and cfg.loss.rho == 2.0
    assert make_task_data(cfg).data.batch_size[0] == summary["datasets"]["expert"]["transitions"]
    with initialize_config_dir(config_dir=str(RECIPES / "config"), version_base="1.3"):
        cfg = compose("config", overrides=["task=hopper-local-medium-expert"])
    assert cfg.loss.eta == 0.2 and cfg.loss.rho == 2.0
    n = summary["datasets"]["medium-expert"]["transitions"]
    assert make_task_data(cfg).data.batch_size[0] == n


def test_split_transitions_keeps_flags_and_closes_last_episode():
    from tensordict import TensorDict

    n = 7
    term = torch.tensor([0, 0, 1, 0, 0, 0, 0], dtype=torch.bool).unsqueeze(-1)
    trunc = torch.tensor([0, 0, 0, 0, 1, 0, 0], dtype=torch.bool).unsqueeze(-1)
    obs = torch.arange(n, dtype=torch.float32).unsqueeze(-1)
    data = TensorDict(
        {
            "observation": obs,
            "action": torch.zeros(n, 1),
            "next": {
                "observation": obs + 0.5,
                "reward": torch.ones(n, 1),
                "terminated": term,
                "truncated": trunc,
                "done": term | trunc,
            },
        },
        [n],
    )
    eps = collect_dataset.split_transitions(data)
    assert [len(e["rewards"]) for e in eps] == [3, 2, 2]
    assert eps[0]["terminations"].tolist() == [False, False, True]
    assert not eps[0]["truncations"].any()
    assert eps[1]["truncations"].tolist() == [False, True] and not eps[1]["terminations"].any()
    assert eps[2]["truncations"].tolist() == [False, True] and not eps[2]["terminations"].any()
    np.testing.assert_allclose(eps[0]["observations"][:, 0], [0, 1, 2, 2.5])


def test_choose_medium_first_snapshot_over_threshold_else_midpoint():
    snaps = [
        {"frames": f, "buffer_size": f, "eval_return": r, "actor": {}}
        for f, r in [(100, 50.0), (200, 400.0), (300, 350.0), (400, 900.0)]
    ]
    mid = {"frames": 250, "buffer_size": 250, "eval_return": 400.0, "actor": {}}
    pick = collect_dataset.choose_medium(snaps, mid, threshold=300.0, min_frames=0)
    assert (pick["frames"], pick["rule"]) == (200, "threshold")
    pick = collect_dataset.choose_medium(snaps, mid, threshold=300.0, min_frames=250)
    assert (pick["frames"], pick["rule"]) == (300, "threshold")
    pick = collect_dataset.choose_medium(snaps, mid, threshold=1000.0, min_frames=0)
    assert (pick["frames"], pick["rule"]) == (250, "midpoint")


def test_halfcheetah_collection(tmp_path):
    """The second env the issue names: HalfCheetah-v5 (17-D observations, 6-D actions, no terminations)."""
    cfg = _cfg(
        *TINY,
        "env.id=HalfCheetah-v5",
        f"output_dir={tmp_path / 'minari'}",
        f"run_dir={tmp_path / 'run'}",
    )
    summary = collect_dataset.collect(cfg)
    ids = sorted(d["id"] for d in summary["datasets"].values())
    assert ids == sorted(
        f"bdpo-local/halfcheetah/{k}-v0"
        for k in ("expert", "medium", "medium-replay", "medium-expert")
    )
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "minari")
    try:
        data = load_minari_dataset("bdpo-local/halfcheetah/medium-replay-v0")
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = before
    assert (data.obs_dim, data.action_dim) == (17, 6)
    assert data.ref_max_score == pytest.approx(12135.0)  # D4RL's halfcheetah expert reference
    assert not data.data[
        "next", "terminated"
    ].any()  # HalfCheetah never terminates: only truncations
    assert data.data["action"].abs().sum() > 0


@pytest.mark.parametrize(
    "override,match",
    [
        ("env.id=Swimmer-v5", "D4RL has no reference returns for Swimmer-v5"),
        ("env.id=NoSuchEnv-v0", "env.id=NoSuchEnv-v0 is not a Gymnasium environment"),
        (
            "datasets=[foo]",
            r"datasets must be a list of medium, medium-replay, expert, medium-expert .got \[.foo.\]",
        ),
        ("medium.reference=best", "medium.reference must be"),
    ],
)
def test_settings_errors_come_before_any_training(tmp_path, override, match):
    cfg = _cfg(*TINY, f"output_dir={tmp_path / 'minari'}", f"run_dir={tmp_path / 'run'}", override)
    with pytest.raises(collect_dataset.CollectError, match=match):
        collect_dataset.collect(cfg)
    assert not (tmp_path / "run" / "medium_actor.pt").exists()


def test_only_medium_expert_still_rolls_out_both_policies(tmp_path):
    cfg = _cfg(
        *TINY,
        "datasets=[medium-expert]",
        f"output_dir={tmp_path / 'minari'}",
        f"run_dir={tmp_path / 'run'}",
    )
    summary = collect_dataset.collect(cfg)
    assert list(summary["datasets"]) == ["medium-expert"]
    assert summary["datasets"]["medium-expert"]["transitions"] >= 150 + 120
    assert not (tmp_path / "minari" / "bdpo-local" / "hopper" / "medium-v0").exists()


def test_the_step_limit_holds_beyond_gymnasiums_own():
    """env.max_episode_steps above the registered limit (HalfCheetah: 1000) lengthens the
    episodes, as it does for the random reference's rollouts."""
    env = collect_dataset.make_env("HalfCheetah-v5", 1005, reward_sum=False)
    env.set_seed(0)
    td = env.rollout(1010, break_when_any_done=True)
    env.close()
    assert td.shape[-1] == 1005
    assert td["next", "truncated"][-1].all() and not td["next", "terminated"].any()


def _tiny_sac():
    cfg = _cfg(*TINY)
    env = collect_dataset.make_env("Hopper-v5", 60)
    torch.manual_seed(0)
    _, loss = collect_dataset.make_sac(cfg, env)
    data = env.rollout(64, break_when_any_done=False).select(*TED_KEYS)
    env.close()
    return loss, data


def test_update_moves_every_parameter_and_the_targets_by_tau():
    loss, data = _tiny_sac()
    step = collect_dataset.make_update(loss, lr=1e-3, tau=0.25)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    step(data)
    after = loss.state_dict()
    learned = [k for k in before if not k.startswith("target_") and "_params" in k]
    assert learned and all(not torch.equal(before[k], after[k]) for k in learned)
    assert not torch.equal(before["log_alpha"], after["log_alpha"])
    # the target critics moved a quarter of the way to the (updated) critics
    for k in before:
        if k.startswith("target_qvalue_network_params"):
            src = k.replace("target_", "", 1)
            torch.testing.assert_close(after[k], 0.75 * before[k] + 0.25 * after[src])


def test_compiled_update_equals_eager():
    import copy

    import torch._inductor.config as inductor_config

    loss, data = _tiny_sac()
    twin = copy.deepcopy(loss)
    eager = collect_dataset.make_update(loss, lr=1e-3, tau=0.05)
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        compiled = collect_dataset.make_update(twin, lr=1e-3, tau=0.05, compile=True)
        for i in range(3):
            torch.manual_seed(i)
            eager(data)
            torch.manual_seed(i)
            compiled(data)
    torch._dynamo.reset()
    a, b = loss.state_dict(), twin.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_collect_report_json_table_and_plot(collected, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import collect_report

    out, summary = collected
    rep = collect_report.report(json.loads((out / "run" / "summary.json").read_text()))
    assert list(rep["datasets"]) == ["medium-replay", "medium", "medium-expert", "expert"]
    assert [e["env_steps"] for e in rep["learning_curve"]["evaluations"]] == [200, 400]
    assert len(rep["learning_curve"]["train_episodes"]) == len(summary["train_episodes"])
    rows = collect_report.table(rep).splitlines()
    assert len(rows) == 2 + 4 and "bdpo-local/hopper/medium-expert-v0" in rows[4]
    import matplotlib.pyplot as plt

    open_before = set(plt.get_fignums())
    collect_report.plot(rep, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert set(plt.get_fignums()) <= open_before  # the figure is closed
