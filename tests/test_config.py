"""The recipes' settings: strict types, one-line errors before torch loads, and ``--help``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(RECIPES))

from bdpo_config import ConfigError, validate_collect_config, validate_config  # noqa: E402

TASKS = sorted(p.stem for p in (RECIPES / "config" / "task").glob("*.yaml"))


def _cfg(*overrides: str, config: str = "config"):
    directory = RECIPES / ("config" if config == "config" else "config_collect")
    with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
        return compose(config, overrides=list(overrides))


def _leaves(cfg) -> list[str]:
    out: list[str] = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg), "")
    return out


@pytest.mark.parametrize("task", TASKS)
def test_every_task_file_fits_the_schema(task):
    extra = ["data.name=bdpo-test/hopper/random-v0"] if task == "custom" else []
    validate_config(_cfg(f"task={task}", *extra))


def test_the_collector_defaults_fit_the_schema():
    validate_collect_config(_cfg(config="collect"))


def test_the_d4rl_grade_collector_settings_fit_the_schema():
    """config_collect/d4rl.yaml: collect.yaml plus the settings of the D4RL-grade run."""
    cfg = _cfg(config="d4rl")
    validate_collect_config(cfg)
    assert set(_leaves(cfg)) == set(_leaves(_cfg(config="collect")))
    assert cfg.train.total_frames == 200_000 and cfg.medium.reference == "final"
    assert list(cfg.datasets) == ["medium", "medium-replay", "expert", "medium-expert"]
    assert cfg.reference.expert == "d4rl" and cfg.sac.compile is False


@pytest.mark.parametrize(
    "override,match",
    [
        # booleans are true or false, nothing else
        ("compile=no", r"compile must be true or false \(got 'no'\)"),
        ("eval.env=off", r"eval.env must be true or false \(got 'off'\)"),
        ("diffusion.clip_sample=off", r"diffusion.clip_sample must be true or false"),
        ("resume=maybe", r"resume must be true or false \(got 'maybe'\)"),
        ("loss.stratified_steps=1", r"loss.stratified_steps must be true or false \(got 1\)"),
        ("data.download=yes", r"data.download must be true or false \(got 'yes'\)"),
        # integers are not booleans
        ("optim.train_steps=true", r"optim.train_steps must be an integer \(got true\)"),
        ("optim.batch_size=2.5", r"optim.batch_size must be an integer \(got 2.5\)"),
        ("optim.actor_lr_decay_steps=0", r"optim.actor_lr_decay_steps must be >= 1 \(got 0\)"),
        # overrides that nothing reads
        ("+foo=1", r"foo is not a setting \(nothing reads it; settings of the top level: "),
        ("+loss.temperature=2", r"loss.temperature is not a setting .*settings of loss: "),
        ("~loss.gamma", r"loss.gamma is missing"),
        # the actor must get to train
        ("optim.value_warmup_steps=5000", r"value_warmup_steps \(5000\) must be < optim.train_"),
        # the 2D tasks are bandits: no next state for the paper-era penalty placement
        ("loss.penalty_placement=outside", r"loss.penalty_placement=outside needs next states"),
        # finite numbers
        ("loss.eta=inf", r"loss.eta must be a finite number \(got inf\)"),
        ("loss.rho=nan", r"loss.rho must be a finite number \(got nan\)"),
        ("optim.critic_lr=inf", r"optim.critic_lr must be a finite number"),
        ("optim.actor_lr=nan", r"optim.actor_lr must be a finite number"),
        ("optim.behavior_lr=-inf", r"optim.behavior_lr must be a finite number"),
        # devices and seeds
        ("device=meta", r"device=meta holds no data"),
        ("device=tpu", r"device must be cpu, cuda, cuda:<index>, auto, mps or xpu \(got 'tpu'\)"),
        ("seed=4294967296", r"seed must be in 0 .. 2\*\*32 - 1 \(got 4294967296\)"),
        ("seed=-1", r"seed must be in 0 .. 2\*\*32 - 1 \(got -1\)"),
        # choices and strings
        ("data.domain=moon", r"data.domain must be one of locomotion, antmaze, toy2d, custom"),
        ("logger.project=7", r"logger.project must be a string"),
        ("precision=fp16", r"precision must be one of fp32, bf16 \(got 'fp16'\)"),
    ],
)
def test_wrong_settings_are_one_line_errors(override, match):
    with pytest.raises(ConfigError, match=match) as info:
        validate_config(_cfg("task=toy2d-8gaussians-cpu", override))
    assert "\n" not in str(info.value)


def test_2d_datasets_are_bandits_whatever_the_domain_says():
    cfg = _cfg(
        "task=custom", "data.name=toy2d-moons", "loss.eta=0.1", "loss.rho=0",
        "loss.penalty_placement=outside",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="loss.penalty_placement=outside needs next states"):
        validate_config(cfg)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        validate_config(_cfg("compile=no", "loss.eta=inf", "+foo=1"))
    message = str(info.value)
    assert "compile must be" in message and "loss.eta must be" in message
    assert "foo is not a setting" in message


def test_valid_edge_values_are_accepted():
    # pre-training only: no actor, so no warm-up rule; 2e3 is an integer written as a float
    cfg = _cfg("optim.train_steps=0", "optim.pretrain_steps=2e3", "seed=4294967295")
    validate_config(cfg)
    assert cfg.optim.pretrain_steps == 2000 and type(cfg.optim.pretrain_steps) is int
    validate_config(_cfg("compile=true", "data.download=false", "device=cuda:1", "device=auto"))


@pytest.mark.parametrize(
    "override,match",
    [
        ("progress=no", r"progress must be true or false"),
        ("overwrite=1", r"overwrite must be true or false"),
        ("sac.lr=inf", r"sac.lr must be a finite number"),
        ("train.total_frames=true", r"train.total_frames must be an integer"),
        ("reference.expert=best", r"reference.expert must be d4rl \| final \| <number>"),
        ("reference.random=final", r"reference.random must be measured \| d4rl \| <number>"),
        ("+sac.entropy=1", r"sac.entropy is not a setting"),
        ("seed=4294967296", r"seed must be in 0 .. 2\*\*32 - 1"),
        # the collector rounds total_frames up to whole batches: more than the buffer holds
        (
            "train.total_frames=75050",
            r"train.total_frames \(75050\) must be a multiple of train.frames_per_batch \(100\)",
        ),
    ],
)
def test_wrong_collector_settings_are_one_line_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        validate_collect_config(_cfg(override, config="collect"))


def test_unavailable_devices_are_one_line_errors():
    from bdpo_utils import set_threads_and_device

    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="device=mps .* this machine has no MPS device"):
            set_threads_and_device(_cfg("device=mps"))
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        with pytest.raises(ConfigError, match="device=xpu .* this machine has no XPU device"):
            set_threads_and_device(_cfg("device=xpu"))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match="device=cuda:99 was asked for but this machine has"):
        set_threads_and_device(_cfg("device=cuda:99"))
    if count:
        assert set_threads_and_device(_cfg("device=cuda:0")) == torch.device("cuda", 0)
    assert set_threads_and_device(_cfg("device=cpu")) == torch.device("cpu")


def test_missing_d4rl_data_names_the_recipe_settings(tmp_path, monkeypatch):
    import torchrl.data.datasets.d4rl as torchrl_d4rl
    from bdpo_utils import make_task_data

    from torchrl_bdpo.data import DatasetUnavailableError

    cfg = _cfg("task=hopper-medium-v2", f"data.d4rl_root={tmp_path}", "data.download=false")
    with pytest.raises(DatasetUnavailableError) as info:
        make_task_data(cfg)
    message = str(info.value)
    assert message.startswith("D4RL dataset 'hopper-medium-v2' is not available: there is no ")
    assert "data.download=false" in message and "data.d4rl_root=" in message
    assert "data.path=" in message and "hopper_medium-v2.hdf5" in message  # D4RL's own file
    assert str(tmp_path / "hopper-medium-v2") in message
    assert not re.search(r"(?<![_.])root=", message), "names the library's argument"
    assert "\n" not in message and len(message) < 400, len(message)

    def no_network(url, directory):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchrl_d4rl, "_download_dataset_from_url", no_network)
    with pytest.raises(DatasetUnavailableError) as info:
        make_task_data(_cfg("task=hopper-medium-v2", f"data.d4rl_root={tmp_path}"))
    message = str(info.value)
    assert "download failed" in message and "name resolution" in message
    assert "data.d4rl_root=" in message and not re.search(r"(?<![_.])root=", message)
    assert len(message) < 400, len(message)


# ------------------------------------------------------------------ the scripts themselves
_DRIVER = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


def _script(name: str, *args: str) -> tuple[int, str, bool]:
    """Runs a recipe script: exit code, its output (stdout + stderr), whether torch was loaded."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(RECIPES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    output = proc.stdout + proc.stderr
    marker = re.search(r"torch imported: (True|False)", output)
    assert marker, output[-2000:]
    return proc.returncode, output.replace(marker.group(0), "").strip(), marker.group(1) == "True"


