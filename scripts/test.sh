#!/usr/bin/env bash
# Set up .venv (see scripts/setup.sh), lint and format-check, then run the test suite. Extra arguments go to pytest:
#   bash scripts/test.sh -m "not slow"    # the quick loop, without the end-to-end runs (README, "Tests")
# Then the vLLM tier in its own environment (scripts/test_vllm.sh; SKIP_VLLM_TIER=1 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q "$@"
[ "${SKIP_VLLM_TIER:-0}" = 1 ] || bash scripts/test_vllm.sh
