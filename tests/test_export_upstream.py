"""``scripts/export_upstream.py``: the contribution tree, laid out like pytorch/rl, works
against the installed torchrl without this package."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import export_upstream  # noqa: E402

SOTA = "sota-implementations/bdpo"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("upstream") / "rl"
    export_upstream.export(out)
    return out


def test_the_tree_has_pytorch_rl_layout(exported):
    for rel in (
        "torchrl/objectives/bdpo.py",
        "torchrl/modules/models/vp_schedule.py",
        "torchrl/modules/models/bdpo_networks.py",
        "torchrl/modules/models/bdpo_critics.py",
        "torchrl/modules/tensordict_module/bdpo_actor.py",
        "torchrl/trainers/algorithms/configs/bdpo.py",
        "test/objectives/test_bdpo.py",
        f"{SOTA}/bdpo_offline.py",
        f"{SOTA}/bdpo_utils.py",
        f"{SOTA}/config/config.yaml",
        f"{SOTA}/config/task/hopper-medium-v2.yaml",
        f"{SOTA}/README.md",
        f"{SOTA}/requirements.txt",
        f"{SOTA}/run.sh",
        f"{SOTA}/offline_data/d4rl_hdf5.py",
    ):
        assert (exported / rel).is_file(), rel
    requirements = (exported / SOTA / "requirements.txt").read_text().split()
    assert any(r.startswith("torchrl") for r in requirements)
    assert not any("torchrl_bdpo" in r for r in requirements)
    edits = (exported / "UPSTREAM_EDITS.md").read_text()
    assert "from torchrl.objectives.bdpo import BDPOLoss" in edits
    assert "objectives_offline.rst" in edits and "    BDPOLoss" in edits  # the docs entry


def test_nothing_refers_to_this_package(exported):
    for path in exported.rglob("*"):
        if path.is_file():
            assert "torchrl_bdpo" not in path.read_text(), path


def test_core_files_import_no_recipe_module(exported):
    """The upstream rule: ``torchrl/`` never depends on the recipe's side."""
    recipe_side = {"offline_data", "scores", "bdpo_checkpoint", "bdpo_utils", "toy2d"}
    for path in (exported / "torchrl").rglob("*.py"):
        imported = set(re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M))
        assert not imported & recipe_side, (path, imported & recipe_side)
        # inside torchrl/, TorchRL's own names come from their modules (no __init__ cycles)
        assert not re.search(r"^from torchrl\.(modules|objectives) import", path.read_text(), re.M)


def test_imports_are_rewritten_name_by_name():
    names = {"NoiseNet": "torchrl.modules", "BDPOLoss": "torchrl.objectives"}
    doc = "    >>> from torchrl_bdpo import (NoiseNet,\n    ...     BDPOLoss)\n    >>> x = 1\n"
    assert export_upstream.rewrite(doc, names) == (
        "    >>> from torchrl.modules import NoiseNet\n"
        "    >>> from torchrl.objectives import BDPOLoss\n"
        "    >>> x = 1\n"
    )
    code = "from torchrl_bdpo.modules.actor import DiffusionSampler\nfrom ..scores import f\n"
    assert export_upstream.rewrite(code, names) == (
        "from torchrl.modules.tensordict_module.bdpo_actor import DiffusionSampler\n"
        "from scores import f\n"
    )


def test_an_existing_directory_is_not_replaced_without_force(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="--force"):
        export_upstream.export(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"


@pytest.mark.slow
def test_exported_tests_and_recipe_pass_against_installed_torchrl(exported):
    """The exported ``test/objectives/test_bdpo.py`` (with TorchRL's warnings-as-errors) and a
    few updates of the exported recipe, with ``UPSTREAM_EDITS.md``'s export lines applied to
    the installed torchrl and this package made unimportable."""
    assert export_upstream.check(exported) == 0
