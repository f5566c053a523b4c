"""Throughput benchmark of BDPO's update steps and of its evaluation policy.

One command::

    python benchmarks/bench_bdpo.py                      # hopper + toy2d, eager + compile, 10 s each
    python benchmarks/bench_bdpo.py --modes eager --json bench.json
    python benchmarks/bench_bdpo.py --quick --modes eager   # a few iterations (smoke run)
    python benchmarks/bench_bdpo.py --profile --modes eager --shapes hopper  # + torch.profiler table

It times, per shape set and mode:

* ``pretrain``: ``loss.behavior_loss`` + backward + grad-norm clip 1.0 + Adam + behavior EMA;
* ``critic``: ``qvalue_loss + value_loss`` + backward + clip 1.0 (Q and V separately) + Adam
  + critic EMA;
* ``mixed``: the critic step every step and the actor step (``actor_loss`` + backward + clip
  + Adam + actor EMA) every 5th step: the paper's schedule (the recipe's default also runs one
  behavior step per actor step, the authors' continued behavior training; not timed here);
* ``sample``: :class:`torchrl_bdpo.QSelectionPolicy` (10 candidates from the EMA actor's full
  stochastic chain, argmax of the EMA ensemble-mean Q) at batch 1 and 256, ms per call;

and reports the achieved GFLOP/s of the mixed step (matmul FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode``) next to a measured dense-matmul rate, and the
peak memory. Data loading is not timed: the batches are synthetic TED TensorDicts.

The components and the update steps come from the training recipe's builders
(``make_loss_module``, ``make_target_updaters``, ``make_update_steps``); ``make_bench_components``
+ ``make_update_fns`` are importable for tests and other scripts. ``compile`` mode compiles each
update as one graph (forward, gradients, clipping, Adam, EMA: ``compile_scope="graph"``, see
``recipes/graph_step.py``), as the recipe does with ``compile=true``; the recipe also steps its
learning-rate schedules. ``benchmarks/recipe_vs_bench.py`` times the recipe's loop against these
steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict, TensorDictBase

from torchrl_bdpo import BDPOLoss, GroupSoftUpdate, QSelectionPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from bdpo_utils import (  # noqa: E402
    TaskData,
    make_loss_module,
    make_target_updaters,
    make_update_steps,
    precision_autocast,
    trainable,
)

__all__ = [
    "GOALS",
    "JAX_REFERENCE",
    "SHAPE_SETS",
    "BenchComponents",
    "ShapeSet",
    "UpdateFns",
    "main",
    "make_bench_components",
    "make_update_fns",
    "run_benchmark",
]

# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class ShapeSet:
    """Sizes and settings of one benchmarked configuration.

    ``num_members`` is ``K`` (Q and V ensembles), ``num_samples`` is ``M``, ``num_steps`` is ``N``.
    """

    name: str
    obs_dim: int
    act_dim: int
    batch_size: int
    num_steps: int
    num_members: int = 10
    num_samples: int = 10
    num_candidates: int = 10
    noise_hidden: tuple[int, ...] = (256,) * 4
    critic_hidden: tuple[int, ...] = (256,) * 3
    clip_sample: bool = True
    bandit: bool = False
    eta: float = 0.2
    rho: float = 2.0
    gamma: float = 0.99
    actor_every: int = 5
    sample_batches: tuple[int, ...] = (1, 256)

    def tiny(self) -> ShapeSet:
        """The same structure with small widths and batches (for the smoke test)."""
        return dataclasses.replace(
            self,
            batch_size=8,
            num_steps=min(self.num_steps, 3),
            num_members=3,
            num_samples=2,
            num_candidates=3,
            noise_hidden=(16, 16),
            critic_hidden=(16,),
        )


SHAPE_SETS: dict[str, ShapeSet] = {
    # D4RL hopper: obs 11, act 3; eta/rho of hopper-medium-replay (paper Table 4), clipping on.
    "hopper": ShapeSet("hopper", obs_dim=11, act_dim=3, batch_size=256, num_steps=5),
    # 2D bandits: dummy 1-D state, every transition terminal, no sampler clipping.
    "toy2d": ShapeSet(
        "toy2d",
        obs_dim=1,
        act_dim=2,
        batch_size=512,
        num_steps=50,
        clip_sample=False,
        bandit=True,
        eta=0.05,
        rho=0.0,
    ),
}

#: The authors' JAX code on a 2-core CPU machine of the CI kind: (low, high) per figure.
JAX_REFERENCE: dict[str, dict[str, tuple[float, float]]] = {
    "hopper": {
        "pretrain_steps_per_s": (108.0, 145.0),
        "critic_steps_per_s": (1.7, 1.7),
        "mixed_steps_per_s": (1.45, 1.5),
        "sample_ms_b1": (1.8, 2.5),
        "sample_ms_b256": (180.0, 180.0),
    },
    "toy2d": {
        "pretrain_steps_per_s": (110.0, 110.0),
        "critic_steps_per_s": (0.3, 0.3),
    },
}

#: Goals relative to the JAX reference: throughput >= factor x theirs, latency <= factor x theirs.
GOALS: dict[str, float] = {
    "pretrain_steps_per_s": 1.5,
    "critic_steps_per_s": 1.5,
    "mixed_steps_per_s": 1.5,
    "sample_ms_b1": 0.7,
    "sample_ms_b256": 0.7,
}

METRICS = (
    "pretrain_steps_per_s",
    "critic_steps_per_s",
    "mixed_steps_per_s",
    "sample_ms_b1",
    "sample_ms_b256",
    "gflops_mixed",
    "peak_mem_mb",
)

# ------------------------------------------------------------------ components


@dataclass
class BenchComponents:
    """Everything one shape set's update functions need (built by :func:`make_bench_components`)."""

    shape: ShapeSet
    device: torch.device
    loss: BDPOLoss
    #: ``behavior``/``critic``/``actor`` -> EMA updater and Adam (the recipe's grouping)
    targets: dict[str, GroupSoftUpdate]
    optimizers: dict[str, torch.optim.Optimizer]
    eval_policy: QSelectionPolicy
    precision: str = "fp32"
    batches: list[TensorDictBase] = field(default_factory=list)
    eval_inputs: dict[int, TensorDictBase] = field(default_factory=dict)


