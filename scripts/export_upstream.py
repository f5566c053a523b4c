"""Write this project as a contribution tree laid out like pytorch/rl.

    python scripts/export_upstream.py OUT            # OUT must not exist (or --force)

The rule (CONTRIBUTING.md, "How this maps onto an upstream TorchRL contribution"): BDPO's core
(schedule, networks, critics, actor, loss, its config) goes to ``torchrl/``; everything else
(the recipe with its configs, the dataset loaders, score normalisation, checkpoints, the 2D
tasks) goes to ``sota-implementations/bdpo/``; the TorchRL-shaped loss tests go to
``test/objectives/test_bdpo.py``. Files are copied from this tree with their imports rewritten
(``torchrl_bdpo.X`` → the upstream module); nothing is written by hand twice.

Edits to files that already exist upstream (the public exports in ``torchrl/modules`` and
``torchrl/objectives``, the docs index) are not files of ours: they are listed, line by line,
in ``OUT/UPSTREAM_EDITS.md``; ``tests/test_export_upstream.py`` applies exactly those lines to
the installed torchrl and runs the exported test file against it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOTA = "sota-implementations/bdpo"

#: our file -> its place upstream (core)
CORE_FILES = {
    "torchrl_bdpo/schedule.py": "torchrl/modules/models/vp_schedule.py",
    "torchrl_bdpo/modules/networks.py": "torchrl/modules/models/bdpo_networks.py",
    "torchrl_bdpo/modules/critics.py": "torchrl/modules/models/bdpo_critics.py",
    "torchrl_bdpo/modules/actor.py": "torchrl/modules/tensordict_module/bdpo_actor.py",
    "torchrl_bdpo/objectives/bdpo.py": "torchrl/objectives/bdpo.py",
    "torchrl_bdpo/objectives/behavior.py": "torchrl/objectives/bdpo_behavior.py",
    "torchrl_bdpo/objectives/target_updaters.py": "torchrl/objectives/group_soft_update.py",
    "torchrl_bdpo/objectives/config.py": "torchrl/trainers/algorithms/configs/bdpo.py",
}
#: our module -> the upstream module (longest first when rewriting); the recipe-side ones
#: become modules next to the recipe script (it puts its own directory on ``sys.path``)
MODULES = {
    "torchrl_bdpo.modules.networks": "torchrl.modules.models.bdpo_networks",
    "torchrl_bdpo.modules.critics": "torchrl.modules.models.bdpo_critics",
    "torchrl_bdpo.modules.actor": "torchrl.modules.tensordict_module.bdpo_actor",
    "torchrl_bdpo.modules": "torchrl.modules",
    "torchrl_bdpo.schedule": "torchrl.modules.models.vp_schedule",
    "torchrl_bdpo.objectives.bdpo": "torchrl.objectives.bdpo",
    "torchrl_bdpo.objectives.behavior": "torchrl.objectives.bdpo_behavior",
    "torchrl_bdpo.objectives.target_updaters": "torchrl.objectives.group_soft_update",
    "torchrl_bdpo.objectives.config": "torchrl.trainers.algorithms.configs.bdpo",
    "torchrl_bdpo.objectives": "torchrl.objectives",
    "torchrl_bdpo.data": "offline_data",
    "torchrl_bdpo.scores": "scores",
    "torchrl_bdpo.checkpoint": "bdpo_checkpoint",
}
#: recipe-side package files -> their place in the sota directory
SOTA_FILES = {
    "torchrl_bdpo/scores.py": "scores.py",
    "torchrl_bdpo/checkpoint.py": "bdpo_checkpoint.py",
}
TESTS = {
    "tests/test_bdpo_torchrl.py": "test/objectives/test_bdpo.py",
    "tests/_factories.py": "test/objectives/_bdpo_factories.py",
}


def public_names() -> dict[str, str]:
    """Our top-level public names -> the upstream package that exports them."""
    sys.path.insert(0, str(ROOT))
    import torchrl_bdpo.modules
    import torchrl_bdpo.objectives

    names = dict.fromkeys(torchrl_bdpo.modules.__all__, "torchrl.modules")
    names["VPSchedule"] = "torchrl.modules"
    objectives = [n for n in torchrl_bdpo.objectives.__all__ if n != "BDPOLossConfig"]
    names.update(dict.fromkeys(objectives, "torchrl.objectives"))
    names["BDPOLossConfig"] = "torchrl.trainers.algorithms.configs.bdpo"
    return names


def upstream_edits(names: dict[str, str]) -> dict[str, list[str]]:
    """The lines each existing upstream ``__init__`` gains (the public exports)."""
    import torchrl_bdpo

    edits: dict[str, list[str]] = {}
    for name, package in sorted(names.items()):
        module = _module(getattr(torchrl_bdpo, name).__module__)
        if package == module:  # the config's own module is new: exported below
            continue
        init = package.replace(".", "/") + "/__init__.py"
        edits.setdefault(init, []).append(f"from {module} import {name}")
    edits = {init: sorted(lines) for init, lines in edits.items()}
    configs = "torchrl/trainers/algorithms/configs/__init__.py"
    edits[configs] = [
        "from torchrl.trainers.algorithms.configs.bdpo import BDPOLossConfig",
        '# in _register_configs(): cs.store(group="loss", name="bdpo", node=BDPOLossConfig)',
    ]
    return edits


def _module(ours: str) -> str:
    for old in sorted(MODULES, key=len, reverse=True):
        if ours == old or ours.startswith(old + "."):
            return MODULES[old] + ours[len(old) :]
    raise KeyError(ours)


_TOP_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*(?:>>> )?)from torchrl_bdpo import (?P<names>\([^)]*\)|[^\n]*)", re.M
)


def rewrite(text: str, names: dict[str, str]) -> str:
    """Our imports and references -> upstream ones."""

    def top_import(m: re.Match) -> str:
        raw = m["names"].strip("()")
        raw = re.sub(r"\n[ \t]*(\.\.\.)?", " ", raw)
        listed = [n.strip() for n in raw.split("#")[0].split(",") if n.strip()]
        comment = " #" + m["names"].split("#", 1)[1] if "#" in m["names"] else ""
        by_package: dict[str, list[str]] = {}
        for name in listed:
            by_package.setdefault(names[name], []).append(name)
        lines = [f"{m['indent']}from {p} import {', '.join(n)}" for p, n in by_package.items()]
        return "\n".join(lines) + comment

    text = _TOP_IMPORT.sub(top_import, text)
    text = re.sub(r"^(\s*)from \.\.scores import", r"\1from scores import", text, flags=re.M)
    for old in sorted(MODULES, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(old)}\b", MODULES[old], text)
    # references to a top-level name: ``torchrl_bdpo.BDPOLoss``
    text = re.sub(r"\btorchrl_bdpo\.(\w+)", lambda m: f"{names[m[1]]}.{m[1]}", text)
    text = text.replace("project: torchrl_bdpo", "project: torchrl_example_bdpo")
    # paths in usage lines and help texts: the recipes' files live in the sota directory
    text = re.sub(r"(?<![\w/])recipes/", f"{SOTA}/", text)
    return text.replace('"torchrl_bdpo"', '"torchrl"')  # e.g. a dataset's author


_PUBLIC_IMPORT = re.compile(r"^from (torchrl\.modules|torchrl\.objectives) import ([\w, ]+)$", re.M)


def internal_imports(text: str) -> str:
    """Inside ``torchrl/`` a module imports TorchRL's names from where they are defined (as
    TorchRL's own files do), not from ``torchrl.modules``/``torchrl.objectives``, whose
    ``__init__`` will import it (a cycle). Doctest lines keep the public imports."""
    import importlib

    def split(m: re.Match) -> str:
        package = importlib.import_module(m[1])
        by_module: dict[str, list[str]] = {}
        for name in (n.strip() for n in m[2].split(",")):
            by_module.setdefault(getattr(package, name).__module__, []).append(name)
        return "\n".join(f"from {mod} import {', '.join(n)}" for mod, n in by_module.items())

    return _PUBLIC_IMPORT.sub(split, text)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _sota_readme() -> str:
    return """# BDPO: Behavior-Regularized Diffusion Policy Optimization

