"""What the four training entry points share: script options, model + LoRA/QLoRA loading,
data loading with clear errors, conversation tokenisation with assistant masks, and the outputs
(adapter, tokenizer, resolved config, model card, optional merged model)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from data_gen.config import config_to_dict
from data_gen.errors import UserError
from data_gen.jsonl import write_atomic


@dataclass
class TrainArgs:
    """Options every method takes (the TRL config holds the optimisation ones)."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Hub id, local folder, or 'smollm2-135m-instruct' (the embedded demo model)."},
    )
    dataset_path: str = field(default="", metadata={"help": "Training data made by data_gen (sft/dpo/rl.jsonl)."})
    task: str = field(default="bbq", metadata={"help": "Task whose scorer gives rewards (grpo, score) and names the card."})
    prompt_set: str = field(default="intrinsic-moral", metadata={"help": "Self-correction prompt set (for the card and RL)."})
    prompt_sets_file: str | None = field(default=None, metadata={"help": "YAML file with extra prompt sets."})
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (False = full fine-tuning)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Modules to adapt; 'all-linear' = every linear layer."}
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base in 4-bit NF4 (bitsandbytes)."})
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel (sdpa, eager, flash_attention_2, ...); unset = transformers' default (sdpa)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    merge: bool = field(default=False, metadata={"help": "Also write the base with the adapter merged into <output_dir>/merged."})


def check_launch_matches_machine(env: dict[str, str] | None = None, gpus: int | None = None) -> None:
    """Fail in one line when the accelerate config asks for hardware this machine lacks."""
    env = dict(os.environ if env is None else env)
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    on = lambda key: env.get(key, "").lower() in ("1", "true", "yes")  # noqa: E731
    local = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    # Several processes without a GPU are fine (cpu_ddp.yaml runs gloo); these are GPU-only.
    wants_gpu = on("ACCELERATE_USE_DEEPSPEED") or on("ACCELERATE_USE_FSDP") or (
        env.get("ACCELERATE_MIXED_PRECISION", "no") in ("bf16", "fp16")
    )
    if gpus == 0 and wants_gpu and not on("ACCELERATE_USE_CPU"):
        raise UserError(
            "the accelerate config expects GPUs (DeepSpeed, FSDP or bf16/fp16 mixed precision) but CUDA is "
            "not available: use --config_file accelerate_configs/cpu.yaml (or cpu_ddp.yaml)"
        )
    if gpus > 0 and local > gpus and not on("ACCELERATE_USE_CPU"):
        raise UserError(f"the accelerate config starts {local} processes on this machine but it has {gpus} GPU(s): set num_processes")


def device_overrides(*config_types: type) -> list[str]:
    """Check the launch against the machine; without CUDA, train on the CPU in fp32 whatever the
    recipe says (its bf16 is for GPUs). Only keys the configs declare are overridden."""
    import dataclasses

    import torch

    check_launch_matches_machine()
    if torch.cuda.is_available():
        return []
    known = {f.name for t in config_types for f in dataclasses.fields(t)}
    out: list[str] = []
    for key, value in (("use_cpu", "true"), ("bf16", "false"), ("fp16", "false")):
        if key in known:
            out += [f"--{key}", value]
    return out


