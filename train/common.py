"""What the training entry points share: the parsed options, model + LoRA/QLoRA loading (TRL's
ModelConfig), the run's identity in its output folder, data loading with clear errors,
conversation tokenisation with assistant masks, and the outputs (adapter, tokenizer, resolved
config, model card, optional merged model)."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from selfcorrect.config import DataSource, OverwriteOption, TaskOptions, check_range, config_to_dict, parse_config
from selfcorrect.device import check_launch_matches_machine, cuda_available, deepspeed_on_cpu
from selfcorrect.errors import NothingToDo, UserError
from selfcorrect.jsonl import write_atomic
from selfcorrect.modeling import merge_adapter
from selfcorrect.run_identity import check_run, data_identity, lock_output_dir, model_identity


@dataclass
class TrainOptions:
    """selfcorrect's training options beside TRL's ModelConfig and the method's own config."""

    merge: bool = field(default=False, metadata={"help": "Also write the base with the adapter merged into <output_dir>/merged."})


# Defaults that differ from TRL's ModelConfig: LoRA on every linear layer, the embedded model.
TRAIN_DEFAULTS = {"model_name_or_path": "smollm2-135m-instruct", "use_peft": True, "lora_target_modules": ["all-linear"]}


@dataclass
class Setup:
    """Everything a training entry point parsed besides its method config."""

    model: Any  # trl.ModelConfig
    data: DataSource
    task: TaskOptions
    train: TrainOptions
    overwrite: OverwriteOption


def parse_training(method_types: list[type], argv: list[str], prog: str, description: str | None = None) -> tuple[Any, ...]:
    """(Setup, *method configs) from a recipe and flags; the launch is checked against the machine
    and, without CUDA, training runs on the CPU in fp32 whatever the recipe says."""
    from trl import ModelConfig

    check_launch_matches_machine()
    types_ = [ModelConfig, DataSource, TaskOptions, TrainOptions, OverwriteOption, *method_types]
    model, data, task, train, ow, *method = parse_config(
        types_, argv + device_overrides(*types_), TRAIN_DEFAULTS, prog=prog, description=description
    )
    check_range("lora_r", model.lora_r, 1)
    check_range("lora_alpha", model.lora_alpha, 1)
    check_range("lora_dropout", model.lora_dropout, 0.0, 1.0)
    if model.load_in_4bit and not model.use_peft:
        raise UserError("load_in_4bit needs use_peft (QLoRA trains an adapter on a frozen 4-bit base)")
    if not data.dataset_path:
        raise UserError("dataset_path is not set (point it at a data_gen output such as outputs/<run>/sft.jsonl)")
    for cfg in method:
        keep_token_out_of_arguments(cfg)
    return (Setup(model, data, task, train, ow), *method)


