"""BDPO offline training recipe (Hydra), in the layout of TorchRL's sota-implementations.

    python recipes/bdpo_offline.py                          # embedded default: toy2d-8gaussians-cpu
    python recipes/bdpo_offline.py task=hopper-medium-v2 seed=1
    python recipes/bdpo_offline.py -m task=hopper-medium-v2,walker2d-medium-v2 seed=0,1,2,3,4
    python recipes/bdpo_offline.py hydra.run.dir=runs/x resume=true   # continue an interrupted run

Phases: behavior pre-training -> actor initialised from the EMA behavior ->
two-time-scale training (critics every step; the actor every k-th step after a
value warm-up; optional continued behavior training). The last line printed is
the path of the run's ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

#: signals received outside training; while imports run (``_DEFER``) they only wait here,
#: because an exception raised inside a C extension's initialisation (mujoco, imported by
#: TorchRL) comes out as "ImportError: initialization failed", or is swallowed by a library
#: that probes for an optional dependency
_SIGNALLED: list[int] = []
_DEFER = [False]


def _stop_outside_training(signum, _frame):
    """SIGINT/SIGTERM while no update runs (imports, data loading, start-up checks): exit 130/143,
    one line, no traceback."""
    _SIGNALLED.append(signum)
    if not _DEFER[0]:
        _exit_interrupted()


def _exit_interrupted() -> None:
    name = signal.Signals(_SIGNALLED[0]).name
    print(f"Interrupted ({name}) while no training update was running; stopped.", file=sys.stderr)
    raise SystemExit(128 + _SIGNALLED[0])


if __name__ == "__main__":  # before the slow imports; training installs its own handler
    signal.signal(signal.SIGINT, _stop_outside_training)
    signal.signal(signal.SIGTERM, _stop_outside_training)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

_RECIPES = str(Path(__file__).resolve().parent)
sys.path.insert(0, _RECIPES)
# Launchers that run jobs in new processes (submitit: local or SLURM) unpickle the job there;
# its helpers must be importable, so the recipe directory goes on the inherited PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_RECIPES, os.environ.get("PYTHONPATH")) if p)

# the settings and the run directory are checked with these (no torch) before torch is imported
from bdpo_config import ConfigError, exit_on_config_error, validate_config  # noqa: E402
from run_dir import (  # noqa: E402
    RunDirectory,
    RunDirError,
    check_resumable,
    failed_start_cleanup,
    resume_settings,
    trim_csv_logs,
    write_text_atomic,
)
from run_progress import in_multirun, plain_torchrl_logging, tag_job_log_lines  # noqa: E402

#: errors that are the user's to fix: one line, exit code 2 (the data errors join on import)
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, RunDirError)


def _import_runtime() -> None:
    """Imports torch, TorchRL and the recipe's helpers (seconds): only once the settings are
    valid, so that ``--help`` and configuration errors come at once."""
    cli = signal.getsignal(signal.SIGINT) is _stop_outside_training
    _DEFER[0] = cli  # a SIGINT during the imports stops the run once they are done
    try:
        _import_runtime_modules()
    finally:
        _DEFER[0] = False
    if cli and _SIGNALLED:
        _exit_interrupted()


def _import_runtime_modules() -> None:
    global np, torch, USER_ERRORS, QSelectionPolicy, MetricWindow, NonFiniteWatch
    global progress_display, stop_on_signals
    global evaluate_env, evaluation_seed, normalized_score
    global make_eval_env, make_loss_module, make_optimizers, make_replay_buffer
    global make_target_updaters, make_task_data, make_update_steps
    global set_threads_and_device, uses_cuda_graphs
    global BlockSampler, CheckpointError, CheckpointStore, GlobalRNGState, non_finite_entries
    global tensordict_fingerprint, EVAL_COUNTERS, eval_line, run_summary
    import numpy as np
    import torch
    from bdpo_utils import (
        evaluate_env,
        evaluation_seed,
        make_eval_env,
        make_loss_module,
        make_optimizers,
        make_replay_buffer,
        make_target_updaters,
        make_task_data,
        make_update_steps,
        set_threads_and_device,
        uses_cuda_graphs,
    )
    from run_summary import EVAL_COUNTERS, eval_line, run_summary
    from torchrl.checkpoint import GlobalRNGState
    from training_loop import MetricWindow, NonFiniteWatch, progress_display, stop_on_signals

    from torchrl_bdpo import QSelectionPolicy
    from torchrl_bdpo.checkpoint import (
        CheckpointError,
        CheckpointStore,
        non_finite_entries,
        tensordict_fingerprint,
    )
    from torchrl_bdpo.data import BlockSampler, DatasetUnavailableError, DatasetValidationError
    from torchrl_bdpo.scores import normalized_score

    USER_ERRORS = (ConfigError, RunDirError, DatasetUnavailableError, DatasetValidationError)


if __name__ != "__main__":  # imported (tests, benchmarks, a launcher's worker): load it all now
    _import_runtime()

log = logging.getLogger("bdpo")

#: what a checkpoint must hold to resume from it
CHECKPOINT_KEYS = (
    "config",
    "dataset",
    "step",
    "actor_initialized",
    "loss",
    "optimizers",
    "schedulers",
    "updaters",
    "evals",
    "wall_time",
    "rng",
    "batches",
)


class NumericalError(RuntimeError):
    """A loss or gradient became non-finite."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: a checkpoint was written and the run stopped."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at update {step}")
        self.signum, self.step = signum, step

    def __reduce__(self):
        return type(self), (self.signum, self.step)


