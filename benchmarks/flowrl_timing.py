"""Times the authors' BDPO (flow-rl, JAX) on the figures ``bench_bdpo.py`` measures for our code.

Run with the Python of a JAX environment (see ``benchmarks/parity/record_flowrl.py`` for one) and a
flow-rl checkout; ``bench_bdpo.py --flowrl PATH --jax-python PATH`` runs it between its own blocks
and reports same-run ratios. Standalone::

    /tmp/jaxvenv/bin/python benchmarks/flowrl_timing.py --flowrl /tmp/flow-rl --json jax.json

Figures (hopper shapes by default: obs 11, action 3, batch 256, N 5, K 10, M 10, 4x256 noise net,
3x256 critics), each timed after jit compilation and warm-up, with ``jax.block_until_ready``
on the trained parameters or the actions:

* ``pretrain_steps_per_s``: ``BDPOAgent.pretrain_step`` (one behavior DDPM step with its EMA);
* ``critic_steps_per_s``: ``BDPOAgent.train_step`` before the actor's warm-up ends (Q0 and V
  updates with the penalised chain, and their EMA);
* ``mixed_steps_per_s``: ``train_step`` with the actor updated every 5th step; flow-rl's
  continued behavior step is disabled here, because ``bench_bdpo.py``'s mixed step has none;
* ``sample_ms_b1`` / ``sample_ms_b256``: ``sample_actions`` with 10 candidates selected by Q.

It prints one JSON object (and writes it with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def _config(a: argparse.Namespace, warmup_steps: int):
    from omegaconf import OmegaConf

    train = dict(clip_grad_norm=1.0, ema=0.005)
    return OmegaConf.create(
        dict(
            name="bdpo",
            warmup_steps=warmup_steps,
            temperature=0.0,
            diffusion=dict(
                actor=dict(lr=1e-5, lr_decay_steps=2_000_000, ema_every=5, **train),
                behavior=dict(lr=3e-4, lr_decay_steps=None, ema_every=1, **train),
                noise_schedule="vp",
                resnet=False,
                dropout=0.0,
                layer_norm=False,
                time_dim=64,
                mlp_hidden_dims=[a.noise_hidden] * 4,
                resnet_hidden_dims=[256],
                solver="ddpm",
                steps=a.steps,
                clip_sampler=True,
                x_min=-1.0,
                x_max=1.0,
            ),
            critic=dict(
                discount=0.99,
                q_target="lcb",
                maxQ=False,
                ensemble_size=a.members,
                rho=2.0,
                eta=0.2,
                hidden_dims=[a.critic_hidden] * 3,
                lr=3e-4,
                lr_decay_steps=2_000_000,
                clip_grad_norm=1.0,
                layer_norm=False,
                ema=0.005,
                ema_every=1,
                steps=a.steps,
                num_samples=a.samples,
                solver="ddpm",
                update_ratio=5,
            ),
        )
    )


def _timed(fn, ready, seconds: float, warmup: int, min_iters: int) -> tuple[int, float]:
    """Runs ``fn(i)`` ``warmup`` times, then for ``seconds`` (at least ``min_iters`` calls)."""
    import jax

    for i in range(warmup):
        fn(i)
    jax.block_until_ready(ready())
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        fn(warmup + n)
        n += 1
        if n % 5 == 0:
            jax.block_until_ready(ready())
    jax.block_until_ready(ready())
    return n, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flowrl", type=Path, required=True, help="flow-rl checkout (bae22f4)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per figure")
    p.add_argument("--warmup", type=int, default=3, help="calls before timing (after compilation)")
    p.add_argument("--figures", default="pretrain,critic,mixed,sample", help="comma-separated")
    p.add_argument("--obs", type=int, default=11)
    p.add_argument("--act", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="N")
    p.add_argument("--members", type=int, default=10, help="K")
    p.add_argument("--samples", type=int, default=10, help="M")
    p.add_argument("--noise-hidden", type=int, default=256)
    p.add_argument("--critic-hidden", type=int, default=256)
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    sys.path.insert(0, str(a.flowrl.resolve()))

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flowrl.agent.offline.bdpo import bdpo as flowrl_bdpo
    from flowrl.types import Batch

    rng = np.random.default_rng(0)

    def batch(n: int) -> Batch:
        return Batch(
            obs=jnp.asarray(rng.normal(size=(n, a.obs)), jnp.float32),
            action=jnp.asarray(rng.uniform(-1, 1, size=(n, a.act)) * 0.999, jnp.float32),
            reward=jnp.asarray(rng.normal(size=(n, 1)), jnp.float32),
            terminal=jnp.zeros((n, 1), jnp.float32),
            next_obs=jnp.asarray(rng.normal(size=(n, a.obs)), jnp.float32),
            next_action=jnp.zeros((n, a.act), jnp.float32),
        )

    batches = [batch(a.batch) for _ in range(4)]
    figures = a.figures.split(",")
    out: dict = {
        "code": "flow-rl BDPOAgent",
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "seconds_per_figure": a.seconds,
        "loadavg_start": list(os.getloadavg()),
        "figures": {},
    }
    kwargs = dict(warmup=a.warmup, seconds=a.seconds, min_iters=3)

    def agent(warmup_steps: int):
        return flowrl_bdpo.BDPOAgent(a.obs, a.act, _config(a, warmup_steps), seed=0)

    if "pretrain" in figures:
        ag = agent(0)
        n, t = _timed(
            lambda i: ag.pretrain_step(batches[i % 4], i), lambda: ag.behavior.params, **kwargs
        )
        out["figures"]["pretrain_steps_per_s"] = n / t
    if "critic" in figures:
        ag = agent(10**12)  # the actor's warm-up never ends: critic updates only
        ag.prepare_training()
        n, t = _timed(lambda i: ag.train_step(batches[i % 4], i), lambda: ag.q0.params, **kwargs)
        out["figures"]["critic_steps_per_s"] = n / t
    if "mixed" in figures:
        # bench_bdpo's mixed step has no continued behavior step: disable flow-rl's
        def no_behavior_step(rng, behavior, behavior_target, *_args):
            return rng, behavior, behavior_target, {}

        original = flowrl_bdpo.jit_update_behavior
        flowrl_bdpo.jit_update_behavior = no_behavior_step
        try:
            ag = agent(0)
            ag.prepare_training()
            kw = dict(kwargs, warmup=max(5, a.warmup))
            n, t = _timed(
                lambda i: ag.train_step(batches[i % 4], i),
                lambda: (ag.q0.params, ag.actor.params),
                **kw,
            )
            out["figures"]["mixed_steps_per_s"] = n / t
        finally:
            flowrl_bdpo.jit_update_behavior = original
    if "sample" in figures:
        ag = agent(0)
        ag.prepare_training()
        for b in (1, 256):
            obs = jnp.asarray(rng.normal(size=(b, a.obs)), jnp.float32)
            last = {}

            def call(_i, obs=obs, last=last):
                last["a"] = ag.sample_actions(obs, num_samples=10)[0]

            n, t = _timed(call, lambda last=last: last["a"], **kwargs)
            out["figures"][f"sample_ms_b{b}"] = 1e3 * t / n
    out["loadavg_end"] = list(os.getloadavg())
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).write_text(text)
    print(text)
    return out


if __name__ == "__main__":
    main()