def keep_token_out_of_arguments(cfg: Any) -> None:
    """transformers pickles TrainingArguments into training_args.bin (and every checkpoint's copy),
    so a ``--hub_token`` left there would be written in plain text. The hub client reads the token
    from HF_TOKEN (as after ``hf auth login``), so it moves there and the arguments keep none.
    A push that cannot happen (HF_HUB_OFFLINE) is refused before training, not after it."""
    from selfcorrect.hub import hub_offline

    token = getattr(cfg, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        cfg.hub_token = None
    if getattr(cfg, "push_to_hub", False) and hub_offline():
        raise UserError("push_to_hub needs the network but HF_HUB_OFFLINE is set: unset it, or push the adapter later")


def device_overrides(*config_types: type) -> list[str]:
    """Without CUDA, train on the CPU in fp32 whatever the recipe says (its bf16 is for GPUs). Only
    keys the configs declare are overridden. Under DeepSpeed on the CPU (cpu_zero2/3.yaml),
    ``use_cpu`` stays false, as it makes accelerate skip DeepSpeed, and the process group is gloo
    (``selfcorrect.device.process_group_kwargs`` says why)."""
    if cuda_available():
        return []
    known = {f.name for t in config_types for f in dataclasses.fields(t)}
    out: list[str] = []
    device = [("use_cpu", "false"), ("ddp_backend", "gloo")] if deepspeed_on_cpu() else [("use_cpu", "true")]
    for key, value in (*device, ("bf16", "false"), ("fp16", "false"), ("dtype", "float32")):
        if key in known:
            out += [f"--{key}", value]
    return out


def check_training_values(cfg: Any) -> None:
    """Range checks of TRL/transformers training values, before the model loads."""
    check_range("learning_rate", cfg.learning_rate, 1e-12)
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if hasattr(cfg, name):
            check_range(name, getattr(cfg, name), 1)
    if getattr(cfg, "max_steps", -1) == 0 or getattr(cfg, "max_steps", -1) < -1:
        raise UserError(f"max_steps must be >= 1 (or -1 for num_train_epochs) (got {cfg.max_steps})")
    if getattr(cfg, "max_steps", -1) == -1 and getattr(cfg, "num_train_epochs", 1) <= 0:
        raise UserError(f"num_train_epochs must be > 0 (got {cfg.num_train_epochs})")
    for name in ("logging_steps", "save_steps"):
        value = getattr(cfg, name, 1)
        if value is not None and value < 0:
            raise UserError(f"{name} must be >= 0 (got {value})")


def last_checkpoint(output_dir: str) -> str | None:
    """The checkpoint-N folder with the highest N in output_dir, or None."""
    ckpts = [d for d in glob.glob(os.path.join(output_dir, "checkpoint-*")) if re.search(r"checkpoint-\d+$", d)]
    return max(ckpts, key=lambda d: int(d.rsplit("-", 1)[1])) if ckpts else None


def resume_checkpoint(value: Any, output_dir: str) -> str | None:
    """``--resume_from_checkpoint true`` means the last checkpoint-N in output_dir (as HF users expect)."""
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    if str(value).lower() == "true":
        last = last_checkpoint(output_dir)
        if last is None:
            raise UserError(f"--resume_from_checkpoint true: no checkpoint-N folder in {output_dir}")
        return last
    if not os.path.isdir(str(value)):
        raise UserError(f"resume_from_checkpoint: no such checkpoint folder {value}")
    return str(value)


# Options that do not change what a training run computes (logging, saving cadence, where it goes).
_VOLATILE = {
    "output_dir",
    "logging_dir",
    "logging_steps",
    "logging_strategy",
    "save_steps",
    "save_strategy",
    "report_to",
    "resume_from_checkpoint",
    "disable_tqdm",
    "run_name",
    "overwrite",
    "push_to_hub",
    "hub_model_id",
    "hub_token",
    "save_total_limit",
    "merge",
    "log_level",
    "logging_first_step",
    "eval_steps",
    "dataloader_num_workers",
}
_OWNED = [
    "adapter_model.safetensors",
    "adapter_config.json",
    "model*.safetensors",
    "config.json",
    "generation_config.json",
    "checkpoint-*",
    "merged",
    "README.md",
    "selfcorrect_config.json",
    "*_log.jsonl",
    "training_args.bin",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template.jinja",
    "runs",  # TensorBoard logs (report_to tensorboard)
]


FINISHED = "selfcorrect_config.json"  # written by save_outputs once the final adapter is on disk


def claim_output_dir(method: str, setup: Setup, cfg: Any, resume: str | None, is_main: bool) -> tuple[str | None, bool]:
    """Record this training run in output_dir/run.json and lock the folder, or refuse a folder that
    holds anything but this method's run with these settings (see run_identity.check_run). Called
    before the model loads, so a refused run costs nothing. Returns the checkpoint to resume from
    (the one asked for, or the last one an interrupted run with these settings left there: a re-run
    continues it instead of training from step 0 over its checkpoints) and whether the folder
    already holds this run finished (nothing to do, as for a finished data_gen or eval run)."""
    if not is_main:
        return resume, False
    settings = {"model_weights": model_identity(setup.model.model_name_or_path), "data": data_identity(setup.data.dataset_path)}
    for obj in (setup.model, setup.data, setup.task, cfg):
        for k, v in config_to_dict(obj).items():
            if k not in _VOLATILE and not k.startswith("_"):
                settings[k] = v
    command, overwrite = f"train/{method}", setup.overwrite.overwrite
    if resume and not overwrite:
        # A resumed run continues the one recorded there, or records itself in a new folder (a folder
        # holding a run without a record, from an older version, is accepted as is).
        out = cfg.output_dir
        if os.path.exists(os.path.join(out, "run.json")) or not os.path.isdir(out) or not os.listdir(out):
            check_run(out, command, settings, _OWNED, False)
        else:
            lock_output_dir(out)
        return resume, False
    if not check_run(cfg.output_dir, command, settings, _OWNED, overwrite):
        return None, False
    if os.path.exists(os.path.join(cfg.output_dir, FINISHED)):
        return None, True
    last = last_checkpoint(cfg.output_dir)
    if last:
        print(
            f"resuming from {last}, where an earlier run with these settings stopped (--overwrite true starts over)",
            file=sys.stderr,
        )
    return last, False


def load_policy(model_args: Any, trust_remote_code: bool = False):
    """(model, peft LoraConfig or None) from TRL's ModelConfig: QLoRA loads the base in 4-bit (each
    rank's copy on its own GPU), LoRA leaves it in the configured dtype."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import get_peft_config, get_quantization_config

    from selfcorrect.modeling import _safetensor_error, check_local_weights, load_error, resolve_model_path

    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
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


def load_tokenizer_for_training(setup: Setup, trust_remote_code: bool = False):
    from selfcorrect.modeling import load_tokenizer

    return load_tokenizer(setup.model.model_name_or_path, trust_remote_code, padding_side="right")


ROLES = ("system", "user", "assistant")


def _check_messages(value: Any, key: str, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: '{key}' must be a non-empty list of {{role, content}} messages (got {value!r:.60})")
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise UserError(f"{where}: '{key}' has a message with role {role!r:.40}; roles are {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise UserError(f"{where}: '{key}' has a {m['role']} message whose content is {m.get('content')!r:.40}, not text")
    if key == "messages" and not any(m["role"] == "assistant" for m in value):
        raise UserError(f"{where}: 'messages' has no assistant turn to train on")


def _check_example(row: dict[str, Any], where: str) -> None:
    """An RL row's ``example`` (the task item its episodes are graded on) is the JSON text data_gen
    writes, or the same object unencoded; either way it becomes the JSON text every trainer reads."""
    value = row["example"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UserError(f"{where}: 'example' is not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("id", "question", "gold")):
        raise UserError(f"{where}: 'example' must be an object with text fields id, question and gold (a data_gen rl.jsonl row)")
    row["example"] = json.dumps(value, ensure_ascii=False)


# The one rule for each field a trainer reads from a data_gen file, whichever trainer reads it.
_ROW_RULES = {
    "messages": lambda row, where: _check_messages(row["messages"], "messages", where),
    "revision_prompt": lambda row, where: _check_messages(row["revision_prompt"], "revision_prompt", where),
    "example": _check_example,
    **{key: lambda row, where, key=key: _check_text_or_messages(row, key, where) for key in ("prompt", "chosen", "rejected")},
}


def _check_text_or_messages(row: dict[str, Any], key: str, where: str) -> None:
    if not isinstance(row[key], str):
        _check_messages(row[key], key, where)


def read_training_rows(path: str, required: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a data_gen .jsonl, each checked for the fields the method needs (one line naming the
    file, line and field for a missing or ill-typed one)."""
    from selfcorrect.jsonl import read_rows

    if not path:
        raise UserError("dataset_path is not set (point it at a data_gen output such as outputs/<run>/sft.jsonl)")
    rows = []
    for lineno, row in enumerate(read_rows(path), 1):
        missing = [k for k in required if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: row lacks {', '.join(missing)}")
        for key in required:
            if key in _ROW_RULES:
                _ROW_RULES[key](row, f"{path}:{lineno}")
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
    from selfcorrect.rollout import render_chat

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
    from selfcorrect.rollout import render_chat

    if messages and messages[-1]["role"] == "assistant":
        return render_chat(tokenizer, messages[:-1], messages[-1]["content"])
    return render_chat(tokenizer, messages)


def data_gen_config(setup: Setup) -> dict[str, Any]:
    """The resolved config of the data_gen run that wrote the training file ({} when it is not beside it)."""
    made_by = os.path.join(os.path.dirname(os.path.abspath(setup.data.dataset_path or ".")), "config.json")
    try:
        with open(made_by, encoding="utf-8") as f:
            dg = json.load(f)
    except (OSError, ValueError):
        return {}
    return dg if isinstance(dg, dict) else {}


def hub_model_id(name_or_path: str) -> str | None:
    """The hub id a model argument names, or None for a local folder."""
    from selfcorrect.modeling import SMOLLM2_ALIAS, SMOLLM2_HUB_ID

    if name_or_path == SMOLLM2_ALIAS:
        return SMOLLM2_HUB_ID  # the embedded copy is that model's weights (from its GGUF release)
    return None if os.path.isdir(name_or_path) else name_or_path


def source_dataset(setup: Setup) -> tuple[str | None, str]:
    """(hub dataset id or None, how the card names the data data_gen ran on): the task's hub dataset
    when data_gen read no local path, else that path, marked local."""
    dg = data_gen_config(setup)
    if not dg:
        return None, f"{setup.data.dataset_path} (local)"
    if dg.get("dataset_path"):
        return None, f"{dg['dataset_path']} (local)"
    from selfcorrect.tasks import get_task

    hub = getattr(get_task(dg.get("task", setup.task.task)), "hub_id", None)
    return hub, hub or "the task's default data"


def eval_command(output_dir: str, setup: Setup) -> str:
    """The eval command for this adapter, on the held-out part of the data data_gen ran on when its
    config.json is beside the training file (so the command runs as written)."""
    parts = [
        f"python -m eval --model_name_or_path {setup.model.model_name_or_path} --adapter {output_dir}",
        f"--task {setup.task.task} --prompt_set {setup.task.prompt_set}",
    ]
    if setup.task.prompt_sets_file:
        parts.append(f"--prompt_sets_file {setup.task.prompt_sets_file}")
    dg = data_gen_config(setup)
    if dg:
        if dg.get("dataset_path"):
            parts.append(f"--dataset_path {dg['dataset_path']} --split {dg.get('split', 'test')}")
        if dg.get("heldout_fraction"):
            parts.append(f"--heldout_fraction {dg['heldout_fraction']} --heldout true")
    parts.append(f"--rounds 5 --output_dir {output_dir}/eval")
    return " ".join(parts)


def model_card(method: str, objective: str, setup: Setup, output_dir: str, extra: dict[str, Any]) -> str:
    m, t = setup.model, setup.task
    targets = m.lora_target_modules if isinstance(m.lora_target_modules, str) else ",".join(m.lora_target_modules or [])
    adapter = "QLoRA 4-bit" if m.load_in_4bit else "LoRA" if m.use_peft else "none (full fine-tuning)"
    if m.use_peft:
        adapter += f", r={m.lora_r}, alpha={m.lora_alpha}, targets={targets}"
    # The hub reads base_model and datasets as hub ids: local paths stay out of the front matter and
    # are named in the table, marked local.
    base_id = hub_model_id(m.model_name_or_path)
    data_id, data_source = source_dataset(setup)
    front = [
        "---",
        *([f"base_model: {base_id}"] if base_id else []),
        f"library_name: {'peft' if m.use_peft else 'transformers'}",
        "tags:",
        "- selfcorrect",
        f"- {method}",
        "- self-correction",
        f"- {t.task}",
        *(["datasets:", f"- {data_id}"] if data_id else []),
        "---",
        "",
    ]
    lines = front + [
        f"# {os.path.basename(os.path.abspath(output_dir))}",
        "",
        f"A {'LoRA adapter' if m.use_peft else 'fully fine-tuned model'} trained by selfcorrect `train/{method}.py`.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {base_id or m.model_name_or_path + ' (local)'} |",
        f"| method | {method} |",
        f"| objective | {objective} |",
        f"| training data | {setup.data.dataset_path} (local, written by data_gen) |",
        f"| data_gen source | {data_source} |",
        f"| task / prompt set | {t.task} / {t.prompt_set} |",
        f"| adapter | {adapter} |",
    ]
    for k, v in extra.items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "## Evaluate next", "", "```bash", eval_command(output_dir, setup), "```", ""]
    return "\n".join(lines)


def wandb_init_kwargs(run_name: str | None) -> dict[str, Any]:
    """accelerate's ``init_trackers`` keyword for a wandb run name (None: wandb picks one)."""
    return {"wandb": {"name": run_name}} if run_name else {}


def push_folder_to_hub(output_dir: str, hub_model_id: str | None) -> str:
    """Upload a finished training folder (adapter, tokenizer, card, config; not its checkpoints) to
    the hub, as TRL's ``push_to_hub`` does for the TRL trainers. Returns the repository id."""
    from huggingface_hub import HfApi

    repo_id = hub_model_id or os.path.basename(os.path.abspath(output_dir))
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=output_dir, ignore_patterns=["checkpoint-*", "checkpoint-*/**"])
    print(f"pushed {output_dir} to the hub: {repo_id}", file=sys.stderr)
    return repo_id


