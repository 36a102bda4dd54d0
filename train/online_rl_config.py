"""The options every on-policy trainer shares (train/score.py and train/kround.py extend them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfcorrect.config import SamplingConfig, check_range
from selfcorrect.errors import UserError


@dataclass
class OnlineRLConfig:
    """Options of the on-policy trainers; names and meanings follow transformers' TrainingArguments
    where a key exists there."""

    output_dir: str = field(default="outputs/online_rl", metadata={"help": "Where the adapter, card and log go."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    per_device_prompts: int = field(default=4, metadata={"help": "Prompts per process per step."})
    num_generations: int = field(default=2, metadata={"help": "Episodes sampled per prompt (>= 2 enables the baseline)."})
    micro_batch_size: int = field(default=8, metadata={"help": "Training sequences per forward/backward pass."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 = none)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of every round."})
    top_p: float = field(default=1.0, metadata={"help": "Must be 1: on-policy RL trains on the full distribution."})
    max_new_tokens: int = field(default=128, metadata={"help": "Maximum tokens per round."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU."})
    # TrainingArguments' default; the processes meet at every step, so a wait is at most one step's imbalance.
    ddp_timeout: int = field(default=1800, metadata={"help": "Seconds a process waits for the others at a collective."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling and data order."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0 = only at the end)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "checkpoint-N folder to resume from."})
    report_to: Literal["none", "wandb"] = field(default="none", metadata={"help": "none | wandb"})
    run_name: str | None = field(default=None, metadata={"help": "wandb run name (project: selfcorrect-<method>)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the finished output folder to the hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository for push_to_hub (default: output folder name)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub."})
    generation_backend: Literal["hf", "vllm"] = field(
        default="hf",
        metadata={"help": "hf (own loop) | vllm (docs/vllm.md)."},
    )
    # Beside the trainer on the same GPU (colocated, as TRL's colocate mode): the policy, its
    # gradients and AdamW state keep the rest. vLLM's own default (0.9) would leave the trainer nothing.
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "vllm: the engine's share of the GPU."})
    # The CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE, not from a memory share.
    vllm_cpu_kv_cache_gib: float = field(default=1.0, metadata={"help": "vllm on a CPU: KV cache size in GiB."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vllm: max tokens per conversation (unset: model's)."})

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.seed)

    def __post_init__(self) -> None:
        for name in ("num_generations", "per_device_prompts", "max_steps", "micro_batch_size", "max_new_tokens"):
            check_range(name, getattr(self, name), 1)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("save_steps", self.save_steps, 0)
        check_range("logging_steps", self.logging_steps, 1)
        check_range("ddp_timeout", self.ddp_timeout, 1)
        if self.temperature <= 0:
            raise UserError("on-policy RL samples: temperature must be > 0")
        if self.top_p != 1:
            # The trainer scores tokens under softmax(logits / temperature); nucleus sampling draws
            # from a truncated, renormalised distribution, so the update would not be on-policy.
            raise UserError(f"on-policy RL trains on the full sampling distribution: top_p must be 1 (got {self.top_p})")
        if not 0 < self.vllm_gpu_memory_utilization < 1:
            raise UserError(f"vllm_gpu_memory_utilization must be in (0, 1) (got {self.vllm_gpu_memory_utilization})")
        if self.vllm_cpu_kv_cache_gib <= 0:
            raise UserError(f"vllm_cpu_kv_cache_gib must be > 0 (got {self.vllm_cpu_kv_cache_gib})")
        if self.learning_rate <= 0:
            raise UserError(f"learning_rate must be > 0 (got {self.learning_rate})")
