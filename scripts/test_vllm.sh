#!/usr/bin/env bash
# The vLLM tier: set up .venv-vllm (scripts/setup_vllm.sh) and run the tests marked `vllm` in it.
# Extra arguments go to pytest. The main suite runs in .venv (scripts/test.sh), where these tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
exec .venv-vllm/bin/python -m pytest -q -m vllm tests/test_vllm.py tests/test_vllm_rl.py "$@"
