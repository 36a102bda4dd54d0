#!/usr/bin/env bash
# Set up .venv (see scripts/setup.sh), lint and format-check, then run the test suite. Extra arguments go to pytest:
#   bash scripts/test.sh -m "not slow"    # the quick loop, without the end-to-end runs (README, "Tests")
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
