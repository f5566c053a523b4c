#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the test suite on one torch thread.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export MPLBACKEND=Agg WANDB_MODE=${WANDB_MODE:-disabled}
exec .venv/bin/python -m pytest "$@"
