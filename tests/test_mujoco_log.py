"""MuJoCo's warnings go to Python logging: no ``MUJOCO_LOG.TXT`` in the working directory."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

mujoco = pytest.importorskip("mujoco")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))


@pytest.fixture
def default_mujoco_handler(monkeypatch):
    """MuJoCo's own handler (writes ./MUJOCO_LOG.TXT) for the test; the previous one after it."""
    import mujoco_log

    monkeypatch.setattr(mujoco_log, "_seen", set())  # no message seen yet
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(None)
    yield
    mujoco.set_mju_user_warning(previous)


def test_eval_env_creation_leaves_no_mujoco_log(
    tmp_path, monkeypatch, caplog, capfd, default_mujoco_handler
):
    from bdpo_utils import make_eval_env

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="mujoco"):
        # HalfCheetah's model triggers a MuJoCo compiler warning (MuJoCo 4.0: settotalmass)
        make_eval_env("HalfCheetah-v5", 1, 10, 17).close()
        make_eval_env("HalfCheetah-v5", 1, 10, 17).close()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    records = [r for r in caplog.records if r.name == "mujoco"]
    messages = [r.getMessage() for r in records]
    assert "WARNING:" not in capfd.readouterr().out  # MuJoCo's own print is replaced too
    # each distinct message is a warning once, its repeats (every env built) debug lines
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert sorted(warned) == sorted(set(messages))


def test_route_keeps_a_handler_installed_by_the_user(default_mujoco_handler):
    from mujoco_log import route_mujoco_warnings

    def mine(message: str) -> None:
        pass

    mujoco.set_mju_user_warning(mine)
    assert route_mujoco_warnings() is True
    assert mujoco.get_mju_user_warning() is mine