Offline RL with a diffusion policy regularised towards a behavior diffusion model by the analytic
pathwise KL (Gao et al., ICML 2025). The loss is `torchrl.objectives.BDPOLoss`; this directory
is its training recipe (Hydra), with the paper's settings per task in `config/task/`.

    pip install -r requirements.txt
    python bdpo_offline.py task=toy2d-8gaussians-cpu      # 2D, no download, a few minutes on CPU
    python bdpo_offline.py task=hopper-medium-v2          # D4RL (HDF5 files or TorchRL's cache)
    python bdpo_offline.py task=custom data.name=mujoco/hopper/medium-v0   # any Minari dataset
    python bdpo_offline.py --help                         # every setting, with its choices

`run.sh` runs the CPU-sized default. Resume an interrupted run with
`python bdpo_offline.py resume=true hydra.run.dir=<run directory>`. `collect_dataset.py` builds
D4RL-style Minari datasets (medium, medium-replay, expert) with TorchRL's SAC.

Parity with the authors' JAX code (typoverflow/flow-rl) is tested weight by weight in the
original repository; where the paper and that code differ, the code's choice is the default
and the other is a setting (`loss.penalty_placement`, `loss.stratified_steps`, ...).
"""


RUN_SH = """#!/bin/bash
# CPU-sized default: the 8-Gaussians 2D task, no download (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"
python bdpo_offline.py task=toy2d-8gaussians-cpu "$@"
"""


def _requirements() -> str:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [*project["dependencies"], *project["optional-dependencies"]["recipes"]]
    return "\n".join(d for d in deps if not d.startswith("torchrl_bdpo")) + "\n"


def _docs(names: dict[str, str]) -> str:
    lines = ["BDPO", "----", "", ".. currentmodule:: torchrl.objectives", ""]
    lines += [
        ".. autosummary::",
        "    :toctree: generated/",
        "    :template: rl_template_noinherit.rst",
        "",
    ]
    lines += [f"    {n}" for n, p in sorted(names.items()) if p == "torchrl.objectives"]
    return "\n".join(lines) + "\n"


def export(out: Path, force: bool = False) -> list[Path]:
    """Writes the tree under ``out``; returns the files written."""
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists; pass --force to replace it")
        shutil.rmtree(out)
    names = public_names()
    written: list[Path] = []

    def put(rel: str, text: str) -> None:
        _write(out / rel, text)
        written.append(out / rel)

    for src, dst in CORE_FILES.items():
        put(dst, internal_imports(rewrite((ROOT / src).read_text(), names)))
    for src in sorted((ROOT / "torchrl_bdpo/data").glob("*.py")):
        put(f"{SOTA}/offline_data/{src.name}", rewrite(src.read_text(), names))
    for src, dst in SOTA_FILES.items():
        put(f"{SOTA}/{dst}", rewrite((ROOT / src).read_text(), names))
    recipes = ROOT / "recipes"
    for src in sorted(recipes.rglob("*")):
        if src.is_file() and "__pycache__" not in src.parts:
            put(f"{SOTA}/{src.relative_to(recipes)}", rewrite(src.read_text(), names))
    put(f"{SOTA}/README.md", _sota_readme())
    put(f"{SOTA}/run.sh", RUN_SH)
    (out / SOTA / "run.sh").chmod(0o755)
    put(f"{SOTA}/requirements.txt", _requirements())
    for src, dst in TESTS.items():
        text = rewrite((ROOT / src).read_text(), names)
        text = text.replace("from _factories import", "from _bdpo_factories import")
        recipe_config = '"recipes" / "config" / "config.yaml"'
        put(
            dst,
            text.replace(
                f"parents[1] / {recipe_config}", f'parents[2] / "{SOTA}/config/config.yaml"'
            ),
        )

    edits = upstream_edits(names)
    doc = ["# Edits to existing pytorch/rl files", ""]
    doc += ["Append these lines (and the names to the file's `__all__` where it has one):", ""]
    for init, lines in edits.items():
        doc += [f"## `{init}`", "", "```python", *lines, "```", ""]
    doc += ["## `docs/source/reference/objectives_offline.rst`", "", "```rst", _docs(names), "```"]
    put("UPSTREAM_EDITS.md", "\n".join(doc) + "\n")
    return written


#: the upstream packages that gain modules (their ``__path__`` is extended by the overlay)
PACKAGES = (
    "torchrl.modules.models",
    "torchrl.modules.tensordict_module",
    "torchrl.objectives",
    "torchrl.trainers.algorithms.configs",
)


class _NoOriginalPackage:
    """An import finder that refuses ``torchrl_bdpo``: the exported tree must not need it."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchrl_bdpo" or name.startswith("torchrl_bdpo."):
            raise ImportError(f"the exported tree imported {name}")
        return None


