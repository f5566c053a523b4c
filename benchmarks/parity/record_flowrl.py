"""Records the authors' BDPO (flow-rl, JAX) on small random networks for tests/test_parity_flowrl.py.

Run by hand, in a separate JAX environment, never in CI::

    python -m venv /tmp/jaxvenv
    /tmp/jaxvenv/bin/pip install "jax==0.5.3" "jaxlib==0.5.3" "flax==0.10.5" optax \
        "orbax-checkpoint==0.11.23" distrax hydra-core omegaconf
    git clone https://github.com/typoverflow/flow-rl /tmp/flow-rl            # HEAD bae22f4
    git -C /tmp/flow-rl worktree add /tmp/flow-rl-paper 9e8c667             # paper-era critic
    /tmp/jaxvenv/bin/python benchmarks/parity/record_flowrl.py \
        --flowrl /tmp/flow-rl --flowrl-paper /tmp/flow-rl-paper \
        --out tests/data/flowrl_parity.npz

The script imports flow-rl from the given checkout and only *observes* it: it runs flow-rl's own
functions under ``jax.disable_jit()`` with ``jax.random``'s samplers wrapped to log every draw in call
order, and ``jax.grad`` wrapped to log each loss's gradients and the targets its closure holds. It
writes one ``.npz`` with the networks' weights (flow-rl's own random init), the inputs, every draw
and every output. flow-rl draws one normal at the last reverse step of a chain (``n = 1``) and
multiplies it by 0; those draws are dropped here, so the fixture lists exactly the draws a
sampler that adds no noise at ``n = 1`` makes.

Cases (keys of the fixture, see ``tests/test_parity_flowrl.py``): the VP schedule, the step
embedding, the noise net, Q with and without LayerNorm, V_n, a full reverse chain with x0-clipping
and its per-step KL, the critic update (Q0 and V targets, losses, gradients) with the penalty inside
``γ(1-d)`` (HEAD) and outside (``jit_update_critic`` at commit 9e8c667) for mean/max backup and
ρ ∈ {0, 2}, the actor and behavior updates, a short training run (pre-training, the actor copied from
the EMA behavior model, critic/actor/behavior steps with warm-up, update period, EMA, clipping and
cosine learning rates) and best-of-10 action selection.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

# Sizes: every axis has its own length so that a draw replayed in the wrong place fails.
OBS, ACT, BATCH, SAMPLES, MEMBERS, STEPS, TIME_DIM = 11, 3, 6, 3, 4, 5, 16
NOISE_HIDDEN, CRITIC_HIDDEN = [32, 32, 32, 32], [32, 32, 32]
PRETRAIN, TRAIN, WARMUP, PERIOD, DECAY = 3, 10, 2, 3, 20
ETA, GAMMA, TAU, EVAL_CANDIDATES = 0.2, 0.99, 0.005, 10
REWARD_SCALE = 30.0  # large rewards: the critics' gradient norms exceed the clip at 1.0


def algo_config(layer_norm_q: bool = False, rho: float = 2.0, max_q: bool = False):
    from omegaconf import OmegaConf

    train = dict(clip_grad_norm=1.0, ema=TAU)
    return OmegaConf.create(
        dict(
            name="bdpo",
            warmup_steps=WARMUP,
            temperature=0.0,
            diffusion=dict(
                actor=dict(lr=1e-3, lr_decay_steps=DECAY, ema_every=PERIOD, **train),
                behavior=dict(lr=3e-4, lr_decay_steps=None, ema_every=1, **train),
                noise_schedule="vp",
                resnet=False,
                dropout=0.0,
                layer_norm=False,
                time_dim=TIME_DIM,
                mlp_hidden_dims=NOISE_HIDDEN,
                resnet_hidden_dims=[32],
                solver="ddpm",
                steps=STEPS,
                clip_sampler=True,
                x_min=-1.0,
                x_max=1.0,
            ),
            critic=dict(
                discount=GAMMA,
                q_target="lcb",
                maxQ=max_q,
                ensemble_size=MEMBERS,
                rho=rho,
                eta=ETA,
                hidden_dims=CRITIC_HIDDEN,
                lr=3e-4,
                lr_decay_steps=DECAY,
                clip_grad_norm=1.0,
                layer_norm=layer_norm_q,
                ema=TAU,
                ema_every=1,
                steps=STEPS,
                num_samples=SAMPLES,
                solver="ddpm",
                update_ratio=PERIOD,
            ),
        )
    )


class Recorder:
    """Collects arrays under flat keys; draws and gradients are logged by wrapped jax functions."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.draws: list[tuple[str, np.ndarray]] | None = None
        self.grads: list[dict] = []

    def put(self, key: str, value) -> None:
        value = np.asarray(value)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        self.arrays[key] = value

    def put_tree(self, prefix: str, tree) -> None:
        import jax

        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            name = "/".join(str(getattr(p, "key", p)) for p in path)
            self.put(f"{prefix}/{name}", leaf)

    def start(self) -> None:
        self.draws, self.grads = [], []

    def stop(self, case: str) -> list[dict]:
        kinds = []
        for i, (kind, value) in enumerate(self.draws):
            self.put(f"draws/{case}/{i:03d}", value)
            kinds.append(kind)
        self.arrays[f"draws/{case}/kinds"] = np.array(json.dumps(kinds))
        self.draws = None
        return self.grads


