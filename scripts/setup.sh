#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras.
# torch is installed first and then pinned, so no later resolution swaps it for
# another build. TORCH_SPEC picks the version; TORCH_INDEX an index, e.g.
# https://download.pytorch.org/whl/cpu for the CPU build where PyPI's default is a
# multi-GB CUDA build (this project's machines find a local CPU wheel instead).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX=${TORCH_INDEX:-}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.torchrl_bdpo_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"
    # Constrain torch to what is installed so no later resolution swaps it (read from its
    # metadata: importing torch before NumPy is installed warns "Failed to initialize NumPy").
    .venv/bin/python -c "from importlib.metadata import version; print('torch==' + version('torch').split('+')[0])" > .venv/torch-constraint.txt
    .venv/bin/python -m pip install -q -c .venv/torch-constraint.txt -e ".[recipes,dev,slurm]"
    touch "$stamp"
fi
