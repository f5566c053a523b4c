"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Using the parts") :]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_using_the_parts_example_runs():
    code = _python_blocks()[0]
    namespace = {}  # the example defines everything it uses, obs_dim and act_dim included
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    loss = namespace["loss"]
    obs_dim, act_dim = namespace["obs_dim"], namespace["act_dim"]
    batch = TensorDict(
        {
            "observation": torch.randn(4, obs_dim),
            "action": torch.rand(4, act_dim) * 2 - 1,
            "next": {
                "observation": torch.randn(4, obs_dim),
                "reward": torch.randn(4, 1),
                "terminated": torch.zeros(4, 1, dtype=torch.bool),
            },
        },
        [4],
    )
    out = loss(batch)
    assert torch.isfinite(out["loss_qvalue"]) and torch.isfinite(out["loss_actor"])
    for updater in ("critic_ema", "actor_ema", "behavior_ema"):
        namespace[updater].step()


def test_rollout_example_runs_on_a_plain_gym_env():
    """The ``env.rollout`` example: a MuJoCo GymEnv (float64 observations) behind DoubleToFloat."""
    pytest.importorskip("mujoco")
    imports, rollout_code = _python_blocks()[:2]
    namespace = {"obs_dim": 11, "act_dim": 3}
    exec(compile(imports, "README.md", "exec"), namespace)  # noqa: S102
    exec(compile(rollout_code, "README.md", "exec"), namespace)  # noqa: S102
    env, rollout = namespace["env"], namespace["rollout"]
    assert env.base_env.observation_spec["observation"].dtype == torch.float64
    assert rollout["observation"].dtype == torch.float32
    assert rollout["observation"].shape[-1] == 11 and rollout["action"].shape[-1] == 3
    actions = rollout["action"]
    assert actions.shape[0] >= 1 and actions.abs().max() <= 1.0
    # noise-free chains from x_N = 0: the same observations give the same actions
    actor = namespace["actor"]
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    with set_exploration_type(ExplorationType.DETERMINISTIC):
        again = actor(rollout.select("observation").clone())["action"]
    torch.testing.assert_close(again, actions)
    env.close()
