"""torchrl_bdpo: Behavior-Regularized Diffusion Policy Optimization on TorchRL."""

from torchrl_bdpo.modules import *  # noqa: F401,F403
from torchrl_bdpo.modules import __all__ as _modules_all
from torchrl_bdpo.objectives import *  # noqa: F401,F403
from torchrl_bdpo.objectives import __all__ as _objectives_all
from torchrl_bdpo.schedule import VPSchedule

__all__ = [*_modules_all, *_objectives_all, "VPSchedule"]
__version__ = "0.1.0"
