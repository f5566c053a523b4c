"""The run directory's life cycle: creation, refusals, the one-process lock, resume settings, debris.

No torch here: these checks run before the heavy imports and before any data are loaded.

* :class:`RunDirCallback` (a Hydra callback) creates the run directory before Hydra would,
  so a run directory that is a file or cannot be created is one line (exit code 2), and
  remembers which directories it created.
* :class:`RunDirectory` refuses a directory that holds a run unless ``resume=true`` or
  ``overwrite=true``, holds an OS lock (``fcntl.flock``) on ``<run dir>/.lock`` for the
  run's lifetime (released by the OS on any exit, ``kill -9`` included), removes temporary
  files a killed write left, and writes the run's own files only once a start is accepted.
* :func:`failed_start_cleanup` removes the directories a failed start created.
* :func:`resume_settings` takes a resumed run's settings from its directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bdpo_config import ConfigError
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("bdpo")

LOCK_NAME = ".lock"
CHECKPOINT_DIR = "checkpoints"
#: files whose presence means a directory holds a run
RUN_MARKERS = (
    *(f"{CHECKPOINT_DIR}/{name}" for name in ("latest.torchrl", "previous.torchrl")),
    *(f"{CHECKPOINT_DIR}/{name}" for name in ("latest.pt", "previous.pt")),  # version 0.1
    "summary.json",
)
#: what a run writes in its directory (removed by ``overwrite=true``, nothing else is)
RUN_OUTPUTS = (
    CHECKPOINT_DIR,
    "summary.json",
    "config.yaml",
    ".hydra",
    "logs",
    "wandb",
    "samples.npz",
    "samples.png",
    "value_landscape.png",
    "curves.png",
    "bdpo_offline.log",
)
#: settings that only control the run, never what it computes (top-level keys)
RUN_ONLY = (
    "resume",
    "overwrite",
    "threads",
    "logger",
    "device",
    "compile",
    "compile_mode",
    "compile_scope",
    "hydra",
)
#: settings a resume may change: the run-only ones, the checkpoint/evaluation cadence and where
#: the data are found (a moved file; the checkpoint's data fingerprint refuses other data)
RESUME_FREE = (
    *RUN_ONLY,
    "checkpoint.interval",
    "eval.interval",
    "eval.episodes",
    "data.path",
    "data.d4rl_root",
    "data.download",
)
#: settings added after runs were first written, with the value that earlier runs used: a
#: checkpoint without them compares as having that value (it still resumes)
ADDED_SETTINGS = {
    "critic.v_step_hidden": [128, 64],
    "data.max_episode_steps": None,
}
_DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EIO,
}
_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default

# run directory (absolute path) -> the directories RunDirCallback created for it
_CREATED: dict[str, list[Path]] = {}


class RunDirError(ValueError):
    """A run-directory or resume problem, reported as one line (exit code 2)."""


# --------------------------------------------------------------------------- creation
def make_dirs(path: Path) -> list[Path]:
    """Creates ``path`` and its missing parents; returns the directories created (outermost first)."""
    path = Path(os.path.abspath(path))
    missing = []
    for p in (path, *path.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():
            what = "the run directory" if p == path else f"a parent of the run directory {path}"
            raise RunDirError(
                f"{p} ({what}) is a file, not a directory; choose another hydra.run.dir=<dir>."
            )
        missing.append(p)
    created = []
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:  # made by a concurrent start
            continue
        except OSError as err:
            remove_empty(created)
            raise RunDirError(
                f"Cannot create the run directory {path}: {err.strerror}; choose a writable "
                "hydra.run.dir=<dir>."
            ) from err
        created.append(p)
    return created


def remove_empty(dirs: list[Path]) -> None:
    """Removes ``dirs`` (outermost first) from the innermost out while they are empty."""
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            return


class RunDirCallback(Callback):
    """Creates the run (or sweep) directory before Hydra does, so its problems are one line."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(config.hydra.run.dir, record=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(config.hydra.sweep.dir, record=False)

    @staticmethod
    def _make(directory, record: bool) -> None:
        path = os.path.abspath(str(directory))
        try:
            created = make_dirs(Path(path))
        except RunDirError as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)
        if record:
            _CREATED[path] = created


