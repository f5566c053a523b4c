"""Network shapes and initialisation (spec: orthogonal weights, zero biases, independent members)."""

from __future__ import annotations

import pytest
import torch

from torchrl_bdpo import DiffusionValueEnsemble, EnsembleMLP, NoiseNet, QEnsemble, mish
from torchrl_bdpo.modules.activation import mish_exp, mish_inplace


def test_ensemble_members_are_independent_orthogonal_inits():
    mlp = EnsembleMLP(5, 8, 1, (16, 16))
    hidden = mlp.layers[2].weight  # [K, 16, 16]
    for k in range(5):
        torch.testing.assert_close(hidden[k].T @ hidden[k], torch.eye(16), atol=1e-5, rtol=0)
    assert not torch.allclose(hidden[0], hidden[1])
    assert all(
        (layer.bias == 0).all()
        for layer in mlp.layers
        if hasattr(layer, "bias") and layer.bias is not None
    )


def test_ensemble_equals_per_member_loop():
    mlp = EnsembleMLP(4, 3, 2, (8,), layer_norm=True)
    x = torch.randn(6, 3)
    out = mlp(x)  # [K, P, out]
    for k in range(4):
        h = x @ mlp.layers[0].weight[k] + mlp.layers[0].bias[k]
        h = (
            torch.nn.functional.layer_norm(h, (8,)) * mlp.layers[1].weight[k]
            + mlp.layers[1].bias[k]
        )
        h = torch.nn.functional.mish(h)
        torch.testing.assert_close(out[k], h @ mlp.layers[3].weight[k] + mlp.layers[3].bias[k])


def test_shapes_and_broadcasting():
    q = QEnsemble(3, 2, num_members=7, hidden_sizes=(8,))
    assert q(torch.randn(4, 1, 3), torch.randn(4, 5, 2)).shape == (4, 5, 7)
    v = DiffusionValueEnsemble(3, 2, num_members=7, hidden_sizes=(8,))
    assert v(
        torch.randn(4, 1, 3), torch.randn(4, 5, 2), torch.ones(4, 5, dtype=torch.long)
    ).shape == (4, 5, 7)
    eps = NoiseNet(3, 2, hidden_sizes=(8,))
    assert eps(
        torch.randn(4, 5, 2), torch.ones(4, 5, dtype=torch.long), torch.randn(4, 1, 3)
    ).shape == (4, 5, 2)


def test_no_grad_mish_matches_reference():
    x = torch.linspace(-40, 40, 2001)
    torch.testing.assert_close(
        mish_inplace(x.clone()), torch.nn.functional.mish(x), atol=1e-5, rtol=1e-5
    )
    with torch.no_grad():
        torch.testing.assert_close(mish(x), torch.nn.functional.mish(x), atol=1e-5, rtol=1e-5)
    assert x.min() == -40  # the input is not modified


@pytest.mark.parametrize("fn", [mish, mish_exp])
def test_mish_matches_reference_and_its_gradient(fn):
    x = torch.linspace(-40, 40, 2001, requires_grad=True)
    ref = torch.nn.functional.mish(x)
    torch.testing.assert_close(fn(x), ref, atol=1e-5, rtol=1e-5)
    (g1,) = torch.autograd.grad(fn(x).sum(), x)
    (g2,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)
