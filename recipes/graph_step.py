"""One compiled graph per update: the loss's forward, its gradients, clipping, Adam and the EMA.

``torch.compile`` of an update written with ``loss.backward()`` and ``optimizer.step()`` is split
by Dynamo into about ten graphs (it breaks at ``backward``, ``zero_grad`` and inside the
optimizer), each with its guards and Python glue between them: on one CPU thread that costs
about a fifth of a pre-training step. :func:`make_graph_step` writes the same update so that
Dynamo traces it whole:

* gradients from ``torch.autograd.grad`` (traced under Dynamo's ``trace_autograd_ops``, which is
  switched on only around these calls: other compiled code keeps Dynamo's default);
* clipping as ``torch.nn.utils.clip_grad_norm_`` computes it (per parameter list);
* Adam as ``torch.optim.adam.adam`` over the optimizer's own state tensors (checkpoints, schedulers
  and ``load_state_dict`` keep working), with the learning rate a tensor refreshed from the param
  group before each call, so a scheduler's new rate does not recompile;
* the group's EMA target step (:class:`~torchrl_bdpo.GroupSoftUpdate`).

Numerically it is the eager update (``tests/test_graph_step.py`` pins that); only the random
numbers differ, as in any compiled code (inductor draws its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch._dynamo
from torch.optim.adam import adam as adam_update

__all__ = ["AdamTensors", "make_graph_step"]


class AdamTensors:
    """A single-group :class:`torch.optim.Adam`'s hyper-parameters and state as the lists and
    tensors that ``torch.optim.adam.adam`` takes, read from the optimizer at every call (after a
    ``load_state_dict`` the state tensors are new objects).

    Args:
        optimizer (torch.optim.Adam): one param group, ``amsgrad=False``.
        params (sequence of Tensor, optional): the order of the returned state lists: exactly the
            group's parameters, in any order. Defaults to the group's order.

    Examples:
        >>> lin = torch.nn.Linear(2, 1)
        >>> view = AdamTensors(torch.optim.Adam(lin.parameters(), lr=1e-3))
        >>> lr, exp_avgs, exp_avg_sqs, steps = view()
        >>> float(lr), [tuple(m.shape) for m in exp_avgs], [float(s) for s in steps]
        (0.0010000000474974513, [(1, 2), (1,)], [0.0, 0.0])
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor] | None = None
    ) -> None:
        if not isinstance(optimizer, torch.optim.Adam) or isinstance(optimizer, torch.optim.AdamW):
            raise TypeError(
                f"AdamTensors needs a torch.optim.Adam, got {type(optimizer).__name__}."
            )
        if len(optimizer.param_groups) != 1:
            raise ValueError(
                f"AdamTensors needs one param group, the optimizer has {len(optimizer.param_groups)}."
            )
        group = optimizer.param_groups[0]
        if group["amsgrad"] or group["differentiable"]:
            raise ValueError("AdamTensors does not support amsgrad=True or differentiable=True.")
        self.optimizer = optimizer
        self.params: list[torch.Tensor] = list(group["params"] if params is None else params)
        if len(self.params) != len(group["params"]) or {id(p) for p in self.params} != {
            id(p) for p in group["params"]
        }:
            raise ValueError("params must hold exactly the optimizer's parameters.")
        device = self.params[0].device
        self.lr = torch.tensor(float(group["lr"]), device=device)
        self._lr_value = float(group["lr"])
        self.hyper = {
            "beta1": group["betas"][0],
            "beta2": group["betas"][1],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "maximize": group["maximize"],
            "decoupled_weight_decay": group.get("decoupled_weight_decay", False),
        }

    def __call__(self) -> tuple[torch.Tensor, list, list, list]:
        """``(lr, exp_avgs, exp_avg_sqs, steps)``; creates the state Adam would create lazily
        (zeros and a step count of 0, here on the parameter's device). Marks the optimizer as
        stepped, as ``optimizer.step()`` does for LR schedulers (its step hooks do not run)."""
        self.optimizer._opt_called = True  # read by LRScheduler.step's call-order check
        lr = float(self.optimizer.param_groups[0]["lr"])
        if lr != self._lr_value:  # a scheduler moved it: one tiny in-place fill
            self.lr.fill_(lr)
            self._lr_value = lr
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif state["step"].device != p.device:  # a for-loop Adam's CPU step count
                state["step"] = state["step"].to(p.device)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return self.lr, exp_avgs, exp_avg_sqs, steps


def clip_by_total_norm(
    grads: Sequence[torch.Tensor], max_norm: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(total 2-norm, clipped grads)`` as ``torch.nn.utils.clip_grad_norm_`` computes them:
    scaled by ``min(1, max_norm / (norm + 1e-6))``, out of place."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return norm, list(torch._foreach_mul(list(grads), coef))


def make_graph_step(
    terms: Callable,
    param_lists: Sequence[Sequence[torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    ema_step: Callable[[], None],
    *,
    grad_clip: float,
    compile_mode: str = "default",
) -> Callable:
    """A compiled update ``step(batch) -> (*detached outputs, *grad norms, *extras)``.

    Args:
        terms: ``terms(batch) -> (objective, outputs, extras)``: the scalar to minimise, the tensors
            returned detached first (the losses), and anything returned after the norms as is
            (detached metadata dicts).
        param_lists: the parameters, in groups clipped separately (e.g. Q and V); together they
            are exactly ``optimizer``'s.
        optimizer: a single-group :class:`torch.optim.Adam` (see :class:`AdamTensors`).
        ema_step: the group's target-network step (e.g. ``GroupSoftUpdate.step``).
        grad_clip: the max 2-norm of each parameter list's gradient.
        compile_mode: a ``torch.compile`` mode (``"default"``: torch's own).
    """
    flat = [p for ps in param_lists for p in ps]
    adam = AdamTensors(optimizer, flat)  # the state lists in the order of flat
    sizes = [len(ps) for ps in param_lists]
    hyper = adam.hyper

    def update(batch, lr, exp_avgs, exp_avg_sqs, steps):
        objective, outputs, extras = terms(batch)
        grads = torch.autograd.grad(objective, flat)
        norms, clipped, start = [], [], 0
        for size in sizes:
            norm, part = clip_by_total_norm(grads[start : start + size], grad_clip)
            norms.append(norm)
            clipped.extend(part)
            start += size
        with torch.no_grad():
            adam_update(
                flat,
                clipped,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                foreach=True,
                capturable=True,
                amsgrad=False,
                lr=lr,
                **hyper,
            )
            ema_step()
        return (*(o.detach() for o in outputs), *norms, *extras)

    compiled = torch.compile(update, mode=None if compile_mode == "default" else compile_mode)

    def step(batch):
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return compiled(batch, *adam())

    step.__name__ = getattr(terms, "__name__", "graph_step")
    return step
