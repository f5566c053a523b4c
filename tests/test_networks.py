"""Network shapes and initialisation (the authors' networks: orthogonal weights of gain sqrt(2),
zero biases, LayerNorm epsilon 1e-6, independent members)."""

from __future__ import annotations

import math

import pytest
import torch

from torchrl_bdpo import (
    DiffusionValueEnsemble,
    EnsembleMLP,
    NoiseNet,
    QEnsemble,
    mish,
    sinusoidal_embedding,
)
from torchrl_bdpo.modules.critics import EnsembleLayerNorm, EnsembleLinear
from torchrl_bdpo.modules.networks import SMALL_TENSOR, make_mlp, mish_exp, mish_inplace


def test_ensemble_members_are_independent_orthogonal_inits():
    mlp = EnsembleMLP(5, 8, 1, (16, 16))
    hidden = mlp.layers[2].weight  # [K, 16, 16]
    for k in range(5):  # flow-rl's orthogonal_init(): gain sqrt(2)
        torch.testing.assert_close(hidden[k].T @ hidden[k], 2 * torch.eye(16), atol=1e-5, rtol=0)
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
            torch.nn.functional.layer_norm(h, (8,), eps=1e-6) * mlp.layers[1].weight[k]
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


@pytest.mark.parametrize("requires_grad", [False, True])
def test_mish_keeps_bfloat16_precision_on_large_tensors(requires_grad):
    """Above SMALL_TENSOR elements float32 uses 1 - 2 / ((1 + e^x)^2 + 1), which cancels in
    bfloat16 for x < -1 (43 % mean relative error there); 16-bit tensors use 1 / (1 + 2 / m)."""
    x = torch.linspace(-8, 4, 40000)
    assert x.numel() >= SMALL_TENSOR
    exact = x.double() * torch.tanh(torch.log1p(torch.exp(x.double())))
    xb = x.bfloat16().requires_grad_(requires_grad)
    y = mish(xb)
    assert y.dtype == torch.bfloat16
    neg = x < -1
    rel = ((y.double() - exact).abs() / exact.abs())[neg]
    assert rel.mean() < 0.01 and rel.max() < 0.05  # bfloat16 rounding: ~0.5 % mean
    if requires_grad:
        (g,) = torch.autograd.grad(y.float().sum(), xb)
        (g_ref,) = torch.autograd.grad(torch.nn.functional.mish(xb).float().sum(), xb)
        torch.testing.assert_close(g, g_ref, atol=0.02, rtol=0.02)


def test_mish_in_float16_follows_the_reference():
    x = torch.linspace(-20, 10, 40000)
    y = mish(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), torch.nn.functional.mish(x), atol=2e-3, rtol=2e-3)


def test_plain_mlp_init_gain_and_layer_norm_eps():
    mlp = make_mlp(6, 3, (8, 8), layer_norm=True)
    first, norm = mlp[0], mlp[1]
    torch.testing.assert_close(first.weight.T @ first.weight, 2 * torch.eye(6), atol=1e-5, rtol=0)
    assert (first.bias == 0).all() and norm.eps == 1e-6
    assert EnsembleLayerNorm(2, 4).eps == 1e-6


def test_step_embedding_matches_the_formula():
    # flow-rl's PositionalEmbedding: f_k = exp(-k ln(1e4) / (half - 1)), [cos, sin]
    n = torch.tensor([0.0, 1.0, 7.0])
    half = 4
    expected = []
    for step in n.tolist():
        f = [math.exp(-k * math.log(1e4) / (half - 1)) for k in range(half)]
        expected.append([math.cos(step * x) for x in f] + [math.sin(step * x) for x in f])
    torch.testing.assert_close(sinusoidal_embedding(n, 8), torch.tensor(expected))
    assert sinusoidal_embedding(n, 8)[:, half - 1].tolist() == pytest.approx(
        [math.cos(s * 1e-4) for s in n.tolist()]
    )
    with pytest.raises(ValueError, match="at least 4"):
        sinusoidal_embedding(n, 2)


def test_value_step_mlp_activates_both_layers():
    v = DiffusionValueEnsemble(3, 2, num_members=2, hidden_sizes=(8,))
    layers = list(v.step_mlp.layers)
    assert [type(m).__name__ for m in layers] == [
        "EnsembleLinear",
        "Mish",
        "EnsembleLinear",
        "Mish",
    ]
    assert layers[2].weight.shape == (2, 128, 64)


def test_reset_parameters_redraws_ensemble_layers():
    linear, norm = EnsembleLinear(3, 4, 4), EnsembleLayerNorm(3, 4)
    with torch.no_grad():
        linear.bias.fill_(5.0)
        norm.weight.fill_(3.0)
        norm.bias.fill_(2.0)
    before = linear.weight.detach().clone()
    linear.reset_parameters()
    norm.reset_parameters()
    assert not torch.allclose(linear.weight, before)
    torch.testing.assert_close(
        linear.weight[0].T @ linear.weight[0], 2 * torch.eye(4), atol=1e-5, rtol=0
    )
    assert (linear.bias == 0).all() and (norm.weight == 1).all() and (norm.bias == 0).all()
    q = QEnsemble(3, 2, num_members=2, hidden_sizes=(8,))
    snapshot = {k: t.detach().clone() for k, t in q.named_parameters()}
    with torch.no_grad():
        for p in q.parameters():
            p.add_(1.0)
    for m in q.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for name, p in q.named_parameters():  # every tensor is re-drawn (weights) or reset (biases)
        if name.endswith("bias"):
            assert (p == 0).all(), name
        else:
            assert not torch.allclose(p, snapshot[name] + 1.0), name


