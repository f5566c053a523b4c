"""Recorded parity with the authors' JAX code (flow-rl), without JAX.

``tests/data/flowrl_parity.npz`` was written by ``benchmarks/parity/record_flowrl.py`` from flow-rl's
own functions: its random weights, inputs, every random draw in call order, and every output. These
tests copy the weights into our modules, replay the draws through ``torch.randn``/``randn_like``/
``randint`` (a draw of another kind or size, or one left over, fails the test) and require our outputs
to equal theirs to 1e-4 in float32. Our runs use the authors' choices (i.i.d. diffusion steps, mean
element reduction, the recipe's default schedule settings).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch import nn

from torchrl_bdpo import (
    BDPODiffusionActor,
    BDPOLoss,
    DiffusionSampler,
    DiffusionValueEnsemble,
    GroupSoftUpdate,
    NoiseNet,
    QEnsemble,
    QSelectionPolicy,
    VPSchedule,
    make_qvalue_operator,
    make_value_operator,
    sinusoidal_embedding,
)
from torchrl_bdpo.modules.critics import EnsembleLayerNorm, EnsembleLinear

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
FIXTURE = ROOT / "tests" / "data" / "flowrl_parity.npz"
ATOL = 1e-4


@pytest.fixture(scope="module")
def rec() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return dict(data.items())


@pytest.fixture(scope="module")
def meta(rec) -> dict:
    return json.loads(str(rec["meta"]))


def close(ours: torch.Tensor, theirs: np.ndarray, what: str, atol: float = ATOL) -> None:
    theirs_t = torch.as_tensor(np.asarray(theirs), dtype=ours.dtype)
    assert ours.shape == theirs_t.shape, f"{what}: shape {tuple(ours.shape)} vs {theirs_t.shape}"
    err = (ours.detach() - theirs_t).abs().max().item()
    assert err <= atol, f"{what}: max |ours - theirs| = {err:.3g} > {atol}"


# ----------------------------------------------------------------------------- draws
class Replay:
    """Serves flow-rl's recorded draws, in order, to torch's samplers."""

    def __init__(self, rec: dict, case: str) -> None:
        kinds = json.loads(str(rec[f"draws/{case}/kinds"]))
        self.case = case
        self.draws = [(kind, rec[f"draws/{case}/{i:03d}"]) for i, kind in enumerate(kinds)]
        self.pos = 0

    def take(self, kind: str, shape: tuple[int, ...]) -> np.ndarray:
        where = f"{self.case}, draw {self.pos}"
        if self.pos >= len(self.draws):
            raise AssertionError(f"{where}: ours draws one more {kind} of shape {shape}")
        theirs_kind, value = self.draws[self.pos]
        self.pos += 1
        if theirs_kind != kind or value.size != math.prod(shape):
            raise AssertionError(
                f"{where}: ours is a {kind} of shape {shape}, theirs a {theirs_kind} of "
                f"shape {value.shape}"
            )
        return value.reshape(shape)

    def randn(self, *size, dtype=None, device=None, **_):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        return torch.as_tensor(self.take("normal", tuple(shape)), dtype=dtype or torch.float32)

    def randn_like(self, t: torch.Tensor, **_):
        return torch.as_tensor(self.take("normal", tuple(t.shape)), dtype=t.dtype)

    def randint(self, *args, size=None, dtype=None, **_):
        if size is not None:
            args = (*args, size)
        low, high, size = (0, *args) if len(args) == 2 else args
        value = self.take("randint", tuple(size))
        assert ((value >= low) & (value < high)).all(), (
            f"{self.case}: randint outside [{low}, {high})"
        )
        return torch.as_tensor(value, dtype=dtype or torch.long)

    def finish(self) -> None:
        left = len(self.draws) - self.pos
        assert left == 0, f"{self.case}: {left} of flow-rl's draws were not used by ours"


@contextlib.contextmanager
def replay(rec: dict, case: str, monkeypatch: pytest.MonkeyPatch):
    r = Replay(rec, case)
    with monkeypatch.context() as m:
        m.setattr(torch, "randn", r.randn)
        m.setattr(torch, "randn_like", r.randn_like)
        m.setattr(torch, "randint", r.randint)
        yield r
    r.finish()


# --------------------------------------------------------------- weights and names
def _layers(module: nn.Module, prefix: str, kinds) -> list[str]:
    return [
        name
        for name, m in module.named_modules()
        if name.startswith(prefix) and isinstance(m, kinds)
    ]


def flax_names(kind: str, module: nn.Module) -> dict[str, tuple[str, bool]]:
    """Our parameter names -> (flow-rl's parameter name, whether to transpose)."""
    linear, norm = (nn.Linear, EnsembleLinear), (nn.LayerNorm, EnsembleLayerNorm)
    groups: list[tuple[list[str], list[str]]] = []
    if kind == "noise":
        groups.append((_layers(module, "step_mlp", linear), ["MLP_0/Dense_0", "MLP_0/Dense_1"]))
        trunk = _layers(module, "trunk", linear)
        groups.append((trunk, [f"noise_predictor/Dense_{i}" for i in range(len(trunk))]))
    else:
        if kind == "v":
            groups.append(
                (_layers(module, "step_mlp", linear), ["base/MLP_0/Dense_0", "base/MLP_0/Dense_1"])
            )
        trunk = _layers(module, "mlp", linear)
        names = [f"base/backbone/Dense_{i}" for i in range(len(trunk) - 1)] + ["base/Dense_0"]
        groups.append((trunk, names))
        norms = _layers(module, "mlp", norm)
        groups.append((norms, [f"base/backbone/LayerNorm_{i}" for i in range(len(norms))]))
    out = {}
    for ours, theirs in groups:
        assert len(ours) == len(theirs), (kind, ours, theirs)
        for o, t in zip(ours, theirs):
            is_norm = "LayerNorm" in t
            out[f"{o}.weight"] = (
                f"{t}/{'scale' if is_norm else 'kernel'}",
                kind == "noise" and not is_norm,
            )
            out[f"{o}.bias"] = (f"{t}/bias", False)
    return out


def _theirs(rec: dict, key: str, transpose: bool, shape: torch.Size) -> torch.Tensor:
    value = torch.from_numpy(rec[key])
    if transpose:
        value = value.T
    return value.reshape(shape)  # ensemble biases and norms carry a broadcast axis


def _suffix_lookup(params: TensorDict, name: str) -> torch.Tensor:
    flat = params.flatten_keys(".")
    hits = [k for k in flat.keys() if k == name or k.endswith("." + name)]
    assert len(hits) == 1, f"{name}: {hits}"
    return flat.get(hits[0])


def load(params: TensorDict, rec: dict, source: str, kind: str, module: nn.Module) -> None:
    """Copies flow-rl's ``params/<source>`` into a loss's parameter TensorDict for ``module``."""
    with torch.no_grad():
        for ours, (theirs, transpose) in flax_names(kind, module).items():
            tensor = _suffix_lookup(params, ours)
            tensor.copy_(_theirs(rec, f"{source}/{theirs}", transpose, tensor.shape))


def grads_close(params: TensorDict, rec: dict, prefix: str, kind: str, module: nn.Module) -> None:
    for ours, (theirs, transpose) in flax_names(kind, module).items():
        tensor = _suffix_lookup(params, ours)
        assert tensor.grad is not None, ours
        close(
            tensor.grad,
            _theirs(rec, f"{prefix}/{theirs}", transpose, tensor.shape).numpy(),
            f"grad {ours}",
        )


# ------------------------------------------------------------------ our networks
def noise_net(meta) -> NoiseNet:
    s = meta["sizes"]
    d = s["time_dim"]
    return NoiseNet(
        s["obs"], s["act"], hidden_sizes=tuple(s["noise_hidden"]), embed_dim=d, step_hidden=(d, d)
    )


def q_net(meta, layer_norm: bool = False) -> QEnsemble:
    s = meta["sizes"]
    return QEnsemble(
        s["obs"], s["act"], s["members"], tuple(s["critic_hidden"]), layer_norm=layer_norm
    )


def v_net(meta) -> DiffusionValueEnsemble:
    s = meta["sizes"]
    d = s["time_dim"]
    return DiffusionValueEnsemble(
        s["obs"],
        s["act"],
        s["members"],
        tuple(s["critic_hidden"]),
        embed_dim=d,
        step_hidden=(2 * d, d),
    )


def actor(meta) -> BDPODiffusionActor:
    return BDPODiffusionActor(
        DiffusionSampler(noise_net(meta), VPSchedule(meta["sizes"]["steps"]), clip_sample=True)
    )


#: our loss's parameter groups -> (flow-rl's model name, network kind)
GROUPS = {
    "actor_network_params": ("actor", "noise"),
    "target_actor_network_params": ("actor_target", "noise"),
    "behavior_network_params": ("behavior", "noise"),
    "target_behavior_network_params": ("behavior_target", "noise"),
    "qvalue_network_params": ("q0", "q"),
    "target_qvalue_network_params": ("q0_target", "q"),
    "value_network_params": ("vt", "v"),
    "target_value_network_params": ("vt_target", "v"),
}


def inner(loss: BDPOLoss, group: str) -> nn.Module:
    """The network (noise net, Q or V ensemble) whose parameters a group holds."""
    if "actor" in group:
        return loss.actor_network.policy.noise_net
    if "behavior" in group:
        return loss.behavior_network.policy.noise_net
    return (loss.qvalue_network if "qvalue" in group else loss.value_network).module


def make_loss(
    rec, meta, *, rho=2.0, backup="mean", placement="inside", prefix="params"
) -> BDPOLoss:
    loss = BDPOLoss(
        actor(meta),
        make_qvalue_operator(q_net(meta)),
        make_value_operator(v_net(meta)),
        actor(meta),
        eta=meta["eta"],
        rho=rho,
        num_samples=meta["sizes"]["samples"],
        backup=backup,
        penalty_placement=placement,
    ).make_value_estimator(gamma=meta["gamma"])
    # the recipe's EMA groups (they copy online -> target once, so load afterwards)
    groups = [g[: -len("_params")] for g in GROUPS if not g.startswith("target_")]
    GroupSoftUpdate(loss, groups=groups, tau=0.005)
    load_all(loss, rec, prefix)
    return loss


def load_all(loss: BDPOLoss, rec: dict, prefix: str = "params") -> None:
    for group, (source, kind) in GROUPS.items():
        load(getattr(loss, group), rec, f"{prefix}/{source}", kind, inner(loss, group))


def batch_td(rec: dict, prefix: str = "batch") -> TensorDict:
    t = {
        k: torch.from_numpy(rec[f"{prefix}/{k}"])
        for k in ("obs", "action", "reward", "terminal", "next_obs")
    }
    b = t["obs"].shape[0]
    return TensorDict(
        {
            "observation": t["obs"],
            "action": t["action"],
            "next": {
                "observation": t["next_obs"],
                "reward": t["reward"],
                "terminated": t["terminal"].bool(),
                "done": t["terminal"].bool(),
            },
        },
        [b],
    )


# -------------------------------------------------------------------------- tests
def test_fixture_is_small_and_names_its_source(meta):
    assert FIXTURE.stat().st_size < 1_000_000
    assert meta["flowrl_head"].startswith("bae22f4") and meta["flowrl_paper"].startswith("9e8c667")


def test_schedule(rec, meta):
    s = VPSchedule(meta["sizes"]["steps"])
    close(s.betas, rec["schedule/betas"], "betas", atol=1e-6)
    close(s.alphas, rec["schedule/alphas"], "alphas", atol=1e-6)
    close(s.alpha_bars, rec["schedule/alpha_bars"], "alpha_bars", atol=1e-6)


def test_step_embedding(rec, meta):
    steps = torch.from_numpy(rec["embedding/steps"])
    close(sinusoidal_embedding(steps, meta["sizes"]["time_dim"]), rec["embedding/out"], "embedding")


def test_networks(rec, meta):
    loss = make_loss(rec, meta)
    obs, act = torch.from_numpy(rec["batch/obs"]), torch.from_numpy(rec["batch/action"])
    x, n = torch.from_numpy(rec["nets/x"]), torch.from_numpy(rec["nets/t"]).long()
    with loss.actor_network_params.to_module(loss.actor_network):
        close(loss.actor_network.policy.predict_noise(obs, x, n), rec["nets/noise"], "noise net")
    close(loss._q(loss.qvalue_network_params, obs, act).T, rec["nets/q"], "Q")
    close(loss._v(loss.value_network_params, obs, x, n).T, rec["nets/v"], "V")
    q_ln = q_net(meta, layer_norm=True)
    params = TensorDict.from_module(q_ln)
    load(params, rec, "params/q0_ln", "q", q_ln)
    close(q_ln(obs, act).T, rec["nets/q_ln"], "Q with LayerNorm")


def test_reverse_chain_and_its_kl(rec, meta, monkeypatch):
    loss = make_loss(rec, meta)
    m = meta["sizes"]["samples"]
    next_obs = torch.from_numpy(rec["batch/next_obs"])
    s = next_obs.unsqueeze(-2).expand(-1, m, -1)
    with (
        replay(rec, "chain", monkeypatch),
        loss.target_actor_network_params.to_module(loss.actor_network),
    ):
        chain = loss.actor_network.policy.sample(s, return_chain=True)
    close(chain.action, rec["chain/action"], "x_0")
    close(chain.states[1:], rec["chain/states"], "x_1..x_N")
    close(chain.noise_preds, rec["chain/noise_preds"], "noise predictions")
    with replay(rec, "chain", monkeypatch):
        action, kl = loss._penalised_chain(s)
    close(action, rec["chain/action"], "x_0 of the penalised chain")
    close(kl, rec["chain/kl"], "per-step KL")


CRITIC_CASES = [
    (placement, backup, rho)
    for placement in ("inside", "outside")
    for backup in ("mean", "max")
    for rho in (0.0, 2.0)
]


@pytest.mark.parametrize("placement,backup,rho", CRITIC_CASES)
def test_critic_targets_and_losses(rec, meta, monkeypatch, placement, backup, rho):
    case = f"critic_{placement}_{backup}_rho{rho:g}"
    loss = make_loss(rec, meta, rho=rho, backup=backup, placement=placement)
    td = batch_td(rec)
    with replay(rec, case, monkeypatch):
        target_q, meta_q = loss.q_target(td)
        target_v, _, _ = loss.value_target(td)
    close(target_q, rec[f"{case}/target_q"], "y_Q")
    close(meta_q["penalty"], rec[f"{case}/penalty"].mean(), "P(s')")
    close(target_v, rec[f"{case}/target_v"], "y_V")
    with replay(rec, case, monkeypatch):
        loss_q, _ = loss.qvalue_loss(td)
        loss_v, _ = loss.value_loss(td)
    close(
        loss_q,
        rec[f"{case}/loss_q"],
        "critic loss",
        atol=ATOL * max(1.0, float(rec[f"{case}/loss_q"])),
    )
    close(loss_v, rec[f"{case}/loss_v"], "value loss")
    if f"{case}/grad_q0/base/Dense_0/kernel" in rec:
        (loss_q + loss_v).backward()
        for group, prefix in (
            ("qvalue_network_params", "grad_q0"),
            ("value_network_params", "grad_vt"),
        ):
            grads_close(
                getattr(loss, group), rec, f"{case}/{prefix}", GROUPS[group][1], inner(loss, group)
            )


@pytest.mark.parametrize(
    "case,group", [("actor", "actor_network"), ("behavior", "behavior_network")]
)
def test_actor_and_behavior_losses_and_gradients(rec, meta, monkeypatch, case, group):
    loss = make_loss(rec, meta)
    with replay(rec, case, monkeypatch):
        value, _ = getattr(loss, f"{case}_loss")(batch_td(rec))
    close(value, rec[f"{case}/loss"], f"{case} loss")
    value.backward()
    params = f"{group}_params"
    grads_close(getattr(loss, params), rec, f"{case}/grad", "noise", inner(loss, params))


# ---------------------------------------------------------------- training steps
class RecordedBatches:
    """A batch-sampler stand-in (the trainer's ``batches``) that serves flow-rl's batches in order."""

    def __init__(self, rec: dict, count: int) -> None:
        self.batches = [batch_td(rec, f"train/batch/{i:02d}") for i in range(count)]
        self.served = 0

    def sample(self) -> TensorDict:
        self.served += 1
        return self.batches[self.served - 1]


def recipe_trainer(rec: dict, meta: dict, loss: BDPOLoss):
    """The recipe's update machinery (optimisers, schedules, EMA updaters, ``train_step``) over
    ``loss``, with the recorded run's settings and batches."""
    from bdpo_offline import BDPOTrainer
    from bdpo_utils import make_optimizers, make_target_updaters
    from hydra import compose, initialize_config_dir
    from training_loop import NonFiniteWatch

    t = meta["train"]
    overrides = [
        "task=custom",
        "data.name=parity",
        f"loss.eta={meta['eta']}",
        "loss.rho=2.0",
        f"loss.gamma={meta['gamma']}",
        f"optim.batch_size={meta['sizes']['batch']}",
        f"optim.pretrain_steps={t['pretrain']}",
        f"optim.train_steps={t['decay']}",  # flow-rl's cosine horizons; the run stops earlier
        f"optim.value_warmup_steps={t['warmup']}",
        f"optim.actor_update_period={t['period']}",
        f"optim.actor_lr={t['actor_lr']}",
        f"optim.critic_lr={t['critic_lr']}",
        f"optim.behavior_lr={t['behavior_lr']}",
        f"optim.grad_clip={t['clip']}",
        f"optim.critic_tau={t['tau']}",
        f"optim.actor_tau={t['tau']}",
        f"optim.behavior_tau={t['tau']}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "recipes" / "config"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    trainer = BDPOTrainer.__new__(BDPOTrainer)  # the update path only: no data set, env or run dir
    trainer.cfg, trainer.loss, trainer.device = cfg, loss, torch.device("cpu")
    trainer.updaters = make_target_updaters(loss, cfg)
    load_all(loss, rec)  # the updaters copied online -> target: restore flow-rl's targets
    trainer.opts, trainer.scheds = make_optimizers(loss, cfg)
    trainer.pretrain_steps, trainer.step, trainer.actor_initialized = t["pretrain"], 0, False
    trainer.batches = RecordedBatches(rec, t["pretrain"] + t["train"])
    trainer.watch, trainer.cuda_graphs = NonFiniteWatch(), False
    trainer._update_fns()
    return trainer


def test_training_run_equals_flowrl(rec, meta, monkeypatch):
    """Pre-training, the actor copied from the EMA behavior model, then critic steps every update and
    actor + behavior steps after the warm-up every P-th update: Adam, grad-norm clipping per network,
    cosine learning rates, EMA targets. Every parameter of the eight networks ends equal."""
    t = meta["train"]
    loss = make_loss(rec, meta)
    trainer = recipe_trainer(rec, meta, loss)
    names = {"loss_behavior": "ddpm_loss", "loss_qvalue": "q0_loss", "loss_value": "vt_loss"}
    names["loss_actor"] = "actor_loss"
    with replay(rec, "train", monkeypatch):
        for i in range(t["pretrain"] + t["train"]):
            out = trainer.train_step()
            trainer.step += 1
            for ours, theirs in names.items():
                expected = rec[f"train/losses/{theirs}"][i]
                assert (ours in out) == (not np.isnan(expected)), (i, ours)
                if ours in out:
                    close(
                        out[ours],
                        expected,
                        f"update {i}: {ours}",
                        atol=ATOL * max(1.0, abs(expected)),
                    )
    worst = {}
    for group, (source, kind) in GROUPS.items():
        params = getattr(loss, group)
        for ours, (theirs, transpose) in flax_names(kind, inner(loss, group)).items():
            tensor = _suffix_lookup(params, ours).detach()
            expected = _theirs(rec, f"train/params/{source}/{theirs}", transpose, tensor.shape)
            # relative to the tensor's scale; zero-initialised biases move by ~lr per update
            rel = (tensor - expected).abs().max() / expected.abs().max().clamp_min(1e-2)
            worst[f"{group}.{ours}"] = rel.item()
    name = max(worst, key=worst.get)
    assert worst[name] <= 1e-4, f"{name}: relative difference {worst[name]:.3g}"


def test_best_of_ten_selection_equals_flowrl(rec, meta, monkeypatch):
    loss = make_loss(rec, meta, prefix="train/params")
    policy = QSelectionPolicy.from_loss(loss, meta["train"]["eval_candidates"])
    with replay(rec, "eval", monkeypatch):
        action = policy.select(torch.from_numpy(rec["batch/obs"]))
    close(action, rec["eval/action"], "selected actions")