@contextlib.contextmanager
def failed_start_cleanup(run_dir: Path) -> Iterator[None]:
    """On any failure inside, removes the directories created for ``run_dir`` if they are empty.

    Those are the ones :class:`RunDirCallback` created; without its record (a multirun
    job's own directory, created by Hydra), ``run_dir`` itself if it is empty now.
    """
    path = os.path.abspath(run_dir)
    created = _CREATED.pop(path, None)
    if created is None:
        created = [Path(path)] if Path(path).is_dir() and not any(Path(path).iterdir()) else []
    try:
        yield
    except SystemExit as err:
        if err.code not in (None, 0):
            remove_empty(created)
        raise
    except BaseException:
        remove_empty(created)
        raise


# ------------------------------------------------------------------------ run directory
def holds_run(run_dir: Path) -> list[str]:
    """The files that show ``run_dir`` holds a run (a checkpoint, a summary)."""
    return [m for m in RUN_MARKERS if (run_dir / m).exists()]


class RunDirectory:
    """One run's directory, held (locked) from :meth:`open` to :meth:`close`.

    Args:
        path: the run directory (created with its parents when missing).
        resume: ``resume=true``: the directory's run is continued.
        overwrite: ``overwrite=true``: a run already in the directory is replaced, once
            the new run has started (its data loaded, its components built).
    """

    def __init__(self, path: Path, *, resume: bool, overwrite: bool) -> None:
        self.path = Path(path)
        self.resume, self.overwrite = bool(resume), bool(overwrite)
        self.created: list[Path] = []
        self._fd: int | None = None
        self._made_lock = False  # whether this start created the lock file
        self._handler: logging.Handler | None = None

    def __enter__(self) -> RunDirectory:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None and not (
            issubclass(exc_type, SystemExit) and exc.code in (None, 0)
        )
        self.close(failed=failed)

    def open(self) -> None:
        """Creates and locks the directory and refuses what must not start; writes nothing else."""
        if self.resume and self.overwrite:
            raise RunDirError(
                "resume=true continues the run in the directory and overwrite=true replaces it; "
                "choose one."
            )
        self.created = make_dirs(self.path)
        try:
            ckpt = self.path / CHECKPOINT_DIR
            if ckpt.exists() and not ckpt.is_dir():
                raise RunDirError(
                    f"{ckpt} is a file, but the run keeps its checkpoints in that directory; "
                    "move the file away or choose another hydra.run.dir=<dir>."
                )
            self._lock()
            found = holds_run(self.path)
            if self.resume and not any(m.startswith(CHECKPOINT_DIR) for m in found):
                raise RunDirError(
                    f"resume=true but there is no checkpoint in {ckpt}; run without resume=true, "
                    "or point hydra.run.dir=<dir> at the run directory to continue."
                )
            if found and not (self.resume or self.overwrite):
                raise RunDirError(
                    f"{self.path} already holds a run ({', '.join(found)}): continue it with "
                    "resume=true, start elsewhere with hydra.run.dir=<another dir>, or replace it "
                    "with overwrite=true."
                )
            for d in (self.path, ckpt, self.path / ".hydra"):
                _remove_temp_files(d)
        except BaseException:
            self.close(failed=True)
            raise

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        try:
            try:
                self._fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                self._made_lock = True
            except FileExistsError:
                self._fd = os.open(lock, os.O_RDWR)
        except OSError as err:
            raise RunDirError(
                f"Cannot write in the run directory {self.path}: {err.strerror}; choose a "
                "writable hydra.run.dir=<dir>."
            ) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(self._fd)
            self._fd = None
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid = lock.read_text().strip() if lock.is_file() else ""
            if not _alive(pid):  # the holder has not written its pid yet: the old one is stale
                pid = ""
            raise RunDirError(
                f"{self.path} is in use by another process{f' (pid {pid})' if pid else ''}: "
                "one process per run directory. Wait for it to end, or choose another "
                "hydra.run.dir=<dir>."
            ) from None

    def begin(self, cfg: DictConfig) -> None:
        """The start is accepted: replaces an old run (``overwrite=true``), writes the config files
        and the pid, and logs to ``<run dir>/<job>.log``."""
        # from here on a failure is the run's, not a failed start: its directory stays
        self.created, self._made_lock = [], False
        old = [p for p in (self.path / n for n in RUN_OUTPUTS) if p.exists() or p.is_symlink()]
        if self.overwrite and old:
            log.warning("overwrite=true: replacing the run in %s.", self.path)
            for p in old:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        (self.path / CHECKPOINT_DIR).mkdir(exist_ok=True)
        write_text_atomic(self.path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        hydra = _hydra_config()
        if hydra is not None and not (self.path / ".hydra").is_dir():
            # Hydra's own record of the run (hydra.output_subdir=null: written only here, once)
            out = self.path / ".hydra"
            out.mkdir()
            write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg))
            write_text_atomic(out / "hydra.yaml", OmegaConf.to_yaml(HydraConfig.instance().cfg))
            write_text_atomic(out / "overrides.yaml", OmegaConf.to_yaml(hydra.overrides.task))
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        if hydra is not None:
            self._handler = logging.FileHandler(self.path / f"{hydra.job.name}.log")
            self._handler.setFormatter(logging.Formatter(_LOG_FORMAT))
            logging.getLogger().addHandler(self._handler)

    def close(self, failed: bool = False) -> None:
        """Releases the lock; after a failed start also removes what :meth:`open` created."""
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._fd is None:
            return
        if failed and self._made_lock:
            (self.path / LOCK_NAME).unlink()  # leave no trace of the failed start
        os.close(self._fd)  # releases the flock
        self._fd = None
        if failed:
            remove_empty(self.created)

    @contextlib.contextmanager
    def disk_errors(self, note: str = "") -> Iterator[None]:
        """Turns a failure to write (disk full, read-only, no permission) into one :class:`RunDirError`."""
        try:
            yield
        except OSError as err:
            if err.errno not in _DISK_ERRNOS:
                raise
            where = f" ({err.filename})" if err.filename else ""
            raise RunDirError(
                f"Cannot write in the run directory {self.path}: {err.strerror}{where}. "
                f"Free space or fix the directory, then resume with resume=true.{note}"
            ) from err