def install_overlay(out: Path) -> None:
    """Makes the installed torchrl look as if the exported tree were merged into it: its new
    modules become importable and the public exports of ``UPSTREAM_EDITS.md`` are executed
    in the packages they name (the lines themselves, so the listed edits are what is tested)."""
    import importlib

    out = Path(out).resolve()
    sys.meta_path.insert(0, _NoOriginalPackage())
    for name in PACKAGES:
        importlib.import_module(name).__path__.append(str(out / name.replace(".", "/")))
    edits = (out / "UPSTREAM_EDITS.md").read_text()
    for init, block in re.findall(
        r"## `([\w/]+)/__init__\.py`\n\n```python\n(.*?)```", edits, re.S
    ):
        namespace = vars(importlib.import_module(init.replace("/", ".")))
        exec(compile(block, f"{init}/__init__.py (UPSTREAM_EDITS.md)", "exec"), namespace)


#: a 2D run of a few updates: the exported recipe, its loaders and the overlay work together
SMOKE_RUN = (
    "task=toy2d-8gaussians-cpu data.toy2d_size=2000 diffusion.num_steps=4 "
    "diffusion.hidden_sizes=[16,16] critic.hidden_sizes=[16] critic.num_members=3 "
    "loss.num_samples=2 optim.batch_size=32 optim.pretrain_steps=10 optim.train_steps=10 "
    "optim.value_warmup_steps=2 eval.interval=5 eval.toy2d_samples=200 checkpoint.interval=5 "
    "logger.backend=csv"
).split()


