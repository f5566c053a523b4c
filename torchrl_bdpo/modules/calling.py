"""Calling TensorDict modules on plain tensors."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey

from torchrl_bdpo.modules.shapes import batch_shape


def call_network(network, out_key: NestedKey, *inputs: torch.Tensor) -> torch.Tensor:
    """Runs ``network`` on positional inputs (matched to its ``in_keys``) and returns ``out_key``.

    A plain :class:`~tensordict.nn.TensorDictModule` is called through its inner module
    directly (no TensorDict is built on the hot path); any other TensorDict module gets
    a TensorDict of the inputs, broadcast to a common batch shape.

    Examples:
        >>> from torchrl_bdpo import QEnsemble, make_qvalue_operator
        >>> q = make_qvalue_operator(QEnsemble(3, 2, num_members=4, hidden_sizes=(8,)))
        >>> call_network(q, "state_action_value", torch.randn(5, 3), torch.randn(5, 2)).shape
        torch.Size([5, 4])
    """
    if type(network) is TensorDictModule and network.out_keys[0] == out_key:
        return network.module(*inputs)
    batch = batch_shape(*(t.shape[:-1] if t.is_floating_point() else t.shape for t in inputs))
    td = TensorDict(
        {
            key: t.expand(*batch, t.shape[-1]) if t.is_floating_point() else t.expand(batch)
            for key, t in zip(network.in_keys, inputs)
        },
        batch_size=batch,
    )
    return network(td).get(out_key)
