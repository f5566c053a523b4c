"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from tensordict import TensorDict

README = Path(__file__).resolve().parents[1] / "README.md"


def test_using_the_parts_example_runs():
    text = README.read_text()
    section = text[text.index("## Using the parts") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"obs_dim": 3, "act_dim": 2}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    loss = namespace["loss"]
    batch = TensorDict(
        {
            "observation": torch.randn(4, 3),
            "action": torch.rand(4, 2) * 2 - 1,
            "next": {
                "observation": torch.randn(4, 3),
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
