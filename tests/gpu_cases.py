"""The command lines tests/test_gpu.py launches, built here and nowhere else, so that the default
suite parses every one of them on the CPU (tests/test_gpu_cases.py). A lent GPU gives 15 minutes in
all: a case that stops at "unknown option" wastes them, and nothing else would catch it, since
test_gpu.py is skipped without CUDA."""

from __future__ import annotations

from dataclasses import dataclass, field

CONFIGS = ["single_gpu", "zero2", "zero3", "fsdp"]
METHODS = ["sft", "dpo", "grpo", "score", "kround"]
TRL_METHODS = ("sft", "dpo", "grpo")  # TRL trainers: precision from TrainingArguments (--bf16)
ONLINE_METHODS = ("score", "kround")  # the accelerate loop: precision from the accelerate config


@dataclass
class Case:
    """``accelerate launch [launcher_args] --config_file accelerate_configs/<config>.yaml <target> <args>``."""

    config: str
    target: str
    args: list[str]
    launcher_args: tuple[str, ...] = ("--quiet", "--num_processes", "1")
    env: dict[str, str] = field(default_factory=dict)


def data_gen_args(model_dir: str, bbq_dir: str, output_dir: str) -> list[str]:
    """``python -m data_gen`` for the GPU tests' training files."""
    return [
        *("--model_name_or_path", model_dir, "--dataset_path", bbq_dir),
        *("--limit", "8", "--rounds", "2", "--max_new_tokens", "8", "--output_dir", output_dir),
        *("--sft_sources", "rationalised", "--dpo_sources", "rationalised"),
    ]


def training_file(method: str) -> str:
    return {"sft": "sft.jsonl", "dpo": "dpo.jsonl"}.get(method, "rl.jsonl")


def trainer_case(method: str, config: str, model_dir: str, data_dir: str, output_dir: str, extra: list[str] = ()) -> Case:
    """Two steps of ``train/<method>.py`` on the tiny model in bf16 under ``config``.

    Only the TRL trainers take ``--bf16``: SCoRe and K-round RL run their own accelerate loop,
    whose mixed precision is the accelerate config's ``mixed_precision`` (bf16 in every GPU config),
    and they refuse an option they do not have."""
    args = [
        *("--model_name_or_path", model_dir, "--dataset_path", f"{data_dir}/{training_file(method)}"),
        *("--output_dir", output_dir, "--max_steps", "2", "--learning_rate", "1e-2", "--report_to", "none"),
        *("--dtype", "bfloat16"),
    ]
    if method in TRL_METHODS:
        args += ["--bf16", "true", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no"]
    if method == "grpo":
        args += ["--num_generations", "2", "--max_completion_length", "8"]
        if config == "fsdp":  # GRPO's own rollout refuses FSDP (train/grpo.py): TRL's generation syncs the ranks
            args += ["--generation_backend", "trl", "--first_attempt", "trace"]
    if method in ONLINE_METHODS:
        args += ["--per_device_prompts", "2", "--num_generations", "2", "--max_new_tokens", "8"]
    if method == "score":
        args += ["--stage1_steps", "1"]
    return Case(config, f"train/{method}.py", args + list(extra))


def matrix_cases(model_dir: str, data_dir: str, output_dir: str) -> dict[str, Case]:
    """test_gpu.py's trainer x config matrix, by test id (``<method>-<config>``)."""
    return {f"{m}-{c}": trainer_case(m, c, model_dir, data_dir, f"{output_dir}/{m}-{c}") for c in CONFIGS for m in METHODS}


# What the matrix above misses (issue 36, item 10): NCCL between two GPUs, with DDP (the online
# loop, whose gathers and barriers are its own) and with ZeRO-3 really sharding a TRL trainer
# (GRPO also gathers the sharded weights for its rollout); QLoRA; the online loop with gradient
# checkpointing. Two steps each, on the tiny model, like the matrix.
TWO_GPU = {"ddp": "kround", "zero3": "grpo"}


def extra_cases(model_dir: str, data_dir: str, output_dir: str) -> dict[str, Case]:
    """test_gpu.py's cases beyond the matrix, by test id. ``-2gpu`` cases start two processes."""
    cases = {}
    for config, method in TWO_GPU.items():
        name = f"{method}-{config}-2gpu"
        case = trainer_case(method, config, model_dir, data_dir, f"{output_dir}/{name}")
        case.launcher_args = ("--quiet", "--num_processes", "2")
        cases[name] = case
    cases["sft-qlora"] = trainer_case(
        "sft", "single_gpu", model_dir, data_dir, f"{output_dir}/sft-qlora", ["--load_in_4bit", "true"]
    )
    cases["kround-gradient_checkpointing"] = trainer_case(
        "kround", "single_gpu", model_dir, data_dir, f"{output_dir}/kround-gc", ["--gradient_checkpointing", "true"]
    )
    return cases
