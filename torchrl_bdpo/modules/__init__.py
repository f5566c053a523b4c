"""Networks and TensorDict modules of BDPO: ``networks`` (Mish, step embedding, MLPs, noise net),
``critics`` (ensemble layers, Q and V_n) and ``actor`` (reverse chain, TorchRL actors)."""

from torchrl_bdpo.modules.actor import (
    BDPODiffusionActor,
    DiffusionActionDistribution,
    DiffusionChain,
    DiffusionSampler,
    QSelectionPolicy,
    call_network,
)
from torchrl_bdpo.modules.critics import (
    DiffusionValueEnsemble,
    EnsembleLayerNorm,
    EnsembleLinear,
    EnsembleMLP,
    QEnsemble,
    make_qvalue_operator,
    make_value_operator,
)
from torchrl_bdpo.modules.networks import (
    Mish,
    NoiseNet,
    OrthogonalLinear,
    SinusoidalStepEmbedding,
    make_mlp,
    mish,
    sinusoidal_embedding,
)

__all__ = [
    "Mish",
    "mish",
    "DiffusionActionDistribution",
    "BDPODiffusionActor",
    "DiffusionChain",
    "DiffusionSampler",
    "DiffusionValueEnsemble",
    "EnsembleLayerNorm",
    "EnsembleLinear",
    "EnsembleMLP",
    "NoiseNet",
    "OrthogonalLinear",
    "QEnsemble",
    "QSelectionPolicy",
    "SinusoidalStepEmbedding",
    "call_network",
    "make_mlp",
    "make_qvalue_operator",
    "make_value_operator",
    "sinusoidal_embedding",
]
