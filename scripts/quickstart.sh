#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the BDPO recipe on its embedded
# default (a 2D task, no network needed). Extra arguments go to Hydra.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
exec .venv/bin/python recipes/bdpo_offline.py "$@"