def _adam(params: list[torch.Tensor], lr: float, impl: str, capturable: bool):
    kwargs: dict = {"lr": lr}
    if impl == "fused":
        kwargs["fused"] = True
    elif impl == "foreach":
        kwargs["foreach"] = True
    if capturable:
        kwargs["capturable"] = True
    return torch.optim.Adam(params, **kwargs)


def make_batch(shape: ShapeSet, device: torch.device | str = "cpu") -> TensorDict:
    """A random batch in the TED layout (``observation``, ``action``, ``("next", ...)``)."""
    b = shape.batch_size
    terminated = torch.full((b, 1), shape.bandit, dtype=torch.bool)
    if not shape.bandit:
        terminated = torch.rand(b, 1) < 0.01
    return TensorDict(
        {
            "observation": torch.randn(b, shape.obs_dim),
            "action": (torch.rand(b, shape.act_dim) * 2 - 1) * (1 - 1e-5),
            "next": {
                "observation": torch.randn(b, shape.obs_dim),
                "reward": torch.randn(b, 1),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        batch_size=[b],
    ).to(device)


def make_bench_components(
    shape_set: str | ShapeSet,
    device: torch.device | str = "cpu",
    *,
    tiny: bool = False,
    adam: str = "fused",
    capturable: bool = False,
    num_batches: int = 4,
    seed: int = 0,
    stratified_steps: bool = True,
    precision: str = "fp32",
) -> BenchComponents:
    """Builds the loss, EMA updaters, optimizers, eval policy and synthetic batches of a shape set.

    Args:
        shape_set: a key of :data:`SHAPE_SETS` or a :class:`ShapeSet`.
        device: where everything lives.
        tiny: shrink widths and batches (see :meth:`ShapeSet.tiny`).
        adam: ``"fused"`` (default: about 7x faster than the for-loop Adam on CPU for the
            critics' 3M parameters), ``"foreach"`` or ``"default"`` (torch's choice).
        capturable: Adam with ``capturable=True`` (needed inside CUDA graphs).
        stratified_steps: BDPOLoss's fast path (the recipe's loss.stratified_steps=true): target Q and V
            each run only on their own rows. ``False`` times the plain path.
        precision: ``"fp32"`` or ``"bf16"`` (the recipe's ``precision``: the losses' forward
            passes under bfloat16 autocast, float32 weights and optimiser state; the
            sampling policy runs under the same autocast).
    """
    shape = SHAPE_SETS[shape_set] if isinstance(shape_set, str) else shape_set
    if tiny:
        shape = shape.tiny()
    device = torch.device(device)
    torch.manual_seed(seed)
    # Built by the training recipe's own builders, from a config holding these shapes.
    cfg = OmegaConf.create(
        {
            "diffusion": {
                "num_steps": shape.num_steps,
                "clip_sample": shape.clip_sample,
                "hidden_sizes": list(shape.noise_hidden),
                "layer_norm": False,
            },
            "critic": {
                "num_members": shape.num_members,
                "hidden_sizes": list(shape.critic_hidden),
                "q_layer_norm": False,
                "v_layer_norm": True,
                "v_step_hidden": [128, 64],  # the authors' code (flow-rl bae22f4)
            },
            "loss": {
                "eta": shape.eta,
                "rho": shape.rho,
                "gamma": shape.gamma,
                "num_samples": shape.num_samples,
                "backup": "mean",
                "penalty_placement": "inside",
                "aggregation": "lcb",
                "stratified_steps": stratified_steps,
                "error_reduction": "mean",
            },
            "optim": {"critic_tau": 0.005, "actor_tau": 0.005, "behavior_tau": 0.005},
        }
    )
    task = TaskData(
        name=shape.name,
        domain="benchmark",
        data=None,
        obs_dim=shape.obs_dim,
        action_dim=shape.act_dim,
        bandit=shape.bandit,
    )
    loss = make_loss_module(cfg, task, device)
    targets = make_target_updaters(loss, cfg)  # one updater per EMA group, right after the loss
    loss.init_actor_from_behavior()

    def optimizer(groups: tuple[str, ...], lr: float) -> torch.optim.Optimizer:
        params = [p for g in groups for p in trainable(getattr(loss, f"{g}_network_params"))]
        return _adam(params, lr, adam, capturable)

    eval_policy = QSelectionPolicy.from_loss(loss, shape.num_candidates)
    return BenchComponents(
        shape=shape,
        device=device,
        loss=loss,
        targets=targets,
        optimizers={
            "behavior": optimizer(("behavior",), 3e-4),
            "critic": optimizer(("qvalue", "value"), 3e-4),
            "actor": optimizer(("actor",), 1e-5),
        },
        eval_policy=eval_policy,
        precision=precision,
        batches=[make_batch(shape, device) for _ in range(num_batches)],
        # "action" is present from the start (overwritten by each call): a constant structure
        eval_inputs={
            b: TensorDict(
                {
                    "observation": torch.randn(b, shape.obs_dim),
                    "action": torch.zeros(b, shape.act_dim),
                },
                [b],
            ).to(device)
            for b in shape.sample_batches
        },
    )


# ------------------------------------------------------------------ update functions


@dataclass
class UpdateFns:
    """Plain callables over a batch TensorDict (the recipe's :class:`bdpo_utils.UpdateSteps`:
    each returns a tuple whose first item is the step's loss); ``sample`` maps
    ``{"observation"}`` to ``+ "action"``.

    ``mixed_step(batch, step)`` runs the critic step and, when ``step % actor_every == 0``,
    the actor step.
    """

    pretrain_step: Callable[[TensorDictBase], tuple]
    critic_step: Callable[[TensorDictBase], tuple]
    actor_step: Callable[[TensorDictBase], tuple]
    sample: Callable[[TensorDictBase], TensorDictBase]
    actor_every: int = 5
    mode: str = "eager"

    def mixed_step(self, batch: TensorDictBase, step: int) -> tuple:
        out = self.critic_step(batch)
        if step % self.actor_every == 0:
            self.actor_step(batch)
        return out


def make_update_fns(components: BenchComponents, mode: str = "eager") -> UpdateFns:
    """The update/sampling callables of ``components`` for ``mode``.

    * ``"eager"``: plain Python.
    * ``"compile"``: each update compiled as one graph (the loss's forward, its gradients,
      clipping, Adam and EMA: the recipe's ``compile_scope="graph"``); sampling compiled with
      ``dynamic=False`` (one graph per batch size).
    * ``"cudagraphs"`` (CUDA only): the compiled functions wrapped in
      ``tensordict.nn.CudaGraphModule`` (build the components with ``capturable=True``).
    """
    if mode not in ("eager", "compile", "cudagraphs"):
        raise ValueError(f"Unknown mode {mode!r} (eager, compile, cudagraphs).")
    c = components
    # the recipe's update steps, each compiled as one graph
    steps = make_update_steps(
        c.loss,
        c.optimizers,
        c.targets,
        c.device,
        grad_clip=1.0,
        precision=c.precision,
        compile=mode != "eager",
        compile_scope="graph",
        strict_compile=True,
    )
    pretrain, critic, actor = steps.behavior, steps.critic, steps.actor

    # under bf16 the policy's networks run in autocast too (the critics' output layers stay
    # float32, so the Q ranking of the candidates keeps float32 precision); fp32 times the
    # policy alone (no autocast context to enter)
    autocast = (
        precision_autocast(c.device, c.precision)
        if c.precision == "bf16"
        else contextlib.nullcontext
    )

    def sample(td: TensorDictBase) -> TensorDictBase:
        with autocast():
            return c.eval_policy(td)

    if mode != "eager":
        sample = torch.compile(sample, dynamic=False)
    if mode == "cudagraphs":
        if c.device.type != "cuda":
            raise RuntimeError("mode='cudagraphs' needs a CUDA device.")
        from tensordict.nn import CudaGraphModule

        pretrain, critic, actor = (
            CudaGraphModule(f, warmup=3, in_keys=[], out_keys=[]) for f in (pretrain, critic, actor)
        )
        # one captured graph per input shape
        per_batch = {
            b: CudaGraphModule(sample, warmup=3, in_keys=[], out_keys=[]) for b in c.eval_inputs
        }

        def sample(td: TensorDictBase) -> TensorDictBase:  # noqa: F811
            return per_batch[td.batch_size[0]](td)

    return UpdateFns(
        pretrain_step=pretrain,
        critic_step=critic,
        actor_step=actor,
        sample=sample,
        actor_every=components.shape.actor_every,
        mode=mode,
    )


# ------------------------------------------------------------------ measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_loop(
    step: Callable[[int], object],
    device: torch.device,
    *,
    seconds: float,
    min_iters: int,
    chunk: int = 1,
) -> tuple[int, float]:
    """Calls ``step(i)`` in chunks of ``chunk`` until ``seconds`` passed and ``min_iters`` ran."""
    _sync(device)
    i, start = 0, time.perf_counter()
    while True:
        for _ in range(chunk):
            step(i)
            i += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and i >= min_iters:
            return i, elapsed


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:  # Linux >= 4.0: "5" resets the process's peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024)


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul FLOPs (forward and backward) of one call of ``fn``, from ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(
    device: torch.device,
    size: int = 2048,
    seconds: float = 2.0,
    min_iters: int = 3,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Measured ``size x size`` matmul rate (GFLOP/s) in ``dtype`` at the current thread count."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    n, elapsed = _time_loop(
        lambda i: torch.mm(a, b, out=out), device, seconds=seconds, min_iters=min_iters
    )
    return 2.0 * size**3 * n / elapsed / 1e9


def run_shape_mode(
    components: BenchComponents,
    fns: UpdateFns,
    *,
    warmup: int,
    seconds: float,
    min_iters: int,
    log: Callable[[str], None] = print,
) -> dict:
    """Times every figure of one shape set in one mode; returns the results dict."""
    c, dev = components, components.device
    batches = c.batches
    nb = len(batches)
    res: dict = {}
    _reset_peak_memory(dev)

    t0 = time.perf_counter()
    for i in range(max(warmup, 1)):
        fns.pretrain_step(batches[i % nb])
        fns.critic_step(batches[i % nb])
        fns.actor_step(batches[i % nb])
        for td in c.eval_inputs.values():
            fns.sample(td)
    _sync(dev)
    res["warmup_s"] = time.perf_counter() - t0
    log(f"  warm-up ({max(warmup, 1)} calls of each function): {res['warmup_s']:.1f} s")

    n, el = _time_loop(
        lambda i: fns.pretrain_step(batches[i % nb]), dev, seconds=seconds, min_iters=min_iters
    )
    res["pretrain_steps_per_s"] = n / el
    log(f"  pretrain: {n / el:9.2f} steps/s ({n} steps)")

    n, el = _time_loop(
        lambda i: fns.critic_step(batches[i % nb]), dev, seconds=seconds, min_iters=min_iters
    )
    res["critic_steps_per_s"] = n / el
    log(f"  critic:   {n / el:9.2f} steps/s ({n} steps)")

    every = fns.actor_every
    n, el = _time_loop(
        lambda i: fns.mixed_step(batches[i % nb], i),
        dev,
        seconds=seconds,
        min_iters=max(min_iters, every),
        chunk=every,  # whole cycles only: exactly one actor step per `every` critic steps
    )
    res["mixed_steps_per_s"] = n / el
    log(f"  mixed:    {n / el:9.2f} steps/s ({n} steps, actor every {every})")

    for b, td in c.eval_inputs.items():
        n, el = _time_loop(
            lambda i, td=td: fns.sample(td), dev, seconds=seconds, min_iters=min_iters
        )
        res[f"sample_ms_b{b}"] = el / n * 1e3
        log(f"  sample b{b}: {el / n * 1e3:8.3f} ms/call ({n} calls)")
    res["peak_mem_mb"] = _peak_memory_mb(dev)
    return res


def _flops_per_step(components: BenchComponents) -> dict:
    """FLOPs of one critic step, one actor step, one pre-training step and one mixed step (eager)."""
    fns = make_update_fns(components, "eager")
    batch = components.batches[0]
    critic = count_flops(lambda: fns.critic_step(batch))
    actor = count_flops(lambda: fns.actor_step(batch))
    pretrain = count_flops(lambda: fns.pretrain_step(batch))
    every = components.shape.actor_every
    return {
        "flops_critic_step": critic,
        "flops_actor_step": actor,
        "flops_pretrain_step": pretrain,
        "flops_mixed_step": critic + actor / every,
    }


# ------------------------------------------------------------------ profile


def profile_mixed(
    components: BenchComponents, *, cycles: int = 1, row_limit: int = 15, sort_by: str | None = None
) -> str:
    """``torch.profiler`` table (top ops by self CPU time) of ``cycles`` eager mixed cycles."""
    from torch.profiler import ProfilerActivity, profile

    fns = make_update_fns(components, "eager")
    batch = components.batches[0]
    every = fns.actor_every
    for i in range(every):  # warm caches / allocator
        fns.mixed_step(batch, i)
    activities = [ProfilerActivity.CPU]
    if components.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for i in range(every * cycles):
            fns.mixed_step(batch, i)
        _sync(components.device)
    sort_by = sort_by or (
        "self_cuda_time_total" if components.device.type == "cuda" else "self_cpu_time_total"
    )
    return prof.key_averages().table(sort_by=sort_by, row_limit=row_limit)


# ------------------------------------------------------------------ conditions / report


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_conditions() -> dict:
    """The CPU model, torch threads and library versions every figure here is recorded with."""
    return {
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchrl": _version("torchrl"),
        "tensordict": _version("tensordict"),
    }


def conditions_text(cond: dict, *labels: str) -> str:
    """``"<cpu>, <n> thread(s), <precision>, <labels...>, torch <v>, torchrl <v>"`` of ``cond``."""
    return ", ".join(
        [f"{cond['cpu_model']}", f"{cond['torch_threads']} thread(s)", f"{cond['precision']}"]
        + list(labels)
        + [f"torch {cond['torch']}", f"torchrl {cond['torchrl']}"]
    )


def ratio_summary(ratios: list[float]) -> dict:
    """``{"median_ratio", "ratio_range"}`` of per-round ratios (interleaved A/B scripts)."""
    return {"median_ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}


def conditions(args: argparse.Namespace, device: torch.device) -> dict:
    cond = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else _cpu_model(),
        **runtime_conditions(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "modes": list(args.modes),
        "compile_mode": (
            "torch.compile(default mode, dynamic=None; each update one graph; "
            "sampling dynamic=False)"
        )
        if "compile" in args.modes
        else None,
        "shapes": list(args.shapes),
        "adam": args.adam,
        "precision": args.precision,
        "fast_paths": "off (--plain)"
        if args.plain
        else "stratified steps (loss.stratified_steps=true in the recipe)",
        "seconds_per_measurement": args.seconds,
        "warmup_calls": args.warmup,
        "quick": args.quick,
        "tiny": args.tiny,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "busy_neighbour_processes": getattr(args, "busy_neighbours", 0),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return cond


def compare_to_reference(results: dict) -> dict:
    """ours / JAX (their best figure) and whether each goal is met, per shape set and mode."""
    out: dict = {}
    for shape, ref in JAX_REFERENCE.items():
        if shape not in results:
            continue
        for mode, res in results[shape].items():
            if "error" in res:
                continue
            rows = {}
            for key, (low, high) in ref.items():
                if key not in res:
                    continue
                latency = key.startswith("sample_ms")
                best = low if latency else high  # compare with their best figure
                ratio = res[key] / best
                goal = GOALS[key]
                rows[key] = {
                    "ours": res[key],
                    "jax": [low, high],
                    "ratio_vs_best": ratio,
                    "goal": goal,
                    "met": ratio <= goal if latency else ratio >= goal,
                }
            out.setdefault(shape, {})[mode] = rows
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_report(report: dict) -> str:
    lines = []
    cond = report["conditions"]
    lines.append("== conditions ==")
    for key, value in cond.items():
        lines.append(f"  {key}: {value}")
    for shape, by_mode in report["results"].items():
        modes = list(by_mode)
        lines.append(f"\n== {shape} ==")
        lines.append("  " + f"{'metric':<24}" + "".join(f"{m:>14}" for m in modes))
        keys = list(METRICS) + ["fraction_of_matmul_rate", "flops_mixed_step", "warmup_s"]
        for key in keys:
            vals = []
            for m in modes:
                r = by_mode[m]
                vals.append("error" if "error" in r else _fmt(r.get(key)))
            lines.append("  " + f"{key:<24}" + "".join(f"{v:>14}" for v in vals))
        for m in modes:
            if "error" in by_mode[m]:
                lines.append(f"  {m}: ERROR {by_mode[m]['error']}")
    if report.get("comparison"):
        lines.append(
            "\n== vs the authors' JAX code MEASURED ELSEWHERE (stored ranges, another CPU; ratio = ours "
            "/ their best figure; --flowrl gives same-run ratios) =="
        )
        for shape, by_mode in report["comparison"].items():
            for mode, rows in by_mode.items():
                lines.append(f"  {shape} / {mode}:")
                for key, row in rows.items():
                    low, high = row["jax"]
                    jax = f"{low:g}" if low == high else f"{low:g}-{high:g}"
                    rel = "<=" if key.startswith("sample_ms") else ">="
                    lines.append(
                        f"    {key:<22} ours {_fmt(row['ours']):>9}  jax {jax:>9}  "
                        f"ratio {row['ratio_vs_best']:7.2f}  goal {rel} {row['goal']:g}  "
                        f"{'MET' if row['met'] else 'not met'}"
                    )
    return "\n".join(lines)


# ------------------------------------------------------------------ side by side

#: Figures timed on both sides (hopper shapes), and whether lower is better.
SIDE_BY_SIDE = {
    "pretrain_steps_per_s": False,
    "critic_steps_per_s": False,
    "mixed_steps_per_s": False,
    "sample_ms_b1": True,
    "sample_ms_b256": True,
}


def run_flowrl(args: argparse.Namespace, seconds: float, warmup: int) -> dict:
    """One block of the authors' code: ``flowrl_timing.py`` in the JAX environment."""
    import subprocess
    import tempfile

    script = Path(__file__).resolve().parent / "flowrl_timing.py"
    shape = SHAPE_SETS["hopper"].tiny() if args.tiny else SHAPE_SETS["hopper"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "jax.json"
        cmd = [
            args.jax_python, str(script), "--flowrl", args.flowrl, "--json", str(out),
            "--seconds", str(seconds), "--warmup", str(warmup),
            "--obs", str(shape.obs_dim), "--act", str(shape.act_dim),
            "--batch", str(shape.batch_size), "--steps", str(shape.num_steps),
            "--members", str(shape.num_members), "--samples", str(shape.num_samples),
            "--noise-hidden", str(shape.noise_hidden[0]),
            "--critic-hidden", str(shape.critic_hidden[0]),
        ]  # fmt: skip
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"flowrl_timing.py failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def run_side_by_side(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Interleaves the authors' JAX code and ours (A B A B ..., ``--rounds`` rounds, hopper
    shapes), with the load average at the start of every block, and reports the median
    ratio ours / JAX per figure and mode (with the per-round range)."""
    args.shapes = ["hopper"]
    seconds, warmup = (0.5, 1) if args.quick else (args.seconds, args.warmup)
    blocks = []
    for r in range(args.rounds):
        load = list(os.getloadavg())
        log(f"[round {r + 1}/{args.rounds}] authors' JAX code (load {load[0]:.2f})")
        jax = run_flowrl(args, seconds, warmup)
        blocks.append({"round": r, "side": "jax", "loadavg_start": load, "figures": jax["figures"]})
        load = list(os.getloadavg())
        log(f"[round {r + 1}/{args.rounds}] ours (load {load[0]:.2f})")
        ours = run_benchmark(args, log=log)
        blocks.append(
            {
                "round": r,
                "side": "ours",
                "loadavg_start": load,
                "results": ours["results"]["hopper"],
            }
        )
    ratios: dict = {}
    for mode in args.modes:
        for key, lower_is_better in SIDE_BY_SIDE.items():
            per_round = []
            for r in range(args.rounds):
                jax_v = blocks[2 * r]["figures"].get(key)
                ours_v = blocks[2 * r + 1]["results"].get(mode, {}).get(key)
                if isinstance(jax_v, float) and isinstance(ours_v, float):
                    per_round.append(ours_v / jax_v)
            if per_round:
                per_round.sort()
                median = (
                    per_round[len(per_round) // 2]
                    if len(per_round) % 2
                    else 0.5 * (per_round[len(per_round) // 2 - 1] + per_round[len(per_round) // 2])
                )
                ratios.setdefault(mode, {})[key] = {
                    "median": median,
                    "range": [per_round[0], per_round[-1]],
                    "lower_is_better": lower_is_better,
                }
    return {
        "conditions": {**conditions(args, torch.device(args.device)), "rounds": args.rounds},
        "flowrl": {"path": str(args.flowrl), "jax_python": args.jax_python},
        "blocks": blocks,
        "ratios": ratios,
    }


def format_side_by_side(report: dict) -> str:
    rows = ["\n== side by side (ratio = ours / JAX, median over rounds [min-max]) =="]
    for block in report["blocks"]:
        rows.append(
            f"  round {block['round'] + 1} {block['side']:<4} load {block['loadavg_start'][0]:.2f}"
        )
    for mode, by_key in report["ratios"].items():
        rows.append(f"  {mode}:")
        for key, r in by_key.items():
            better = "lower is better" if r["lower_is_better"] else "higher is better"
            lo, hi = r["range"]
            rows.append(f"    {key:<22} {r['median']:7.3f}  [{lo:.3f}-{hi:.3f}]  ({better})")
    return "\n".join(rows)


# ------------------------------------------------------------------ driver


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available.")
    modes = list(args.modes)
    if device.type == "cuda" and "cudagraphs" not in modes and not args.no_cudagraphs:
        modes.append("cudagraphs")
    if device.type != "cuda" and "cudagraphs" in modes:
        log("note: 'cudagraphs' needs a CUDA device; skipped.")
        modes.remove("cudagraphs")
    args.modes = modes
    if args.quick:  # 2 warm-up calls: compiled steps recompile once on their 2nd call
        warmup, seconds, min_iters = 2, 0.0, 2
    else:
        warmup, seconds, min_iters = args.warmup, args.seconds, 3

    cond = conditions(args, device)
    cond["seconds_per_measurement"], cond["warmup_calls"] = seconds, warmup
    msize = 512 if args.quick else args.matmul_size
    cond["matmul_size"] = msize
    # the rate of the matmuls the steps run: bfloat16 under precision=bf16
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    cond["matmul_dtype"] = str(dtype).removeprefix("torch.")
    cond["matmul_gflops"] = matmul_gflops(
        device, msize, seconds=0.2 if args.quick else 2.0, dtype=dtype
    )
    log(f"dense matmul {msize}x{msize} {cond['matmul_dtype']}: {cond['matmul_gflops']:.1f} GFLOP/s")

    results: dict = {}
    for shape_name in args.shapes:
        results[shape_name] = {}
        flops = None
        for mode in modes:
            log(f"[{shape_name} / {mode}]")
            try:
                build = functools.partial(
                    make_bench_components,
                    shape_name,
                    device,
                    tiny=args.tiny,
                    adam=args.adam,
                    capturable=(mode == "cudagraphs"),
                    stratified_steps=not args.plain,
                    precision=args.precision,
                )
                comps = build()
                if flops is None:  # counted on a copy: counting runs (and changes) the steps
                    flops = _flops_per_step(comps)
                    comps = build()
                fns = make_update_fns(comps, mode)
                res = run_shape_mode(
                    comps, fns, warmup=warmup, seconds=seconds, min_iters=min_iters, log=log
                )
                res.update(flops)
                res["gflops_mixed"] = flops["flops_mixed_step"] * res["mixed_steps_per_s"] / 1e9
                res["fraction_of_matmul_rate"] = res["gflops_mixed"] / cond["matmul_gflops"]
                res["shape"] = dataclasses.asdict(comps.shape)
                del comps, fns
            except Exception as err:  # report and go on with the other modes
                log(f"  FAILED: {type(err).__name__}: {err}")
                if args.verbose:
                    traceback.print_exc()
                res = {"error": f"{type(err).__name__}: {str(err)[:2000]}"}
            results[shape_name][mode] = res
            if mode != "eager":
                torch._dynamo.reset()
    cond["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report = {"conditions": cond, "results": results}
    report["comparison"] = {} if args.tiny else compare_to_reference(results)
    return report


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="BDPO update-step and sampling throughput benchmark.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--shapes", type=_csv, default=["hopper", "toy2d"], help="comma-separated")
    p.add_argument(
        "--modes",
        type=_csv,
        default=["eager", "compile"],
        help="comma-separated of eager, compile, cudagraphs (cudagraphs is added on CUDA)",
    )
    p.add_argument("--no-cudagraphs", action="store_true", help="do not add cudagraphs on CUDA")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls of each function")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--quick", action="store_true", help="a few iterations per measurement")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--adam", choices=["fused", "foreach", "default"], default="fused", help="Adam kernel"
    )
    p.add_argument("--matmul-size", type=int, default=2048, help="size of the reference matmul")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: the losses' forward passes (the recipe's precision=bf16) and the sampling policy "
        "under bfloat16 autocast",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also print a torch.profiler table of one eager mixed cycle per shape set",
    )
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    p.add_argument(
        "--plain", action="store_true", help="time BDPOLoss without its fast paths (i.i.d. steps)"
    )
    p.add_argument(
        "--flowrl",
        metavar="PATH",
        help="a flow-rl checkout: time the authors' JAX code in the same run, interleaved with ours",
    )
    p.add_argument("--jax-python", metavar="PATH", help="the Python of a JAX environment")
    p.add_argument("--rounds", type=int, default=2, help="side-by-side rounds (A B A B ...)")
    p.add_argument(
        "--busy-neighbours",
        type=int,
        default=0,
        metavar="N",
        help="run N busy-looping processes alongside (a shared machine)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    for s in args.shapes:
        if s not in SHAPE_SETS:
            raise SystemExit(f"Unknown shape set {s!r}; choose from {sorted(SHAPE_SETS)}.")
    for m in args.modes:
        if m not in ("eager", "compile", "cudagraphs"):
            raise SystemExit(f"Unknown mode {m!r}; choose from eager, compile, cudagraphs.")
    with busy_neighbours(args.busy_neighbours):
        return _run(args)


@contextlib.contextmanager
def busy_neighbours(count: int):
    """``count`` processes that keep one core busy each (a shared machine), for the block's duration."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _run(args: argparse.Namespace) -> dict:
    if args.flowrl:
        if not args.jax_python:
            raise SystemExit("--flowrl needs --jax-python (the Python of a JAX environment).")
        report = run_side_by_side(args)
        print(format_side_by_side(report))
        return write_json(report, args.json)
    report = run_benchmark(args)
    print()
    print(format_report(report))
    if args.profile:
        for shape_name in args.shapes:
            comps = make_bench_components(
                shape_name,
                args.device,
                tiny=args.tiny,
                adam=args.adam,
                stratified_steps=not args.plain,
                precision=args.precision,
            )
            print(
                f"\n== profile: {shape_name}, one eager mixed cycle "
                f"({comps.shape.actor_every} critic steps + 1 actor step) =="
            )
            print(profile_mixed(comps))
    return write_json(report, args.json)


def write_json(report: dict, path: str | None) -> dict:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    main()