def instrument(rec: Recorder, ddpm_cls) -> None:
    """Wraps jax.random's samplers, jax.grad and DDPM.sample to log what flow-rl does."""
    import jax

    for kind in ("normal", "randint", "uniform", "categorical"):
        original = getattr(jax.random, kind)

        def logged(*args, _original=original, _kind=kind, **kwargs):
            out = _original(*args, **kwargs)
            if rec.draws is not None:
                rec.draws.append((_kind, np.asarray(out)))
            return out

        setattr(jax.random, kind, logged)

    original_grad = jax.grad

    def grad(fun, *args, **kwargs):
        inner = original_grad(fun, *args, **kwargs)

        def logged(*a, **k):
            grads, info = inner(*a, **k)
            cells = dict(zip(fun.__code__.co_freevars, fun.__closure__ or ()))
            closure = {name: cell.cell_contents for name, cell in cells.items()}
            rec.grads.append({"grads": grads, "info": info, "closure": closure})
            return grads, info

        return logged

    jax.grad = grad

    original_sample = ddpm_cls.sample

    def sample(self, *args, **kwargs):
        first = None if rec.draws is None else len(rec.draws)
        out = original_sample(self, *args, **kwargs)
        if first is not None:  # drop the n = 1 draw, which flow-rl multiplies by 0
            last = max(i for i in range(first, len(rec.draws)) if rec.draws[i][0] == "normal")
            del rec.draws[last]
        return out

    ddpm_cls.sample = sample