@pytest.mark.parametrize(
    "override", ["compile=no", "optim.train_steps=true", "+foo=1", "loss.eta=inf", "seed=-1"]
)
def test_a_config_error_exits_2_in_one_line_before_torch_loads(tmp_path, override):
    code, output, torch_loaded = _script(
        "bdpo_offline.py", override, f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert code == 2, output
    assert len(output.splitlines()) == 1 and "Invalid configuration" in output, output
    assert "Traceback" not in output
    assert not torch_loaded, "the settings must be checked before torch is imported"


def test_collector_config_error_exits_2_before_torch_loads(tmp_path):
    code, output, torch_loaded = _script("collect_dataset.py", "progress=no", f"run_dir={tmp_path}")
    assert code == 2 and len(output.splitlines()) == 1, output
    assert "progress must be true or false" in output and not torch_loaded


def test_recipe_help_lists_every_setting_with_its_meaning(tmp_path):
    code, output, torch_loaded = _script("bdpo_offline.py", "task=hopper-medium-v2", "--help")
    assert code == 0 and not torch_loaded, output
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\S+?)=\S*\s+(.+)$", output, re.M)}
    assert set(_leaves(_cfg("task=hopper-medium-v2"))) <= set(lines), output
    for key, words in {
        "loss.penalty_placement": ("inside", "outside", "authors' code", "paper"),
        "loss.aggregation": ("lcb", "mean", "min", "rho"),
        "loss.stratified_steps": ("true", "false", "n ~ U{1..N}"),
        "data.download": ("null", "true", "false", "Minari"),
        "loss.error_reduction": ("mean", "sum"),
        "compile_mode": ("reduce-overhead", "max-autotune"),
    }.items():
        assert all(w in lines[key] for w in words), (key, lines[key])
    # the values shown are the chosen task's, and the tasks are listed
    assert re.search(r"^\s+loss\.eta=0\.2\s", output, re.M)
    assert "toy2d-8gaussians-cpu" in output and "walker2d-medium-v2" in output


def test_collector_help_lists_every_setting_with_its_meaning():
    code, output, torch_loaded = _script("collect_dataset.py", "--help")
    assert code == 0 and not torch_loaded, output
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\S+?)=\S*\s+(.+)$", output, re.M)}
    assert set(_leaves(_cfg(config="collect"))) <= set(lines), output
    assert all(w in lines["medium.reference"] for w in ("expert", "final"))
    assert all(w in lines["rollouts.exploration"] for w in ("random", "deterministic"))


def test_collector_help_shows_the_d4rl_config_values():
    code, output, torch_loaded = _script("collect_dataset.py", "--config-name", "d4rl", "--help")
    assert code == 0 and not torch_loaded, output
    assert re.search(r"^\s+train\.total_frames=200000\s", output, re.M), output
    assert "--config-name d4rl" in output


def test_help_shows_unset_settings_as_missing():
    from bdpo_config import RecipeSettings, settings_help

    text = settings_help(RecipeSettings, _cfg("task=custom"))
    assert re.search(r"^\s+data\.name=\?\?\?\s", text, re.M), text
    assert re.search(r"^\s+loss\.eta=0\.2\s", text, re.M)