def check(out: Path) -> int:
    """Runs the exported test file, then a few updates of the exported recipe, against the
    installed torchrl (with the overlay); returns the first non-zero exit code, else 0."""
    import subprocess

    out = Path(out).resolve()
    overlay = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import export_upstream; export_upstream.install_overlay({str(out)!r}); "
    )
    tests = overlay + (
        "import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-W', 'error', "
        "'-W', 'ignore::DeprecationWarning', '-W', 'ignore::pytest.PytestAssertRewriteWarning', "
        "'test/objectives/test_bdpo.py']))"
    )
    script = out / SOTA / "bdpo_offline.py"
    argv = [str(script), *SMOKE_RUN, f"hydra.run.dir={out / 'smoke_run'}"]
    recipe = (
        overlay
        + f"import runpy; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    for code in (tests, recipe):
        rc = subprocess.call([sys.executable, "-c", code], cwd=out)
        if rc:
            return rc
    shutil.rmtree(out / "smoke_run")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write (the root of the tree)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--check",
        action="store_true",
        help="then run the exported test file and a few recipe updates against the installed torchrl",
    )
    args = parser.parse_args(argv)
    files = export(args.out, args.force)
    print(f"{len(files)} files written under {args.out}; see {args.out / 'UPSTREAM_EDITS.md'}")
    if args.check:
        sys.exit(check(args.out))


if __name__ == "__main__":
    main()