class BDPOTrainer:
    """Holds the run's state; ``train()`` runs (or continues) the schedule."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        validate_config(cfg)
        self.cfg = cfg
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.device = set_threads_and_device(cfg)
        torch.manual_seed(int(cfg.seed))
        np.random.seed(int(cfg.seed))
        self.task = make_task_data(cfg)
        self.dataset = {"name": self.task.name, **tensordict_fingerprint(self.task.data)}
        self.store = CheckpointStore(self.ckpt_dir, required=CHECKPOINT_KEYS)
        # (update, path) of the newest good checkpoint, None before the first one
        self.last_checkpoint: tuple[int, Path] | None = None
        self.buffer = make_replay_buffer(self.task, cfg, self.device)
        self.batches = BlockSampler(
            self.buffer, int(cfg.optim.batch_size), int(cfg.data.sample_block)
        )
        self.loss = make_loss_module(cfg, self.task, self.device)
        self.updaters = make_target_updaters(self.loss, cfg)
        self.opts, self.scheds = make_optimizers(self.loss, cfg)
        self.pretrain_steps = int(cfg.optim.pretrain_steps)
        self.total_steps = self.pretrain_steps + int(cfg.optim.train_steps)
        self.step = 0  # global update counter over both phases
        self.actor_initialized = False
        self.evals: list[dict] = []
        self.wall_time = 0.0
        #: per phase, [updates, seconds] of update time (evaluations and checkpoints left out)
        self.update_time: dict[str, list] = {"pretrain": [0, 0.0], "train": [0, 0.0]}
        self.window: MetricWindow | None = None  # the open log window (train())
        self._window_state: dict = {}  # a resumed run's open window, for train()
        self.logger_run_id = uuid.uuid4().hex[
            :16
        ]  # a resumed run keeps logging to the same wandb run
        self.eval_env = None
        if self.task.domain != "toy2d" and cfg.eval.env:
            if not self.task.has_reference_scores:
                log.warning(
                    "Dataset %s has no reference scores (ref_min_score/ref_max_score): "
                    "evaluations report raw returns (metric 'return'), no normalised score.",
                    self.task.name,
                )
            if not self.task.env_id:
                raise ConfigError(
                    f"The dataset {self.task.name} names no evaluation env; set env.id=<Gymnasium id> "
                    "(or eval.env=false to train without environment evaluation)."
                )
            self.eval_env = make_eval_env(
                self.task.env_id,
                int(cfg.eval.episodes),
                int(cfg.env.max_episode_steps),
                self.task.obs_dim,
                device=self.device,
                env_spec=self.task.env_spec,
                action_dim=self.task.action_dim,
            )
        self.cuda_graphs = uses_cuda_graphs(cfg, self.device)
        # per loss: the first update with a non-finite value or gradient norm (no sync per update)
        self.watch = NonFiniteWatch(copy=self.cuda_graphs)
        self._update_fns()

    # ---------------------------------------------------------------- updates
    def _update_fns(self) -> None:
        """The three update steps (loss, gradients, clipping, Adam, EMA), shared with the benchmark.
        With ``compile=true`` each update is one compiled graph (``compile_scope=graph``) or only
        its losses are compiled (``losses``: always so under CUDA graphs)."""
        scope = "losses" if self.cuda_graphs else str(self.cfg.get("compile_scope", "graph"))
        self.steps = make_update_steps(
            self.loss,
            self.opts,
            self.updaters,
            self.device,
            grad_clip=float(self.cfg.optim.grad_clip),
            precision=str(self.cfg.get("precision", "fp32")),
            compile=bool(self.cfg.compile),
            compile_mode=str(self.cfg.compile_mode),
            compile_scope=scope,
        )

    def _watch(self, name: str, *values: torch.Tensor) -> None:
        """Watches a loss and its gradient norms for non-finite values (no tensor op here)."""
        self.watch.add(self.step, name, *values)

    def _check_finite(self) -> None:
        """Raises :class:`NumericalError` naming the loss and update (one host sync)."""
        bad = self.watch.first_bad()
        if bad:
            step = min(s for s, _ in bad)
            name = ", ".join(n for s, n in bad if s == step)  # in update order
            # the watch holds the updates done before the faulty one; counted from 1, like
            # the checkpoints' and logs' update counts
            raise NumericalError(
                f"{name} (or its gradient) became non-finite at update {step + 1}. Training "
                "stopped; "
                f"{self._checkpoint_note()}. Lower the learning rates or check the data for "
                "extreme values."
            )

    def _checkpoint_note(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written (the fault came before the first one)"
        step, path = self.last_checkpoint
        return f"the last good checkpoint, {path} (update {step}), is intact"

    def train_step(self) -> dict[str, torch.Tensor]:
        """One update; the returned tensors are valid until the next call (CUDA-graph outputs)."""
        o = self.cfg.optim
        if self.cuda_graphs:  # a new step: the previous step's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        batch = self.batches.sample()
        out: dict[str, torch.Tensor] = {}
        if self.step < self.pretrain_steps:
            lb, gb = self.steps.behavior(batch)
            self._watch("loss_behavior", lb, gb)
            out.update(loss_behavior=lb, grad_behavior=gb)
            return out
        if not self.actor_initialized:
            self.loss.init_actor_from_behavior()
            self.actor_initialized = True
        t = self.step - self.pretrain_steps
        lq, lv, gq, gv, meta_q, meta_v = self.steps.critic(batch)
        self.scheds["critic"].step()
        self._watch("loss_qvalue/loss_value", lq, lv, gq, gv)
        out.update(loss_qvalue=lq, loss_value=lv, grad_q=gq, grad_v=gv, **meta_q, **meta_v)
        # the authors' schedule: actor steps at t = 0, P, 2P, ... once t reaches the warm-up
        if t >= int(o.value_warmup_steps) and t % int(o.actor_update_period) == 0:
            la, ga, meta_a = self.steps.actor(batch)
            self.scheds["actor"].step()
            self._watch("loss_actor", la, ga)
            out.update(loss_actor=la, grad_actor=ga, **meta_a)
            if o.continue_behavior_training:
                lb, gb = self.steps.behavior(batch)  # the authors' code: the same batch
                self._watch("loss_behavior", lb, gb)
                out.update(loss_behavior=lb, grad_behavior=gb)
        return out

    # -------------------------------------------------------------- evaluation
    def evaluate(self) -> dict | None:
        """Evaluates the EMA actor; ``None`` when there is nothing to evaluate (``eval.env=false``)."""
        cfg = self.cfg
        t0 = time.time()
        result: dict = {"step": self.step, "train_step": max(0, self.step - self.pretrain_steps)}
        if self.task.domain == "toy2d":  # the final evaluation also writes samples and pictures
            from toy2d_evaluation import evaluate_toy2d  # matplotlib: 2D tasks only

            final = self.step == self.total_steps
            result.update(
                evaluate_toy2d(
                    self.loss, self.task, cfg, self.device, run_dir=self.run_dir if final else None
                )
            )
        elif self.eval_env is None:  # eval.env=false: nothing to roll out
            return None
        else:
            returns = evaluate_env(
                self.eval_env,
                QSelectionPolicy.from_loss(self.loss, int(cfg.eval.num_candidates)),
                int(cfg.env.max_episode_steps),
                seed=evaluation_seed(cfg.seed),
            )
            result.update(
                return_mean=float(returns.mean()),
                return_std=float(returns.std()),
                episodes=len(returns),
            )
            if self.task.has_reference_scores:
                scores = normalized_score(
                    returns, ref_min=self.task.ref_min_score, ref_max=self.task.ref_max_score
                )
                result.update(
                    normalized_score_mean=float(scores.mean()),
                    normalized_score_std=float(scores.std()),
                )
            else:  # no reference scores: raw returns only, never a made-up normalised score
                result.update(normalized_score_mean=None, normalized_score_std=None)
            result["metric"] = self.task.score_metric
        result["eval_time_s"] = time.time() - t0
        self.evals.append(result)
        return result

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "dataset": self.dataset,
            "step": self.step,
            "actor_initialized": self.actor_initialized,
            "loss": self.loss.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.opts.items()},
            "schedulers": {k: v.state_dict() for k, v in self.scheds.items()},
            "updaters": {k: v.state_dict() for k, v in self.updaters.items()},
            "evals": self.evals,
            "wall_time": self.wall_time,
            "update_time": self.update_time,
            "metric_window": self.window.state_dict() if self.window is not None else {},
            "logger_run_id": self.logger_run_id,
            "rng": GlobalRNGState().state_dict(),
            "batches": self.batches.state_dict(),  # the current block's batches still to come
        }

    def save_checkpoint(self) -> Path:
        """Writes a checkpoint if the whole state (parameters, EMA targets, optimisers) is finite."""
        self._check_finite()
        state = self.state_dict()
        bad = non_finite_entries({k: state[k] for k in ("loss", "optimizers", "updaters")})
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise NumericalError(
                f"{len(bad)} tensors of the training state are non-finite at update {self.step} "
                f"({', '.join(bad[:3])}{more}); no checkpoint was written and "
                f"{self._checkpoint_note()}. Lower the learning rates or check the data for "
                "extreme values."
            )
        path = self.store.save(state)
        self.last_checkpoint = (self.step, path)
        log.debug("checkpoint at step %d -> %s", self.step, path)
        return path

    def load_checkpoint(self) -> None:
        """Restores the newest good checkpoint; refuses other settings or other data."""
        if not self.store.exists():
            raise ConfigError(
                f"resume=true but there is no checkpoint at {self.store.latest}; run without "
                "resume=true, or point hydra.run.dir=... at the run directory to continue."
            )
        try:
            state, path = self.store.load(map_location=self.device)
        except CheckpointError as err:
            raise ConfigError(
                f"No usable checkpoint in {self.ckpt_dir} ({err}); the run cannot be resumed. "
                "Start it again with overwrite=true or in another hydra.run.dir."
            ) from err
        check_resumable(state, self.cfg, self.dataset)  # the same settings, the same data
        self.loss.load_state_dict(state["loss"])
        for k, v in state["optimizers"].items():
            self.opts[k].load_state_dict(v)
        for k, v in state["schedulers"].items():
            self.scheds[k].load_state_dict(v)
        for k, v in state["updaters"].items():
            self.updaters[k].load_state_dict(v)
        self.step = int(state["step"])
        self.actor_initialized = bool(state["actor_initialized"])
        self.evals = list(state["evals"])
        self.wall_time = float(state["wall_time"])
        # checkpoints written before update_time was kept: rates from the updates after resuming
        for phase, (n, secs) in state.get("update_time", {}).items():
            self.update_time[phase] = [int(n), float(secs)]
        self._window_state = dict(state.get("metric_window", {}))
        self.logger_run_id = str(state.get("logger_run_id", self.logger_run_id))
        GlobalRNGState().load_state_dict(state["rng"])
        self.batches.load_state_dict(state["batches"])
        self.last_checkpoint = (self.step, path)
        log.info("Resumed from %s at update %d.", path, self.step)

    # ------------------------------------------------------------------ loop
    def train(self, logger=None) -> None:
        """Runs (or continues) the schedule: updates, windowed logging, evaluations, checkpoints;
        SIGINT/SIGTERM stop it after the current update with a checkpoint."""
        cfg = self.cfg
        ckpt_every, eval_every = int(cfg.checkpoint.interval), int(cfg.eval.interval)
        phase_ends = (self.pretrain_steps, self.total_steps)
        window = MetricWindow(
            logger, int(cfg.logger.log_interval), phase_ends, self.step, copy=self.cuda_graphs
        )
        window.load_state_dict(self._window_state)
        self.window = window
        t_start = time.time() - self.wall_time
        ends = {"pretrain": self.pretrain_steps, "train": self.total_steps}
        with (
            stop_on_signals() as stop,
            progress_display(self.total_steps, self.step, self.task.name, ends) as advance,
        ):
            while self.step < self.total_steps:
                t0 = time.time()
                out = self.train_step()
                self.step += 1
                phase = "pretrain" if self.step <= self.pretrain_steps else "train"
                window.add(phase, out)
                advance(self.step, phase)
                if window.due(self.step):
                    window.flush(self.step, phase)
                t1 = time.time()
                clock = self.update_time[phase]
                clock[0], clock[1] = clock[0] + 1, clock[1] + (t1 - t0)
                train_t = self.step - self.pretrain_steps
                if train_t > 0 and (train_t % eval_every == 0 or self.step == self.total_steps):
                    self._evaluate_and_log(logger)
                due = self.step % ckpt_every == 0 or self.step == self.total_steps
                if due or stop.signum is not None:
                    self.wall_time = time.time() - t_start
                    self.save_checkpoint()
                if stop.signum is not None:
                    raise Interrupted(stop.signum, self.step)
                other = time.time() - t1  # evaluation and checkpoint: not update time
                window.exclude(other)
                advance.exclude(other)
            self._check_finite()
            self.wall_time = time.time() - t_start

    def _evaluate_and_log(self, logger) -> None:
        self._check_finite()
        result = self.evaluate()
        if result is None:
            return
        log.info("eval @ %d: %s", self.step, eval_line(result))
        if logger is not None:
            for k, v in result.items():  # counters are the x axis, not metrics
                if isinstance(v, (int, float)) and k not in EVAL_COUNTERS:
                    logger.log_scalar(f"eval/{k}", float(v), step=self.step)


def make_logger(cfg: DictConfig, run_dir: Path, run_id: str | None = None):
    """TorchRL logger of ``cfg.logger``; ``run_id`` names the wandb run (resumed if it exists)."""
    if cfg.logger.backend == "none":
        return None
    from torchrl.record.loggers import get_logger

    kwargs = {}
    if cfg.logger.backend == "wandb":
        kwargs = {
            "wandb_kwargs": {
                "mode": str(cfg.logger.wandb_mode),
                "project": str(cfg.logger.project),
                "dir": str(run_dir),
                "config": OmegaConf.to_container(cfg, resolve=True),
                "id": run_id,
            }
        }
    return get_logger(
        cfg.logger.backend,
        logger_name=str(run_dir / "logs"),
        experiment_name=f"{cfg.task_name}_seed{cfg.seed}",
        **kwargs,
    )


def run(cfg: DictConfig, run_dir: Path, trainer_cls: type[BDPOTrainer] = BDPOTrainer) -> Path:
    """Trains (or resumes) a run in ``run_dir`` and writes ``summary.json``; returns its path.

    The directory is locked for the run (one process per run directory); a start that fails
    or is refused writes nothing in it (see ``run_dir.RunDirectory``).
    """
    overwrite = bool(cfg.get("overwrite", False))
    with RunDirectory(run_dir, resume=bool(cfg.resume), overwrite=overwrite) as rd:
        return _run(cfg, rd, trainer_cls)


def _run(cfg: DictConfig, rd: RunDirectory, trainer_cls: type[BDPOTrainer]) -> Path:
    run_dir = rd.path
    path = run_dir / "summary.json"
    trainer = trainer_cls(cfg, run_dir)
    if cfg.resume:
        trainer.load_checkpoint()  # refuses a checkpoint written with other settings or data
        if trainer.step >= trainer.total_steps and path.exists():
            log.info("The run in %s is complete; nothing to do.", run_dir)
            if not (run_dir / "curves.png").exists():  # killed between the summary and the plot
                from plots import plot_learning_curves

                plot_learning_curves(run_dir)
            if trainer.eval_env is not None:
                trainer.eval_env.close(raise_if_closed=False)  # a SerialEnv never started
            return path
    with rd.disk_errors():
        return _train(cfg, rd, trainer)


def _train(cfg: DictConfig, rd: RunDirectory, trainer: BDPOTrainer) -> Path:
    run_dir, path = rd.path, rd.path / "summary.json"
    rd.begin(cfg)  # the start is accepted: from here on the run directory is written
    # the rows past the checkpoint (a fresh start: every row, of a run killed before its first
    # checkpoint) are the updates this run logs again
    dropped = trim_csv_logs(run_dir / "logs", trainer.step)
    if dropped:
        log.info("Dropped %d CSV log rows past update %d (logged again).", dropped, trainer.step)
    logger = make_logger(cfg, run_dir, trainer.logger_run_id)
    trainer.train(logger)
    if trainer.task.domain == "toy2d" and not any(
        e["step"] == trainer.total_steps for e in trainer.evals
    ):  # no training phase: the final evaluation (samples, pictures) did not run in the loop
        if not trainer.actor_initialized:  # show the policy training would start from
            trainer.loss.init_actor_from_behavior()
            trainer.actor_initialized = True
        log.info(
            "No training updates (optim.train_steps=0): the 2D samples and pictures show the "
            "behavior model (the actor is its EMA copy, as at the start of training)."
        )
        result = trainer.evaluate()
        log.info("eval @ %d (behavior model): %s", trainer.step, eval_line(result))
    ups = {
        phase: (n / secs if n and secs > 0 else None)
        for phase, (n, secs) in trainer.update_time.items()
    }
    if logger is not None:  # TorchRL's Logger.close: flushes, finishes a wandb run
        logger.close()
    summary = run_summary(
        cfg, trainer.task, trainer.evals, wall_time_s=trainer.wall_time, updates_per_s=ups
    )
    write_text_atomic(path, json.dumps(summary, indent=2, default=float))
    from plots import plot_learning_curves  # matplotlib: imported only when a run ends

    plot_learning_curves(run_dir)  # curves.png: losses, Q/V, KL terms, evaluations
    if trainer.eval_env is not None:
        trainer.eval_env.close(raise_if_closed=False)  # unstarted when no evaluation ran
    return path


def parse_and_validate(cfg: DictConfig) -> None:
    """Checks the settings before torch loads (exit code 2, one line), then loads it."""
    exit_on_config_error(validate_config, cfg, log)
    _import_runtime()


class _LastError(logging.Handler):
    """Remembers the last error line logged (a failed sweep job's reason)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


@hydra.main(config_path="config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if not in_multirun():
        _main(cfg, hydra_cfg, run_dir)
        return
    # a sweep job: its lines say whose they are (parallel jobs share a terminal), and a failure
    # is recorded for the sweep's report instead of ending the other jobs with this one
    tag_job_log_lines(f"{cfg.task_name} seed={cfg.seed}")
    last_error = _LastError()
    log.addHandler(last_error)
    try:
        _main(cfg, hydra_cfg, run_dir)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
        if code == 0 or code >= 128:  # finished, or interrupted: the sweep stops with it
            raise
        _record_failure(hydra_cfg, run_dir, code, last_error.message)
    except Exception as err:
        log.exception("The job failed:")
        _record_failure(hydra_cfg, run_dir, 1, f"{type(err).__name__}: {err}")
    finally:
        log.removeHandler(last_error)


def _record_failure(hydra_cfg, run_dir: Path, code: int, error: str) -> None:
    from bdpo_callbacks import record_failed_job

    record_failed_job(
        Path(str(hydra_cfg.sweep.dir)),
        int(hydra_cfg.job.num),
        list(hydra_cfg.overrides.task),
        run_dir,
        code,
        error,
    )


def _main(cfg: DictConfig, hydra_cfg, run_dir: Path) -> None:
    with failed_start_cleanup(run_dir):  # a failed start leaves no empty run directory behind
        try:
            if cfg.resume:  # the run directory's saved settings, plus harmless overrides
                cfg = resume_settings(
                    cfg, run_dir, list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices)
                )
            parse_and_validate(cfg)  # before torch loads: a settings error comes at once
            plain_torchrl_logging()  # no ANSI colour codes from TorchRL's own handler
            path = run(cfg, run_dir)
        except USER_ERRORS as err:
            log.error("%s", err)
            sys.exit(2)
        except NumericalError as err:
            log.error("%s", err)
            sys.exit(3)
        except Interrupted as err:
            log.warning(
                "Interrupted (%s); checkpoint written to %s. Re-run with resume=true "
                "hydra.run.dir=%s to continue.",
                err,
                run_dir / "checkpoints" / "latest.torchrl",
                run_dir,
            )
            sys.exit(128 + err.signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        except Exception:
            if _SIGNALLED:  # a library turned the interrupt into its own error (message printed)
                sys.exit(128 + _SIGNALLED[0])
            raise
    print(path)


if __name__ == "__main__":
    main()