def _critic_at_hopper_scale(seed: int = 0) -> QEnsemble:
    """A QEnsemble whose values sit near 300 with candidate spreads of about one unit (a trained
    Hopper critic's scale, where bfloat16 rounds a value to 1-2 units)."""
    torch.manual_seed(seed)
    q = QEnsemble(11, 3, num_members=10, hidden_sizes=(64, 64))
    head = q.mlp.layers[-1]
    with torch.no_grad():
        head.weight.mul_(7.0)
        head.bias.fill_(300.0)
    return q


def test_critic_values_keep_float32_precision_under_autocast():
    q = _critic_at_hopper_scale()
    obs, act = torch.randn(512, 1, 11), torch.rand(512, 10, 3) * 2 - 1
    with torch.no_grad():
        exact = q(obs, act)
        with torch.autocast("cpu", torch.bfloat16):
            low = q(obs, act)
        # the same hidden features by hand (bfloat16 matmuls), the output layer in float32
        with torch.autocast("cpu", torch.bfloat16):
            x = torch.cat([obs.expand(512, 10, 11), act], -1).reshape(-1, 14)
            *hidden, head = q.mlp.layers
            for layer in hidden:
                x = layer(x)
        by_hand = torch.baddbmm(head.bias, x.float(), head.weight)
        q.mlp.float32_output = False
        with torch.autocast("cpu", torch.bfloat16):
            rounded = q(obs, act)
    assert low.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    torch.testing.assert_close(low, by_hand.squeeze(-1).T.reshape(512, 10, 10))
    spread = exact.mean(-1).amax(-1) - exact.mean(-1).amin(-1)
    assert 0.3 < spread.median() < 3  # the scale the test is about
    # the ranking of each state's 10 candidates by ensemble mean: float32 output layer keeps it
    best = exact.mean(-1).argmax(-1)
    agree = (low.mean(-1).argmax(-1) == best).float().mean()
    agree_rounded = (rounded.float().mean(-1).argmax(-1) == best).float().mean()
    assert agree >= 0.9, agree
    assert agree_rounded <= 0.7, agree_rounded  # bfloat16 values would lose it
    assert (low - exact).abs().max() < 0.5 < (rounded.float() - exact).abs().max()


def test_float32_output_needs_a_linear_output_layer():
    with pytest.raises(ValueError, match="float32_output"):
        EnsembleMLP(2, 3, 4, (8,), activate_last=True, float32_output=True)


def test_ensemble_layers_keep_autocasts_dtype_for_shared_inputs():
    """A [P, in] input shared by all members gives bfloat16 features under autocast, as a
    [K, P, in] one does (a float32 bias must not promote them to float32)."""
    layer = EnsembleLinear(3, 4, 5)
    with torch.autocast("cpu", torch.bfloat16):
        shared, per_member = layer(torch.randn(7, 4)), layer(torch.randn(3, 7, 4))
    assert shared.dtype == per_member.dtype == torch.bfloat16
    x = torch.randn(7, 4)
    torch.testing.assert_close(layer(x), layer(x.expand(3, 7, 4)))  # float32: unchanged


def test_critics_run_on_the_meta_device():
    """Shape inference on meta tensors (a device without autocast) works with the float32 output
    layer's autocast check."""
    q = QEnsemble(3, 2, num_members=4, hidden_sizes=(8,)).to("meta")
    assert q(torch.empty(5, 3, device="meta"), torch.empty(5, 2, device="meta")).shape == (5, 4)
    v = DiffusionValueEnsemble(3, 2, num_members=4, hidden_sizes=(8,)).to("meta")
    n = torch.ones(5, dtype=torch.long, device="meta")
    assert v(torch.empty(5, 3, device="meta"), torch.empty(5, 2, device="meta"), n).shape == (5, 4)


def test_critics_return_float32_under_autocast_and_keep_other_weight_dtypes():
    obs, act, n = torch.randn(5, 3), torch.randn(5, 2), torch.ones(5, dtype=torch.long)
    q = QEnsemble(3, 2, num_members=4, hidden_sizes=(8,))
    v = DiffusionValueEnsemble(3, 2, num_members=4, hidden_sizes=(8,))
    with torch.autocast("cpu", torch.bfloat16):
        assert q(obs, act).dtype == v(obs, act, n).dtype == torch.float32
    # a critic in float64 (BDPOLoss.to(dtype)) still runs under autocast: its head in float64
    with torch.autocast("cpu", torch.bfloat16):
        assert q.double()(obs.double(), act.double()).dtype == torch.float64
    assert "float32_output=True" in repr(q.mlp)
