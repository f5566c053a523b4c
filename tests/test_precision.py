"""precision=bf16: the losses' forward passes under bfloat16 autocast stay close to float32."""

from __future__ import annotations

import pytest
import torch
from test_recipe import _toy, bdpo_offline  # test_recipe puts recipes/ on sys.path

pytestmark = pytest.mark.slow  # end to end: excluded from the unit loop (-m 'not slow')

#: Measured on the tiny toy settings below (40 updates, seeds 0-5, the recipe's block sampling,
#: the critics' output layers in float32, their first layers' features in bfloat16): the mean
#: relative deviation of the losses from float32 is 0.19-0.44 %, the largest single one 0.7-3.0 %
#: (a small V or actor loss late in the run); before those two changes 0.23-0.37 % and 1.2-4.3 %.
RTOL = 6e-2
MEAN_RTOL = 1e-2


def _losses(tmp_path, precision: str) -> list[dict[str, float]]:
    cfg = _toy(
        "optim.pretrain_steps=20",
        "optim.train_steps=20",
        "optim.value_warmup_steps=2",
        "optim.actor_update_period=2",
        f"precision={precision}",
    )
    trainer = bdpo_offline.BDPOTrainer(cfg, tmp_path / precision)
    out = []
    for _ in range(40):
        step = trainer.train_step()
        trainer.step += 1
        out.append({k: float(v) for k, v in step.items() if k.startswith("loss_")})
    for p in trainer.loss.parameters():  # master weights (and so Adam's state) stay float32
        assert p.dtype == torch.float32
    return out


def test_bf16_losses_track_fp32_and_weights_stay_fp32(tmp_path):
    fp32, low = _losses(tmp_path, "fp32"), _losses(tmp_path, "bf16")
    seen, deviations = set(), []
    for i, (a, b) in enumerate(zip(fp32, low)):
        assert a.keys() == b.keys(), i
        for key, value in a.items():
            seen.add(key)
            deviations.append(abs(b[key] - value) / abs(value))
            assert deviations[-1] <= RTOL, (i, key, value, b[key])
    assert sum(deviations) / len(deviations) <= MEAN_RTOL
    assert seen == {"loss_behavior", "loss_qvalue", "loss_value", "loss_actor"}
    # bfloat16 really ran: the values differ
    assert any(
        a["loss_qvalue"] != b["loss_qvalue"] for a, b in zip(fp32, low) if "loss_qvalue" in a
    )
