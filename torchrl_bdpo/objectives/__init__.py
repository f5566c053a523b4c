"""BDPO's losses and target updaters."""

from torchrl_bdpo.objectives.bdpo import BDPOLoss
from torchrl_bdpo.objectives.behavior import noise_prediction_error
from torchrl_bdpo.objectives.config import BDPOLossConfig
from torchrl_bdpo.objectives.target_updaters import GroupSoftUpdate

__all__ = [
    "BDPOLoss",
    "BDPOLossConfig",
    "GroupSoftUpdate",
    "noise_prediction_error",
]