def load_policy(args: TrainArgs, bf16: bool, trust_remote_code: bool = False):
    """(model, peft LoraConfig or None). QLoRA loads the base in 4-bit; LoRA leaves it in bf16/fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    from data_gen.modeling import resolve_model_path

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    if args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        if not args.use_peft:
            raise UserError("load_in_4bit needs use_peft (QLoRA trains an adapter on a frozen 4-bit base)")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        if torch.cuda.is_available():
            from accelerate import PartialState

            # Without a device_map, bitsandbytes puts the 4-bit model on torch.cuda.current_device(),
            # which is GPU 0 in every process before the trainer exists: pin each rank to its own GPU.
            kwargs["device_map"] = {"": PartialState().local_process_index}
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(args.model_name_or_path),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **kwargs,
    )
    peft_config = None
    if args.use_peft:
        from peft import LoraConfig

        targets = args.lora_target_modules
        peft_config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,
            task_type="CAUSAL_LM",
        )
    return model, peft_config


def load_tokenizer_for_training(args: TrainArgs, trust_remote_code: bool = False):
    from data_gen.modeling import load_tokenizer

    return load_tokenizer(args.model_name_or_path, trust_remote_code, padding_side="right")


def read_training_rows(path: str, required: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a data_gen .jsonl, each checked for the fields the method needs."""
    from data_gen.jsonl import read_rows

    if not path:
        raise UserError("dataset_path is not set (point it at a data_gen output such as outputs/<run>/sft.jsonl)")
    rows = []
    for lineno, row in enumerate(read_rows(path), 1):
        missing = [k for k in required if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: row lacks {', '.join(missing)}")
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise UserError(f"{path}: no training rows (did data_gen keep any? see its README.md counts)")
    return rows


def load_rows(path: str, required: tuple[str, ...], limit: int | None = None, optional: tuple[str, ...] = ()):
    """A datasets.Dataset with the ``required`` columns of a data_gen .jsonl (and ``optional`` ones,
    None where a row lacks them)."""
    from datasets import Dataset

    rows = read_training_rows(path, required, limit)
    return Dataset.from_list([{k: row.get(k) for k in (*required, *optional)} for row in rows])


def assistant_spans(
    tokenizer, messages: list[dict[str, str]], prefills: list[str | None] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, per assistant turn, the character span the model produces.

    A span runs from the end of that round's prompt (the generation prompt and the turn's prefill,
    rendered by the same function data_gen and eval use) to the end of the turn, end-of-turn token
    included. Works for any template that renders a conversation's prefixes as prefixes of the whole
    (ChatML, Llama 3, Mistral, Qwen do), so no ``{% generation %}`` markers are needed.
    """
    from data_gen.rollout import render_chat

    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    turn = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefill = prefills[turn] if prefills else None
        turn += 1
        before = render_chat(tokenizer, messages[:i], prefill)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise UserError(
                "the chat template does not render this conversation's prefixes as prefixes of the whole "
                f"(assistant turn {turn}); cannot tell which tokens the model produced"
            )
        spans.append((len(before), len(upto.rstrip("\n"))))
    return full, spans


def tokenize_conversation(
    tokenizer,
    messages: list[dict[str, str]],
    train_turns: list[bool] | None = None,
    prefills: list[str | None] | None = None,
    max_length: int | None = None,
):
    """input_ids and assistant_masks: 1 on the tokens the model produced in the assistant turns
    selected by ``train_turns`` (all when None); prefills and every other turn are 0."""
    full, spans = assistant_spans(tokenizer, messages, prefills)
    if train_turns is not None:
        if len(train_turns) != len(spans):
            raise UserError(f"train_turns has {len(train_turns)} entries for {len(spans)} assistant turns")
        spans = [sp for sp, keep in zip(spans, train_turns) if keep]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    ids = enc["input_ids"]
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return {"input_ids": ids, "assistant_masks": mask}


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """Chat-template text of a prompt; a trailing assistant message is a prefill the model continues.

    (TRL's GRPOTrainer always adds a fresh generation prompt after conversational prompts, which
    would close the prefill turn, so RL prompts are rendered here and passed to TRL as text.)
    """
    from data_gen.rollout import render_chat

    if messages and messages[-1]["role"] == "assistant":
        return render_chat(tokenizer, messages[:-1], messages[-1]["content"])
    return render_chat(tokenizer, messages)


def eval_command(output_dir: str, args: TrainArgs) -> str:
    return (
        f"python -m eval --model_name_or_path {args.model_name_or_path} --adapter {output_dir} "
        f"--task {args.task} --prompt_set {args.prompt_set} --rounds 5 --output_dir {output_dir}/eval"
    )


def model_card(method: str, objective: str, args: TrainArgs, output_dir: str, extra: dict[str, Any]) -> str:
    lines = [
        f"# {os.path.basename(os.path.abspath(output_dir))}",
        "",
        f"A {'LoRA adapter' if args.use_peft else 'fully fine-tuned model'} trained by selfcorrect `train/{method}.py`.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {args.model_name_or_path} |",
        f"| method | {method} |",
        f"| objective | {objective} |",
        f"| training data | {args.dataset_path} |",
        f"| task / prompt set | {args.task} / {args.prompt_set} |",
        f"| adapter | {'QLoRA 4-bit' if args.load_in_4bit else 'LoRA' if args.use_peft else 'none (full fine-tuning)'}"
        + (f", r={args.lora_r}, alpha={args.lora_alpha}, targets={','.join(args.lora_target_modules)}" if args.use_peft else "")
        + " |",
    ]
    for k, v in extra.items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "## Evaluate next", "", "```bash", eval_command(output_dir, args), "```", ""]
    return "\n".join(lines)


def save_model_all_ranks(accelerator, model, output_dir: str) -> None:
    """Save the weights from an accelerate loop. Call on every process: under ZeRO-3 or FSDP each
    rank holds a shard, and ``get_state_dict`` gathers them (the main process writes the file)."""
    state_dict = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(
        output_dir, state_dict=state_dict, is_main_process=accelerator.is_main_process, save_function=accelerator.save,
        safe_serialization=True,
    )


def save_outputs(
    save_model, tokenizer, output_dir: str, method: str, objective: str, args: TrainArgs, config_objs, extra=None,
    trust_remote_code: bool = False, is_main_process: bool = True,
) -> None:
    """Adapter (or model), tokenizer, resolved config and model card; merged model if asked.

    Call on every process. ``save_model(output_dir)`` runs on all of them (TRL's
    ``trainer.save_model`` or ``save_model_all_ranks``), because a sharded model is gathered by
    every rank; the rest is written by the main process only.
    """
    save_model(output_dir)
    if not is_main_process:
        return
    os.makedirs(output_dir, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    write_atomic(os.path.join(output_dir, "selfcorrect_config.json"), json.dumps(config_to_dict(*config_objs), indent=2))
    write_atomic(os.path.join(output_dir, "README.md"), model_card(method, objective, args, output_dir, extra or {}))
    if args.merge:
        merge_adapter(args.model_name_or_path, output_dir, os.path.join(output_dir, "merged"), trust_remote_code)


def merge_adapter(base: str, adapter_dir: str, out_dir: str, trust_remote_code: bool = False) -> str:
    """Write base + adapter merged into plain weights (full precision base, safetensors)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from data_gen.modeling import load_tokenizer, resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(base), trust_remote_code=trust_remote_code, use_safetensors=True
    )
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base, trust_remote_code).save_pretrained(out_dir)
    print(f"merged model written to {out_dir}", file=sys.stderr)
    return out_dir
