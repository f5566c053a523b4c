"""The run directory's life cycle: refusals, the lock, verified checkpoints, resume, no debris."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchrl_bdpo.checkpoint import (
    CheckpointStore,
    read_checkpoint,
    state_checksum,
    write_checkpoint,
)
from torchrl_bdpo.data import DatasetUnavailableError

pytestmark = pytest.mark.slow  # end to end: excluded from the unit loop (-m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(RECIPES))

import bdpo_offline  # noqa: E402
from bdpo_utils import ConfigError  # noqa: E402
from run_dir import RunDirectory, RunDirError  # noqa: E402
from test_recipe import TINY, _cfg, _Interrupting, _toy  # noqa: E402

INTERVAL = ("checkpoint.interval=7",)  # checkpoints at 7, 14, then 17 when interrupted


def _load(path: Path) -> dict:
    return read_checkpoint(path)


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``run_dir``: its bytes and modification time."""
    return {
        str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def _assert_same_parameters(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key, value in a["loss"].items():
        torch.testing.assert_close(b["loss"][key], value, rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The final checkpoint of an uninterrupted tiny 2D run."""
    run_dir = tmp_path_factory.mktemp("straight")
    bdpo_offline.run(_toy(*INTERVAL), run_dir)
    return _load(run_dir / "checkpoints" / "latest.torchrl")


def _interrupted(run_dir: Path, *extra: str) -> None:
    with pytest.raises(bdpo_offline.Interrupted):
        bdpo_offline.run(_toy(*INTERVAL, *extra), run_dir, trainer_cls=_Interrupting)


# --------------------------------------------------------------------------- refusals
def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    bdpo_offline.run(_toy(), tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(
        RunDirError,
        match=rf"{tmp_path} already holds a run .*resume=true.*hydra\.run\.dir=.*overwrite=true",
    ):
        bdpo_offline.run(_toy(), tmp_path)
    assert _snapshot(tmp_path) == before  # nothing rewritten, the finished run is intact
    with pytest.raises(RunDirError, match="choose one"):
        bdpo_offline.run(_toy("resume=true", "overwrite=true"), tmp_path)

    only_summary = tmp_path / "summary_only"
    only_summary.mkdir()
    (only_summary / "summary.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"already holds a run \(summary\.json\)"):
        bdpo_offline.run(_toy(), only_summary)

    (tmp_path / "logs" / "stale.csv").write_text("from the old run\n")
    bdpo_offline.run(_toy("overwrite=true", "optim.train_steps=10"), tmp_path)
    assert not (tmp_path / "logs" / "stale.csv").exists()
    assert _load(tmp_path / "checkpoints" / "latest.torchrl")["step"] == 30


def test_one_process_per_run_directory(tmp_path):
    bdpo_offline.run(_toy(), tmp_path)
    before = _snapshot(tmp_path)
    with open(tmp_path / ".lock") as held:  # another process's lock (flock: per open file)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for extra in ((), ("resume=true",), ("overwrite=true",)):
            with pytest.raises(RunDirError, match=rf"{tmp_path} is in use by another process"):
                bdpo_offline.run(_toy(*extra), tmp_path)
    assert _snapshot(tmp_path) == before


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from run_dir import RunDirectory;"
        "rd = RunDirectory(Path(sys.argv[2]), resume=False, overwrite=False); rd.open();"
        "rd.begin(__import__('omegaconf').OmegaConf.create({})); print('locked', flush=True);"
        "time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(RECIPES), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by another process \(pid {proc.pid}\)"):
            RunDirectory(tmp_path, resume=False, overwrite=False).open()
    finally:
        proc.kill()  # kill -9: no clean-up code runs in the holder
        proc.wait(timeout=30)
    rd = RunDirectory(tmp_path, resume=False, overwrite=False)
    rd.open()  # the OS released the lock with the process
    rd.close()


# ------------------------------------------------------------------------- checkpoints
class _PoisonedOptimizer(bdpo_offline.BDPOTrainer):
    """Adam's first moment of one critic parameter becomes NaN just before the checkpoint at 30."""

    def save_checkpoint(self):
        if self.step == 30:
            state = self.opts["critic"].state[self.opts["critic"].param_groups[0]["params"][0]]
            state["exp_avg"].fill_(float("nan"))
        return super().save_checkpoint()


def test_only_finite_checkpoints_are_written_and_the_last_two_are_kept(tmp_path):
    with pytest.raises(
        bdpo_offline.NumericalError,
        match=r"non-finite at update 30 \(optimizers\.critic\.state\..*exp_avg\); no checkpoint "
        r"was written and the last good checkpoint, .*latest\.torchrl \(update 20\), is intact",
    ):
        bdpo_offline.run(
            _toy("checkpoint.interval=10", "eval.interval=100"),
            tmp_path,
            trainer_cls=_PoisonedOptimizer,
        )
    latest = _load(tmp_path / "checkpoints" / "latest.torchrl")
    previous = _load(tmp_path / "checkpoints" / "previous.torchrl")
    assert (latest["step"], previous["step"]) == (20, 10)
    for state in (latest, previous):
        assert all(torch.isfinite(v).all() for v in state["loss"].values())
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


class _PoisonedAtStart(bdpo_offline.BDPOTrainer):
    """The behavior network's parameters are NaN from the first update on."""

    def train_step(self):
        if self.step == 0:
            with torch.no_grad():
                for p in self.opts["behavior"].param_groups[0]["params"]:
                    p.fill_(float("nan"))
        return super().train_step()


def test_a_fault_before_the_first_checkpoint_names_no_checkpoint(tmp_path):
    with pytest.raises(bdpo_offline.NumericalError) as info:
        bdpo_offline.run(_toy("checkpoint.interval=10"), tmp_path, trainer_cls=_PoisonedAtStart)
    assert "non-finite at update 1." in str(info.value)  # the first update
    assert "no checkpoint was written" in str(info.value) and "intact" not in str(info.value)
    assert not list((tmp_path / "checkpoints").iterdir())


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _drop_an_entry(path: Path) -> None:
    state = _load(path)
    del state["optimizers"]
    state["checksum"] = state_checksum(state)  # consistent, but incomplete
    path.unlink()
    write_checkpoint(path, state)


DAMAGE = {
    "bit_flip": _flip_a_bit,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "incomplete": _drop_an_entry,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, straight, caplog, damage):
    _interrupted(tmp_path)
    latest = tmp_path / "checkpoints" / "latest.torchrl"
    assert (
        _load(latest)["step"],
        _load(tmp_path / "checkpoints" / "previous.torchrl")["step"],
    ) == (
        17,
        14,
    )
    DAMAGE[damage](latest)
    with caplog.at_level(logging.WARNING):
        bdpo_offline.run(_toy(*INTERVAL, "resume=true"), tmp_path)
    assert "latest.torchrl" in caplog.text and "resuming from" in caplog.text
    assert "previous.torchrl" in caplog.text
    # replayed from update 14: the same parameters as the uninterrupted run
    _assert_same_parameters(straight, _load(latest))


def test_no_usable_checkpoint_stops_with_one_line(tmp_path):
    _interrupted(tmp_path)
    _flip_a_bit(tmp_path / "checkpoints" / "latest.torchrl")
    (tmp_path / "checkpoints" / "previous.torchrl").write_bytes(b"")
    before = _snapshot(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"No usable checkpoint in .*latest\.torchrl: .*previous\.torchrl: empty file",
    ):
        bdpo_offline.run(_toy(*INTERVAL, "resume=true"), tmp_path)
    assert _snapshot(tmp_path) == before


def test_checkpoint_store_verifies_what_it_writes_and_reads(tmp_path):
    store = CheckpointStore(tmp_path, required=("step",))
    store.save({"step": 1, "w": torch.ones(3)})
    store.save({"step": 2, "w": torch.full((3,), 2.0)})
    state, path = store.load()
    assert (state["step"], path.name) == (2, "latest.torchrl")
    # content that reads back but is not what was written: the checksum catches it
    state["w"][1] = 2.0000002
    store.latest.unlink()
    write_checkpoint(store.latest, state)
    with pytest.raises(Exception, match="checksum mismatch"):
        store.verify(store.latest)
    state, path = CheckpointStore(tmp_path, required=("step",)).load()
    assert (state["step"], path.name) == (1, "previous.torchrl")
    # a flipped byte in a tensor's payload: the archive's CRC catches it on reading
    store = CheckpointStore(tmp_path / "b", required=("step",))
    store.save({"step": 1, "w": torch.ones(3)})
    store.save({"step": 2, "w": torch.full((3,), 2.0)})
    data = bytearray(store.latest.read_bytes())
    data[data.index(torch.full((3,), 2.0).numpy().tobytes()) + 5] ^= 0x01
    store.latest.write_bytes(bytes(data))
    with pytest.raises(Exception, match="unreadable"):
        store.verify(store.latest)
    state, path = CheckpointStore(tmp_path / "b", required=("step",)).load()
    assert (state["step"], path.name) == (1, "previous.torchrl")


def test_checkpoints_of_version_0_1_still_resume(tmp_path):
    """``latest.pt`` (``torch.save``, Python/NumPy/torch random states): read, verified, and
    its random state converted to TorchRL's ``GlobalRNGState`` layout."""
    import random

    import numpy as np
    from torchrl.checkpoint import GlobalRNGState

    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    state = {"step": 5, "w": torch.ones(2), "rng": rng}
    state["checksum"] = state_checksum(state)
    torch.save(state, tmp_path / "latest.pt")
    store = CheckpointStore(tmp_path, required=("step", "rng"))
    assert store.exists()
    loaded, path = store.load()
    assert (loaded["step"], path.name) == (5, "latest.pt")
    torch.manual_seed(123)
    GlobalRNGState().load_state_dict(loaded["rng"])
    assert torch.equal(torch.get_rng_state(), rng["torch"])
    store.save({"step": 6, "w": torch.ones(2), "rng": GlobalRNGState().state_dict()})
    assert store.load()[1].name == "latest.torchrl"  # newer files win


def test_checkpoints_follow_the_umask_and_leftover_temp_files_are_removed(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    leftovers = [ckpt / ".latest.torchrl.abc123.tmp", tmp_path / ".summary.json.99.tmp"]
    for p in leftovers:
        p.write_bytes(b"half a file")
    # what a killed TorchRL checkpoint write leaves: its staging directory and archive
    stage = ckpt / ".latest.torchrl.abc123.tmp.stage-0f"
    (stage / "components").mkdir(parents=True)
    leftovers += [stage, ckpt / ".latest.torchrl.abc123.tmp.archive-0f"]
    leftovers[-1].write_bytes(b"half an archive")
    old = os.umask(0o027)
    try:
        bdpo_offline.run(_toy(), tmp_path)
    finally:
        os.umask(old)
    assert not any(p.exists() for p in leftovers)
    for name in ("checkpoints/latest.torchrl", "checkpoints/previous.torchrl", "summary.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


# ------------------------------------------------------------------------------ resume
def test_checkpoints_written_before_a_setting_existed_compare_as_its_old_value():
    from run_dir import config_differences

    saved = {"critic": {"num_members": 3}, "data": {"name": "x"}}
    now = {
        "critic": {"num_members": 3, "v_step_hidden": [128, 64]},
        "data": {"name": "x", "max_episode_steps": None},
    }
    assert config_differences(saved, now) == []
    now["critic"]["v_step_hidden"] = [64, 64]
    assert config_differences(saved, now) == [
        "critic.v_step_hidden: checkpoint [128, 64] vs now [64, 64]"
    ]


def test_resume_refuses_other_data(tmp_path, monkeypatch):
    _interrupted(tmp_path)
    load = bdpo_offline.make_task_data

    def other_data(cfg):
        task = load(cfg)
        task.data["next", "reward"][0] += 1.0  # one reward of 2000 changed
        return task

    monkeypatch.setattr(bdpo_offline, "make_task_data", other_data)
    with pytest.raises(ConfigError, match=r"not the one the run started with \(its sample_sha256"):
        bdpo_offline.run(_toy(*INTERVAL, "resume=true"), tmp_path)


def test_resume_accepts_settings_that_do_not_change_the_math(tmp_path, straight):
    _interrupted(tmp_path)
    with pytest.raises(ConfigError, match=r"optim\.batch_size: checkpoint 32 vs now 16"):
        bdpo_offline.run(_toy(*INTERVAL, "resume=true", "optim.batch_size=16"), tmp_path)
    harmless = ("checkpoint.interval=4", "logger.log_interval=3", "logger.backend=none")
    harmless += ("eval.episodes=3", "compile_mode=max-autotune", "compile_scope=losses")
    bdpo_offline.run(_toy("resume=true", *harmless), tmp_path)
    _assert_same_parameters(straight, _load(tmp_path / "checkpoints" / "latest.torchrl"))
    # the evaluation cadence and the threads are accepted too (the results may then differ)
    _interrupted(tmp_path / "other")
    bdpo_offline.run(_toy("resume=true", "eval.interval=15", "threads=2"), tmp_path / "other")
    assert _load(tmp_path / "other" / "checkpoints" / "latest.torchrl")["step"] == 40


# ------------------------------------------------------------------- one clear line
def test_run_directory_problems_are_one_line(tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(RunDirError, match=rf"{a_file} \(the run directory\) is a file"):
        bdpo_offline.run(_toy(), a_file)
    with pytest.raises(RunDirError, match=r"a parent of the run directory .* is a file"):
        bdpo_offline.run(_toy(), a_file / "run")

    (tmp_path / "run" / "checkpoints").parent.mkdir()
    (tmp_path / "run" / "checkpoints").write_text("")
    with pytest.raises(RunDirError, match=r"run/checkpoints is a file"):
        bdpo_offline.run(_toy(), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", read_only)
        with pytest.raises(RunDirError, match=r"Cannot create the run directory .*Read-only file"):
            bdpo_offline.run(_toy(), tmp_path / "new")


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import torchrl_bdpo.checkpoint as checkpoint

    save = checkpoint.write_checkpoint
    calls = []

    def save_until_full(path, state):
        calls.append(1)
        if len(calls) > 2:  # the third checkpoint does not fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(path, state)

    monkeypatch.setattr(checkpoint, "write_checkpoint", save_until_full)
    with pytest.raises(
        RunDirError, match=rf"Cannot write in the run directory {tmp_path}: No space"
    ):
        bdpo_offline.run(_toy("checkpoint.interval=10"), tmp_path)
    monkeypatch.setattr(checkpoint, "write_checkpoint", save)
    assert _load(tmp_path / "checkpoints" / "latest.torchrl")["step"] == 20
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert RunDirError in bdpo_offline.USER_ERRORS  # exit code 2, no traceback


@pytest.mark.parametrize(
    "overrides,error",
    [
        (("loss.eta=0",), ConfigError),
        (("task=custom", "data.name=bdpo-test/nothing/random-v0"), DatasetUnavailableError),
        (("device=cuda",), ConfigError),
    ],
)
def test_a_failed_start_leaves_no_directory(tmp_path, overrides, error):
    if "device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = _cfg(*overrides, *TINY) if overrides[0] == "task=custom" else _toy(*overrides)
    with pytest.raises(error):
        bdpo_offline.run(cfg, tmp_path / "runs" / "a")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(error):  # an existing (empty) directory is left as it was
        bdpo_offline.run(cfg, tmp_path)
    assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []


def test_a_failed_start_keeps_unrelated_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        bdpo_offline.run(_toy("loss.eta=0"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -------------------------------------------------------------------------- the CLI
CLI_TOY = [
    *TINY,
    "data.toy2d_size=2000",
    "diffusion.num_steps=4",
    "optim.pretrain_steps=10",
    "optim.train_steps=10",
    "optim.value_warmup_steps=2",
    "eval.interval=5",
    "checkpoint.interval=5",
    "eval.toy2d_samples=200",
]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(RECIPES / "bdpo_offline.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]


def test_cli_resume_needs_only_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    proc = _cli(*CLI_TOY, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "bdpo_offline.log", "config.yaml"):
        assert (run_dir / name).is_file(), name
    final = _load(run_dir / "checkpoints" / "latest.torchrl")
    before = _snapshot(run_dir)

    refused = _cli("resume=true", f"hydra.run.dir={run_dir}", "loss.eta=0.1")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stdout + refused.stderr
    (line,) = _error_lines(refused)
    assert "loss.eta: run 0.05 vs now 0.1" in line
    assert _snapshot(run_dir) == before  # not even .hydra/ or the log file

    # an interrupted run: the last checkpoint is the one at update 15, no summary yet
    os.replace(
        run_dir / "checkpoints" / "previous.torchrl", run_dir / "checkpoints" / "latest.torchrl"
    )
    (run_dir / "summary.json").unlink()
    resumed = _cli("resume=true", f"hydra.run.dir={run_dir}", "logger.log_interval=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir / "summary.json")
    assert "Resumed from" in resumed.stdout + resumed.stderr
    _assert_same_parameters(final, _load(run_dir / "checkpoints" / "latest.torchrl"))
    assert (run_dir / ".hydra" / "overrides.yaml").read_bytes() == before[".hydra/overrides.yaml"][
        0
    ]


def test_cli_run_directory_problems_and_failed_starts(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    proc = _cli(*CLI_TOY, f"hydra.run.dir={a_file}")
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    (line,) = _error_lines(proc)
    assert f"{a_file} (the run directory) is a file" in line

    proc = _cli(*CLI_TOY, "loss.eta=0", f"hydra.run.dir={tmp_path}/runs/new")
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()  # no empty run directory left behind


def _spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(RECIPES / "bdpo_offline.py"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _signal_during_data_loading(tmp_path: Path, sig: signal.Signals) -> None:
    """Exit 128 + sig, one line naming it, no traceback, no run directory left."""
    run_dir = tmp_path / "runs" / "x"
    # data loading: 2M 2D points take seconds to draw; the lock shows the start was accepted
    proc = _spawn(*CLI_TOY, "data.toy2d_size=2000000", f"hydra.run.dir={run_dir}")
    end = time.time() + 120
    while not (run_dir / ".lock").exists():
        assert proc.poll() is None and time.time() < end, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in out + err and f"Interrupted ({sig.name})" in err
    assert not (tmp_path / "runs").exists()


def test_sigint_during_start_up_exits_130_without_a_traceback(tmp_path):
    _signal_during_data_loading(tmp_path, signal.SIGINT)
    run_dir = tmp_path / "runs" / "x"

    # importing torch and TorchRL; a SIGINT inside mujoco's C initialisation (imported by
    # TorchRL) once came out as "ImportError: initialization failed", exit code 1
    for delay in (1.0, 2.0, 2.5, 3.0):
        proc = _spawn(*CLI_TOY, f"hydra.run.dir={run_dir}-{delay}")  # a fast start may train
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in out + err, (delay, err[-2000:])
        assert "Error" not in err, (delay, err[-2000:])


def test_sigterm_during_start_up_exits_143_without_a_traceback(tmp_path):
    _signal_during_data_loading(tmp_path, signal.SIGTERM)


def test_a_stale_pid_is_not_named_as_the_lock_holder(tmp_path):
    """The holder writes its pid only once its start is accepted; until then the file may still
    hold a dead run's pid, which the refusal must not name."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    (tmp_path / ".lock").write_text(dead.stdout.decode().strip())
    with open(tmp_path / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunDirError, match=r"in use by another process: one process"):
            RunDirectory(tmp_path, resume=False, overwrite=False).open()


def test_resume_settings_come_from_the_run_directory(tmp_path):
    from omegaconf import OmegaConf
    from run_dir import resume_settings

    started = _cfg("task=custom", "data.name=my/data-v0", "loss.eta=0.5", "loss.rho=1", *TINY)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(started, resolve=True))
    choices = {"task": "toy2d-8gaussians-cpu", "hydra/launcher": "basic"}

    def resume(*overrides):
        cfg = _cfg("resume=true", *overrides)  # what `resume=true hydra.run.dir=<dir> ...` composes
        return resume_settings(cfg, tmp_path, ["resume=true", *overrides], choices)

    cfg = resume("hydra.run.dir=x", "threads=2", "logger.backend=none", "checkpoint.interval=9")
    assert (cfg.task_name, cfg.data.name, cfg.loss.eta, cfg.critic.num_members) == (
        "custom",
        "my/data-v0",
        0.5,
        3,
    )
    assert (cfg.threads, cfg.logger.backend, cfg.checkpoint.interval, cfg.resume) == (
        2,
        "none",
        9,
        True,
    )
    assert resume("loss.eta=0.5").loss.eta == 0.5  # restating a setting is no change
    with pytest.raises(RunDirError, match=r"loss\.eta: run 0\.5 vs now 0\.2; optim\.batch_size"):
        resume("loss.eta=0.2", "optim.batch_size=64")
    with pytest.raises(RunDirError, match=r"task: run 'custom' vs now 'hopper-medium-v2'"):
        resume("task=hopper-medium-v2")
    with pytest.raises(RunDirError, match=r"critic\.hidden_sizes: run \[16\] vs now"):
        resume("critic.hidden_sizes=[32]")