def save_model_all_ranks(accelerator, model, output_dir: str) -> None:
    """Save the weights from an accelerate loop. Call on every process: under ZeRO-3 or FSDP each
    rank holds a shard, and ``get_state_dict`` gathers them (the main process writes the file)."""
    state_dict = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(
        output_dir,
        state_dict=state_dict,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        safe_serialization=True,
    )


def save_outputs(
    save_model,
    tokenizer,
    output_dir: str,
    method: str,
    objective: str,
    setup: Setup,
    config_objs,
    extra=None,
    trust_remote_code: bool = False,
    is_main_process: bool = True,
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
    write_atomic(os.path.join(output_dir, "README.md"), model_card(method, objective, setup, output_dir, extra or {}))
    if setup.train.merge:
        merge_adapter(setup.model.model_name_or_path, output_dir, os.path.join(output_dir, "merged"), trust_remote_code)


def final_loss(log_history: list[dict], key: str = "loss") -> str:
    """The last logged value of ``key``; with logging_steps larger than the run, TRL logs only the
    run's average (``train_loss``), which is reported then."""
    values = [h[key] for h in log_history if key in h]
    if values:
        return f"{values[-1]:.4f}"
    avg = [h["train_loss"] for h in log_history if "train_loss" in h]
    return f"{avg[-1]:.4f} (average over the run)" if avg else "n/a"


def trainable_snapshot(model, max_elements: int = 50_000_000) -> dict[str, Any]:
    """A CPU copy of the trainable weights (LoRA: a few MB), to tell at the end whether training
    moved them; empty for a full fine-tune of a large model (too big to copy)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if sum(getattr(p, "ds_numel", p.numel()) for _, p in params) > max_elements:
        return {}
    with gathered([p for _, p in params]):
        return {n: p.detach().float().cpu().clone() for n, p in params}


def gathered(params: list[Any]):
    """A context in which ZeRO-3's sharded parameters are whole (every process must enter it);
    elsewhere a no-op. Under ZeRO-3 a parameter outside it is an empty shard, so a comparison of
    weights would always differ."""
    import contextlib

    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params)


def weights_moved(model, initial: dict[str, Any]) -> bool | None:
    """Whether any trainable tensor differs from ``initial`` (``trainable_snapshot``); None when
    there was no snapshot. A run whose weights never moved learnt nothing (say, every reward was 0)."""
    import torch

    if not initial:
        return None
    named = list(model.named_parameters())
    with torch.no_grad(), gathered([p for _, p in named if p.requires_grad]):
        for name, p in named:
            key = name if name in initial else name.replace("module.", "", 1)
            if key in initial and not torch.equal(p.detach().float().cpu(), initial[key]):
                return True
    return False


NOT_MOVED = "the trainable weights never moved (every advantage or loss gradient was 0: nothing was learnt)"


def not_moved(scheduler: Any, steps: int) -> str:
    """Why the weights never moved: a schedule whose learning rate was 0 at every step (a warm-up
    longer than the run starts at 0), or else the gradients (NOT_MOVED)."""
    lambdas = getattr(getattr(scheduler, "scheduler", scheduler), "lr_lambdas", None)  # accelerate wraps it
    if lambdas and steps >= 1 and all(f(i) == 0 for f in lambdas for i in range(steps)):
        return (
            f"the trainable weights never moved: the learning rate was 0 at each of the run's {steps} step(s) "
            "(the warm-up starts at 0): lower warmup_steps, or train for more steps"
        )
    return NOT_MOVED


@contextlib.contextmanager
def resumable(output_dir: str):
    """Ctrl-C during training ends with one line saying which checkpoint to resume from."""
    from selfcorrect.errors import Interrupted

    try:
        yield
    except KeyboardInterrupt:
        last = last_checkpoint(output_dir)
        if last:
            raise Interrupted(
                f"the last checkpoint is {last}: re-run the same command with --resume_from_checkpoint true"
            ) from None
        raise Interrupted(
            "no checkpoint was saved yet (set save_steps to save some); re-run the command to start again"
        ) from None


PROVENANCE = ("task", "prompt_set", "prompt_set_version")  # what data_gen writes on every training row


def check_provenance(rows: Any, path: str, task: str, prompt_set: str, prompt_set_version: int | None = None) -> None:
    """Refuse data recorded with another task or prompt set than the recipe's (rows without the
    fields, from older data_gen runs, are accepted). ``prompt_set_version`` is checked where the
    rows carry rendered prompts (SFT, DPO, GRPO on trace revisions): they were written in that
    wording, and eval will use the recipe's. ``rows``: dicts, or a datasets.Dataset."""
    for lineno, row in enumerate(rows, 1):
        for key, want in (("task", task), ("prompt_set", prompt_set), ("prompt_set_version", prompt_set_version)):
            got = row.get(key)
            if want is not None and got is not None and got != want:
                raise UserError(f"{path}:{lineno}: data was made with {key} '{got}' but the recipe says '{want}'")