def load_paper_era_bdpo(paper_root: Path):
    """flow-rl's bdpo.py at commit 9e8c667 (the ICML runs), loaded beside HEAD's package.

    Its jit_update_critic differs from HEAD's only in where η·P(s') is subtracted; its one
    import that HEAD moved (the config dataclasses) is pointed at HEAD's module.
    """
    import flowrl.config.offline.algo.bdpo as head_config

    sys.modules.setdefault("flowrl.config.d4rl", types.ModuleType("flowrl.config.d4rl"))
    sys.modules.setdefault("flowrl.config.d4rl.algo", types.ModuleType("flowrl.config.d4rl.algo"))
    sys.modules["flowrl.config.d4rl.algo.bdpo"] = head_config
    path = paper_root / "flowrl" / "agent" / "bdpo" / "bdpo.py"
    spec = importlib.util.spec_from_file_location("flowrl_paper_bdpo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git_head(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def with_params(model, params):
    return model.replace(state=model.state.replace(params=params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowrl", type=Path, required=True, help="flow-rl checkout at HEAD")
    parser.add_argument("--flowrl-paper", type=Path, required=True, help="flow-rl at 9e8c667")
    parser.add_argument("--out", type=Path, default=Path("tests/data/flowrl_parity.npz"))
    args = parser.parse_args()
    sys.path.insert(0, str(args.flowrl.resolve()))

    import flax
    import jax
    import jax.numpy as jnp
    from flowrl.agent.offline.bdpo import bdpo as head
    from flowrl.flow.ddpm import DDPM, jit_update_ddpm
    from flowrl.module.time_embedding import PositionalEmbedding
    from flowrl.types import Batch

    paper = load_paper_era_bdpo(args.flowrl_paper.resolve())
    rec = Recorder()
    instrument(rec, DDPM)
    meta = {
        "flowrl_head": git_head(args.flowrl),
        "flowrl_paper": git_head(args.flowrl_paper),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "sizes": dict(
            obs=OBS,
            act=ACT,
            batch=BATCH,
            samples=SAMPLES,
            members=MEMBERS,
            steps=STEPS,
            time_dim=TIME_DIM,
            noise_hidden=NOISE_HIDDEN,
            critic_hidden=CRITIC_HIDDEN,
        ),
        "train": dict(
            pretrain=PRETRAIN,
            train=TRAIN,
            warmup=WARMUP,
            period=PERIOD,
            decay=DECAY,
            actor_lr=1e-3,
            behavior_lr=3e-4,
            critic_lr=3e-4,
            clip=1.0,
            tau=TAU,
            eval_candidates=EVAL_CANDIDATES,
        ),
        "eta": ETA,
        "gamma": GAMMA,
    }

    # Networks: two agents with different seeds so that every online/target pair differs.
    a = head.BDPOAgent(OBS, ACT, algo_config(), seed=0)
    b = head.BDPOAgent(OBS, ACT, algo_config(), seed=1)
    q_ln = head.BDPOAgent(OBS, ACT, algo_config(layer_norm_q=True), seed=2).q0
    a.behavior_target = with_params(a.behavior_target, b.behavior.params)
    a.actor_target = with_params(a.actor_target, b.actor.params)
    a.q0_target = with_params(a.q0_target, b.q0.params)
    a.vt_target = with_params(a.vt_target, b.vt.params)
    for name in head.BDPOAgent.model_names:
        rec.put_tree(f"params/{name}", getattr(a, name).params)
    rec.put_tree("params/q0_ln", q_ln.params)

    rng = np.random.default_rng(0)

    def batch(n: int = BATCH) -> Batch:
        terminal = np.zeros((n, 1), np.float32)
        terminal[::3] = 1.0
        return Batch(
            obs=jnp.asarray(rng.normal(size=(n, OBS)), jnp.float32),
            action=jnp.asarray(rng.uniform(-0.999, 0.999, size=(n, ACT)), jnp.float32),
            reward=jnp.asarray(REWARD_SCALE * rng.normal(size=(n, 1)), jnp.float32),
            terminal=jnp.asarray(terminal),
            next_obs=jnp.asarray(rng.normal(size=(n, OBS)), jnp.float32),
            next_action=jnp.zeros((n, ACT), jnp.float32),
        )

    def put_batch(prefix: str, bt: Batch) -> None:
        for field in ("obs", "action", "reward", "terminal", "next_obs"):
            rec.put(f"{prefix}/{field}", getattr(bt, field))

    data = batch()
    put_batch("batch", data)
    key = jax.random.PRNGKey(123)

    with jax.disable_jit():
        # schedule and step embedding
        rec.put("schedule/betas", a.actor.betas)
        rec.put("schedule/alphas", a.actor.alphas)
        rec.put("schedule/alpha_bars", a.actor.alpha_hats)
        steps = jnp.array([0, 1, 2, 3, 4, 5, 17, 100], jnp.float32)[:, None]
        rec.put("embedding/steps", steps[:, 0])
        rec.put("embedding/out", PositionalEmbedding(output_dim=TIME_DIM).apply({}, steps))

        # single networks on random inputs
        x = jnp.asarray(rng.normal(size=(BATCH, ACT)), jnp.float32)
        t = jnp.asarray(rng.integers(1, STEPS + 1, size=(BATCH, 1)), jnp.int32)
        rec.put("nets/x", x)
        rec.put("nets/t", t[:, 0])
        rec.put("nets/noise", a.actor(x, t, data.obs))
        rec.put("nets/q", a.q0(data.obs, data.action)[..., 0])
        rec.put("nets/q_ln", q_ln(data.obs, data.action)[..., 0])
        rec.put("nets/v", a.vt(data.obs, x, t)[..., 0])

        # a full reverse chain of the EMA actor (x0 clipped) and its per-step KL to the EMA behavior
        rec.start()
        obs_m = jnp.repeat(data.next_obs[:, None, :], SAMPLES, axis=1)
        key, xt_key, chain_key = jax.random.split(key, 3)
        x_big_n = jax.random.normal(xt_key, (BATCH, SAMPLES, ACT))
        _, action, (xs, eps_actor) = a.actor_target.sample(chain_key, x_big_n, obs_m)
        rec.stop("chain")
        n_desc = jnp.arange(STEPS, 0, -1).repeat(BATCH * SAMPLES).reshape(STEPS, BATCH, SAMPLES, 1)
        eps_behavior = a.behavior_target(xs, n_desc, jnp.repeat(obs_m[None], STEPS, axis=0))
        kl = head.get_penalty(
            eps_actor,
            eps_behavior,
            n_desc,
            STEPS,
            a.actor.alphas,
            a.actor.alpha_hats,
            a.actor.betas,
        ).sum(-1)
        rec.put("chain/action", action)
        rec.put("chain/states", xs[::-1])  # x_1..x_N (flow-rl lists them from n = N)
        rec.put("chain/noise_preds", eps_actor[::-1])
        rec.put("chain/kl", kl[::-1])  # [N, B, M], row n - 1 is l_n

        # critic updates: Q0 and V targets, losses and gradients
        for placement, module in (("inside", head), ("outside", paper)):
            for backup in ("mean", "max"):
                for rho in (0.0, 2.0):
                    case = f"critic_{placement}_{backup}_rho{rho:g}"
                    rec.start()
                    key, sub = jax.random.split(key)
                    module.jit_update_critic(
                        sub,
                        a.q0,
                        a.q0_target,
                        a.vt,
                        a.vt_target,
                        a.actor_target,
                        a.behavior_target,
                        data,
                        STEPS,
                        GAMMA,
                        ETA,
                        rho,
                        SAMPLES,
                        "lcb",
                        backup == "max",
                        "ddpm",
                        TAU,
                        True,
                    )
                    q_log, v_log = rec.stop(case)
                    rec.put(f"{case}/target_q", q_log["closure"]["q0_target_value"][:, 0])
                    rec.put(f"{case}/penalty", q_log["closure"]["q0_penalty"][:, 0])
                    rec.put(f"{case}/target_v", v_log["closure"]["vt_target_value"][:, 0])
                    rec.put(f"{case}/loss_q", q_log["info"]["loss/q0_loss"])
                    rec.put(f"{case}/loss_v", v_log["info"]["loss/vt_loss"])
                    if placement == "inside" and backup == "mean" and rho == 2.0:
                        rec.put_tree(f"{case}/grad_q0", q_log["grads"])
                        rec.put_tree(f"{case}/grad_vt", v_log["grads"])

        # actor and behavior updates
        rec.start()
        key, sub = jax.random.split(key)
        head.jit_update_actor(
            sub,
            a.actor,
            a.actor_target,
            a.behavior_target,
            a.q0_target,
            a.vt_target,
            data,
            STEPS,
            ETA,
            2.0,
            SAMPLES,
            "lcb",
            False,
            "ddpm",
            TAU,
            True,
        )
        (actor_log,) = rec.stop("actor")
        rec.put("actor/loss", actor_log["info"]["loss/actor_loss"])
        rec.put_tree("actor/grad", actor_log["grads"])

        rec.start()
        key, sub = jax.random.split(key)
        jit_update_ddpm(sub, a.behavior, data.action, data.obs)
        (behavior_log,) = rec.stop("behavior")
        rec.put("behavior/loss", behavior_log["info"]["ddpm_loss"])
        rec.put_tree("behavior/grad", behavior_log["grads"])

        # a short training run: pre-training, the actor from the EMA behavior, then training
        rec.start()
        losses: dict[str, list[float]] = {}
        for i in range(PRETRAIN + TRAIN):
            bt = batch()
            put_batch(f"train/batch/{i:02d}", bt)
            if i < PRETRAIN:
                metrics = a.pretrain_step(bt, i)
            else:
                if i == PRETRAIN:
                    a.prepare_training()
                metrics = a.train_step(bt, i)
            for name in ("ddpm_loss", "loss/q0_loss", "loss/vt_loss", "loss/actor_loss"):
                losses.setdefault(name, []).append(float(metrics.get(name, np.nan)))
        rec.stop("train")
        for name, values in losses.items():
            rec.put(f"train/losses/{name.split('/')[-1]}", np.array(values, np.float32))
        for name in head.BDPOAgent.model_names:
            rec.put_tree(f"train/params/{name}", getattr(a, name).params)

        # evaluation: best of 10 candidates of the EMA actor by the ensemble-mean target Q
        rec.start()
        actions, _ = a.sample_actions(data.obs, num_samples=EVAL_CANDIDATES)
        rec.stop("eval")
        rec.put("eval/action", actions)

    rec.arrays["meta"] = np.array(json.dumps(meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **rec.arrays)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(rec.arrays)} arrays)")


if __name__ == "__main__":
    main()
