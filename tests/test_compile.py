"""torch.compile captures every loss and the evaluation policy in one graph, and the compiled
computation equals the eager one (losses, gradients, chosen actions).

``fullgraph=True`` turns any graph break (a ``.item()``, a Python branch on a tensor value, an
unsupported call) into an error, so these tests pin the "no host sync, no graph break" property
the recipe's ``compile=true`` relies on. ``fallback_random`` makes compiled random draws equal
eager ones, so the two computations see the same noise.
"""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from _factories import batch, make_loss
from tensordict import TensorDict

from torchrl_bdpo import QSelectionPolicy

pytestmark = pytest.mark.slow  # end to end: excluded from the unit loop (-m 'not slow')

LOSSES = [
    ("behavior_loss", "behavior_network"),
    ("qvalue_loss", "qvalue_network"),
    ("value_loss", "value_network"),
    ("actor_loss", "actor_network"),
]


@pytest.fixture(autouse=True)
def _same_random_draws():
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def loss():
    torch.manual_seed(0)
    return make_loss(num_steps=4)


def _loss_and_grads(loss, fn, td, group):
    loss.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    value, meta = fn(td)
    value.backward()
    params = getattr(loss, f"{group}_params").values(True, True)
    return value.detach(), [p.grad.clone() for p in params if p.grad is not None], meta


@pytest.mark.parametrize("method,group", LOSSES)
def test_compiled_loss_has_no_graph_break_and_equals_eager(loss, method, group):
    td = batch(13)
    eager = getattr(loss, method)
    compiled = torch.compile(eager, fullgraph=True)
    value, grads, meta = _loss_and_grads(loss, eager, td, group)
    c_value, c_grads, c_meta = _loss_and_grads(loss, compiled, td, group)
    torch.testing.assert_close(c_value, value)
    assert len(grads) > 0 and len(c_grads) == len(grads)
    for a, b in zip(c_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert c_meta.keys() == meta.keys()
    for key in meta:
        torch.testing.assert_close(c_meta[key], meta[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_candidates", [1, 10])
def test_compiled_selection_policy_has_no_graph_break_and_equals_eager(loss, num_candidates):
    policy = QSelectionPolicy.from_loss(loss, num_candidates)
    compiled = torch.compile(policy, fullgraph=True, dynamic=False)
    obs = TensorDict({"observation": torch.randn(5, 3)}, [5])
    torch.manual_seed(2)
    eager_action = policy(obs.clone())["action"]
    torch.manual_seed(2)
    compiled_action = compiled(obs.clone())["action"]
    torch.testing.assert_close(compiled_action, eager_action, rtol=1e-4, atol=1e-5)


def test_policy_and_critic_compile_whole_under_bf16_autocast(loss):
    """The benchmark's --precision bf16 sampling: the policy under autocast is still one graph,
    and the critic's values leave it in float32 (its output layer runs in float32)."""
    from _factories import ACT, OBS

    policy = QSelectionPolicy.from_loss(loss, 10)
    compiled = torch.compile(policy, fullgraph=True, dynamic=False)
    with torch.autocast("cpu", torch.bfloat16):
        action = compiled(TensorDict({"observation": torch.randn(5, OBS)}, [5]))["action"]
    assert action.dtype == torch.float32 and action.shape == (5, ACT)
    q = loss.qvalue_network.module
    obs, act = torch.randn(7, OBS), torch.randn(7, ACT)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        eager, compiled_q = q(obs, act), torch.compile(q, fullgraph=True)(obs, act)
    assert eager.dtype == compiled_q.dtype == torch.float32
    torch.testing.assert_close(compiled_q, eager, rtol=2e-2, atol=2e-2)
