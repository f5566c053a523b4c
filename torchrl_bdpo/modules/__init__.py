"""Networks and TensorDict modules of BDPO."""

from torchrl_bdpo.modules.activation import Mish, mish
from torchrl_bdpo.modules.actor import DiffusionActionDistribution, DiffusionActor, QSelectionPolicy
from torchrl_bdpo.modules.critics import (
    DiffusionValueEnsemble,
    QEnsemble,
    make_qvalue_operator,
    make_value_operator,
)
from torchrl_bdpo.modules.diffusion_policy import DiffusionChain, DiffusionPolicy
from torchrl_bdpo.modules.embedding import SinusoidalStepEmbedding, sinusoidal_embedding
from torchrl_bdpo.modules.ensemble import EnsembleLayerNorm, EnsembleLinear, EnsembleMLP
from torchrl_bdpo.modules.mlp import make_mlp
from torchrl_bdpo.modules.noise_net import NoiseNet

__all__ = [
    "Mish",
    "mish",
    "DiffusionActionDistribution",
    "DiffusionActor",
    "DiffusionChain",
    "DiffusionPolicy",
    "DiffusionValueEnsemble",
    "EnsembleLayerNorm",
    "EnsembleLinear",
    "EnsembleMLP",
    "NoiseNet",
    "QEnsemble",
    "QSelectionPolicy",
    "SinusoidalStepEmbedding",
    "make_mlp",
    "make_qvalue_operator",
    "make_value_operator",
    "sinusoidal_embedding",
]