def prepare_run(method: str, setup: Setup, cfg: Any) -> str | None:
    """Before any model loads: check the training values, find the checkpoint to resume from and
    claim the output folder. Returns the checkpoint (or None)."""
    from selfcorrect.device import process_state

    check_training_values(cfg)
    state = process_state()
    resume = resume_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir)
    resume, finished = claim_output_dir(method, setup, cfg, resume, state.is_main_process)
    if state.num_processes > 1:  # the main process decided (it alone reads and locks the folder)
        from accelerate.utils import broadcast_object_list

        resume, finished = broadcast_object_list([(resume, finished)])[0]
    if finished:
        raise NothingToDo(
            f"{cfg.output_dir} already holds this finished train/{method} run: nothing to do (--overwrite true trains it again)"
        )
    return resume


def train_and_save(
    trainer, resume: str | None, method: str, objective: str, setup: Setup, config_objs, tokenizer, extra: dict[str, Any]
) -> None:
    """Train a TRL trainer, then save through it on every rank; the card says whether the weights moved."""
    snapshot = trainable_snapshot(trainer.model)
    with resumable(trainer.args.output_dir):
        trainer.train(resume_from_checkpoint=resume)
    extra = {"steps": trainer.state.global_step, "final train loss": final_loss(trainer.state.log_history), **extra}
    for key, value in list(extra.items()):
        if callable(value):
            extra[key] = value(trainer.state.log_history)
    if weights_moved(trainer.model, snapshot) is False:
        extra["warning"] = not_moved(trainer.lr_scheduler, trainer.state.global_step)
        if trainer.accelerator.is_main_process:
            print(f"warning: {extra['warning']}", file=sys.stderr)
    save_outputs(
        trainer.save_model,
        tokenizer,
        trainer.args.output_dir,
        method,
        objective,
        setup,
        config_objs,
        extra,
        trainer.args.trust_remote_code,
        trainer.accelerator.is_main_process,
    )