def _remove_temp_files(directory: Path) -> None:
    """Removes the ``.<name>.*.tmp`` files a killed atomic write left in ``directory`` (and
    the staging files and directories of a checkpoint's write, ``.<name>.*.tmp.*``)."""
    if directory.is_dir():
        for p in (*directory.glob(".*.tmp"), *directory.glob(".*.tmp.*")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
            log.info("Removed %s, left by an interrupted write.", p)


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` atomically (a temporary ``.<name>.*.tmp`` file, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _alive(pid: str) -> bool:
    """Whether ``pid`` (text) names a running process."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def trim_csv_logs(logs_dir: Path, step: int) -> int:
    r"""Drops the rows past update ``step`` from the CSV scalar logs under ``logs_dir`` (TorchRL's
    ``CSVLogger``: ``<name>/scalars/**/<metric>.csv``, lines ``step,value``), so that a run
    resumed from the checkpoint at ``step`` does not log those updates twice; returns the number
    of rows dropped. Each file is rewritten atomically.

    Examples:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> (d / "run" / "scalars").mkdir(parents=True)
        >>> _ = (d / "run" / "scalars" / "loss.csv").write_text("10,1.0\n20,0.5\n30,0.2\n")
        >>> trim_csv_logs(d, 20), (d / "run" / "scalars" / "loss.csv").read_text()
        (1, '10,1.0\n20,0.5\n')
    """
    dropped = 0
    for path in sorted(logs_dir.glob("*/scalars/**/*.csv")):
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not _past(line, step)]
        if len(kept) < len(lines):
            dropped += len(lines) - len(kept)
            write_text_atomic(path, "".join(kept))
    return dropped


def _past(line: str, step: int) -> bool:
    head = line.split(",", 1)[0].strip()
    try:
        return int(float(head)) > step
    except ValueError:  # a header or a damaged line: kept
        return False


def _hydra_config() -> DictConfig | None:
    return HydraConfig.get() if HydraConfig.initialized() else None


# ------------------------------------------------------------------------------ resume
def is_resume_free(key: str) -> bool:
    """Whether the dotted setting ``key`` may change when a run is resumed (see :data:`RESUME_FREE`)."""
    return any(key == f or key.startswith(f + ".") for f in RESUME_FREE)


def check_resumable(state: dict, cfg: DictConfig, dataset: dict) -> None:
    """Refuses, with :class:`ConfigError` (exit code 2), a checkpoint ``state`` written with
    settings that change what the run computes, or over other data (``dataset``: the current
    data's name and fingerprint, stored in the checkpoint as ``dataset``)."""
    diffs = config_differences(state["config"], OmegaConf.to_container(cfg, resolve=True))
    if diffs:
        raise ConfigError(
            "The checkpoint was written by a run with different settings: "
            + "; ".join(diffs)
            + ". Resume with the same task and settings, or start a new run directory."
        )
    if state["dataset"] != dataset:
        keys = [k for k in dataset if state["dataset"].get(k) != dataset[k]]
        raise ConfigError(
            f"The dataset {dataset['name']} is not the one the run started with (its "
            f"{', '.join(keys)} changed); resume with the original data, or start a new run "
            "directory."
        )


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``"key: checkpoint a vs now b"`` for the settings that differ and change what a run computes."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if is_resume_free(name):
            continue
        a, b = saved.get(key, ADDED_SETTINGS.get(name, "<missing>")), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: checkpoint {a!r} vs now {b!r}")
    return diffs


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def resume_settings(
    cfg: DictConfig, run_dir: Path, overrides: list[str], choices: dict[str, Any]
) -> DictConfig:
    """The settings of a resumed run: those saved in ``run_dir/config.yaml``, with the command
    line's explicit ``overrides`` applied where they do not change what the run computes.

    Raises :class:`RunDirError` listing the overrides that would (a changed setting, or another
    ``task=``). Without a saved config, ``cfg`` is returned as it is (the checkpoint's own
    config is compared when it is loaded).
    """
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        return cfg
    try:
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False)
    except Exception as err:  # noqa: BLE001 - any parse error is a damaged file
        raise RunDirError(f"Cannot read the run's settings {saved_path}: {err}") from err
    from hydra.core.override_parser.overrides_parser import OverridesParser

    explicit, problems = [], []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key.startswith("hydra"):
            continue
        if key in choices:  # a config group: only task= exists
            if key == "task" and cfg.get("task_name") != saved.get("task_name"):
                problems.append(
                    f"task: run {saved.get('task_name')!r} vs now {cfg.get('task_name')!r}"
                )
            continue
        explicit.append(key)
    new = cfg.copy()
    for key, value in _leaves(saved):
        if key.split(".")[0] in ("resume", "overwrite"):
            continue
        if any(key == k or key.startswith(k + ".") for k in explicit):
            continue
        if _has(new, key):
            OmegaConf.update(new, key, value, merge=False)
    current = OmegaConf.to_container(new, resolve=True)
    problems += [
        d.replace(": checkpoint ", ": run ")
        for d in config_differences(saved, current)
        if any(d.startswith(k + ":") or d.startswith(k + ".") for k in explicit)
    ]
    if problems:
        raise RunDirError(
            f"resume=true: these overrides change what the run in {run_dir} computes: "
            + "; ".join(problems)
            + ". Resume with `resume=true hydra.run.dir=<dir>` alone (changes to logging, "
            "threads, device, compile, checkpoint.interval, eval.interval, eval.episodes and "
            "where the data are found are allowed), or start a new run directory."
        )
    return new


def _has(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node
