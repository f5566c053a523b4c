#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras.
# torch is installed first, pinned, so pip never reaches for a multi-GB CUDA
# build on a CPU machine; set TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.torchrl_bdpo_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
    # Constrain torch to what is installed so no later resolution swaps it.
    .venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > .venv/torch-constraint.txt
    .venv/bin/python -m pip install -q -c .venv/torch-constraint.txt -e ".[dev,slurm]"
    touch "$stamp"
fi
