"""The start of a training run: the options parsed from a recipe and flags (checked against the
machine), the checkpoint to resume from, and the output folder claimed for this run before any
model loads, so a refused run costs nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from selfcorrect.config import DataConfig, OverwriteConfig, TaskConfig, check_range
from selfcorrect.device import check_launch_matches_machine, cuda_available, deepspeed_on_cpu, env_flag, process_state
from selfcorrect.errors import Interrupted, NothingToDo, UserError
from selfcorrect.hub import hub_offline
from selfcorrect.jsonl import not_a_folder
from selfcorrect.parsing import parse_config
from selfcorrect.run_identity import check_outside_inputs, check_run, data_identity, lock_output_dir, model_identity
from selfcorrect.saved_config import config_to_dict
from train.checkpoints import COMPLETE, TRL_CHECKPOINT, checkpoint_folders, checkpoint_problem, usable_checkpoint


@dataclass
class TrainConfig:
    """selfcorrect's training options beside TRL's ModelConfig and the method's own config."""

    merge: bool = field(default=False, metadata={"help": "Also write <output_dir>/merged (base + adapter)."})


# Defaults that differ from TRL's ModelConfig: LoRA on every linear layer, the embedded model, and
# dtype unset (None), so that load_policy can tell "not set" from float32: it loads unset as TRL's
# float32, except that QLoRA then computes in bf16 where CUDA supports it.
TRAIN_DEFAULTS = {
    "model_name_or_path": "smollm2-135m-instruct",
    "use_peft": True,
    "lora_target_modules": ["all-linear"],
    "dtype": None,
}


@dataclass
class Setup:
    """Everything a training entry point parsed besides its method config."""

    model: Any  # trl.ModelConfig
    data: DataConfig
    task: TaskConfig
    train: TrainConfig
    overwrite: OverwriteConfig

    def configs(self, *method_configs: Any) -> tuple[Any, ...]:
        """Every config of the run, in the order the resolved selfcorrect_config.json lists them."""
        return (self.model, self.data, self.task, self.train, *method_configs)


def training_config_types(*method_types: type) -> list[type]:
    """Every config a training entry point parses, in order: TRL's ModelConfig, the data, the task,
    selfcorrect's training options, the overwrite switch, then the method's own."""
    from trl import ModelConfig  # TRL's import takes seconds: only when a trainer parses

    return [ModelConfig, DataConfig, TaskConfig, TrainConfig, OverwriteConfig, *method_types]


# The data_gen output each training method reads.
DATA_FILES = {"sft": "sft.jsonl", "dpo": "dpo.jsonl", "grpo": "rl.jsonl", "score": "rl.jsonl", "kround": "rl.jsonl"}


def parse_training(types_: list[type], argv: list[str], prog: str, description: str | None = None) -> tuple[Any, ...]:
    """(Setup, *method configs) from a recipe and flags; ``types_`` is ``training_config_types(...)``.
    The launch is checked against the machine and, without CUDA, training runs on the CPU in fp32
    whatever the recipe says."""
    check_launch_matches_machine()
    model, data, task, train, ow, *method = parse_config(
        types_, argv + device_overrides(*types_), TRAIN_DEFAULTS, prog=prog, description=description
    )
    check_range("lora_r", model.lora_r, 1)
    check_range("lora_alpha", model.lora_alpha, 1)
    check_range("lora_dropout", model.lora_dropout, 0.0, 1.0)
    if model.load_in_4bit and not model.use_peft:
        raise UserError("load_in_4bit needs use_peft (QLoRA trains an adapter on a frozen 4-bit base)")
    check_quantized_launch(model.load_in_4bit or model.load_in_8bit)
    check_full_fine_tuning(model.use_peft, model.dtype)
    if not data.dataset_path:
        raise UserError("dataset_path is not set (point it at a data_gen output such as outputs/<run>/sft.jsonl)")
    meant = os.path.join(data.dataset_path, DATA_FILES.get(os.path.basename(prog).removesuffix(".py"), ""))
    not_a_folder(data.dataset_path, "a data_gen output file (.jsonl)", meant if os.path.isfile(meant) else None)
    for cfg in method:
        keep_token_out_of_arguments(cfg)
    return (Setup(model, data, task, train, ow), *method)


def check_quantized_launch(quantized: bool, env: dict[str, str] | None = None) -> None:
    """QLoRA under DeepSpeed ZeRO-3 is refused by name. load_policy pins each rank's 4-bit base to its
    own GPU (a device_map), which ZeRO-3's sharded loading forbids, so transformers stopped with an
    error about device_map; sharding the quantized weights would also need bnb_4bit_quant_storage
    set to the training dtype, which is untested here."""
    env = dict(os.environ if env is None else env)
    if quantized and env_flag(env, "ACCELERATE_USE_DEEPSPEED") and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise UserError(
            "QLoRA (load_in_4bit / load_in_8bit) does not run under DeepSpeed ZeRO-3 here: launch with"
            " accelerate_configs/zero2.yaml or ddp.yaml (each GPU holds the whole 4-bit base), or train LoRA without it"
        )


def check_full_fine_tuning(use_peft: bool, dtype: str | None, env: dict[str, str] | None = None) -> None:
    """Full fine-tuning with 16-bit weights is refused outside DeepSpeed (whose bf16 mode keeps fp32
    master weights in the optimizer): AdamW would update the bf16 weights themselves, and an update
    smaller than a bf16 step (2^-7 at 1.0) rounds away without a warning. In fp32 the weights are the
    master copy and bf16 autocast still computes in bf16."""
    env = dict(os.environ if env is None else env)
    if use_peft or dtype not in ("bfloat16", "float16") or env_flag(env, "ACCELERATE_USE_DEEPSPEED"):
        return
    raise UserError(
        f"full fine-tuning (use_peft false) with {dtype} weights has no fp32 master copy, so small AdamW updates round"
        " away: set --dtype float32 (about 16 bytes per parameter with AdamW: 112 GB for a 7B model before activations,"
        " and SCoRe/K-round RL add a full copy as reference), shard it with DeepSpeed, or train LoRA (--use_peft true)"
    )


def check_fsdp_state_dict(env: dict[str, str] | None = None) -> None:
    """The TRL trainers under FSDP need FULL_STATE_DICT: transformers' Trainer.save_model writes the
    model (here the adapter, gathered by accelerate's get_state_dict) only then, and under
    SHARDED_STATE_DICT (accelerate's default for FSDP2) it writes nothing and says nothing.
    ``accelerate launch`` passes the config's choice as FSDP_STATE_DICT_TYPE (accelerate/utils/launch.py)."""
    env = dict(os.environ if env is None else env)
    if not env_flag(env, "ACCELERATE_USE_FSDP"):
        return
    default = "FULL_STATE_DICT" if env.get("FSDP_VERSION", "1") == "1" else "SHARDED_STATE_DICT"  # FullyShardedDataParallelPlugin
    if env.get("FSDP_STATE_DICT_TYPE", default).upper() not in ("FULL_STATE_DICT", "1"):
        raise UserError(
            "under FSDP the TRL trainers save the adapter only from a full state dict (with SHARDED_STATE_DICT, the"
            " default of fsdp_version 2, they save none): set fsdp_state_dict_type: FULL_STATE_DICT in the accelerate"
            " config, as accelerate_configs/fsdp.yaml does"
        )


def keep_token_out_of_arguments(cfg: Any) -> None:
    """transformers pickles TrainingArguments into training_args.bin (and every checkpoint's copy),
    so a ``--hub_token`` left there would be written in plain text. The hub client reads the token
    from HF_TOKEN (as after ``hf auth login``), so it moves there and the arguments keep none.
    A push that cannot happen (HF_HUB_OFFLINE) is refused before training, not after it."""
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
    ckpts = checkpoint_folders(output_dir)
    return ckpts[0] if ckpts else None


def say_skipped(skipped: list[str]) -> None:
    if skipped:
        print(f"skipping incomplete checkpoints: {', '.join(skipped)}", file=sys.stderr)


def no_usable_checkpoint(output_dir: str, skipped: list[str]) -> UserError:
    return UserError(
        f"no usable checkpoint in {output_dir}: {', '.join(skipped)}; to start fresh, re-run with --overwrite true"
        " (it deletes them) or remove those folders"
    )


def resume_checkpoint(value: Any, output_dir: str, layout=TRL_CHECKPOINT, say: bool = True) -> str | None:
    """``--resume_from_checkpoint true`` means the newest complete checkpoint-N in output_dir (as HF
    users expect; newer incomplete ones are named and skipped); a folder named is used only if complete."""
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    if str(value).lower() == "true":
        found, skipped = usable_checkpoint(output_dir, layout)
        if found is None and skipped:
            raise no_usable_checkpoint(output_dir, skipped)
        if found is None:
            raise UserError(f"--resume_from_checkpoint true: no checkpoint-N folder in {output_dir}")
        if say:
            say_skipped(skipped)
        return found
    if not os.path.isdir(str(value)):
        raise UserError(f"resume_from_checkpoint: no such checkpoint folder {value}")
    if (problem := checkpoint_problem(str(value), layout)) is not None:
        raise UserError(
            f"resume_from_checkpoint {value} is incomplete ({problem}): name another checkpoint, or leave"
            " resume_from_checkpoint unset to start fresh"
        )
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
    "ddp_timeout",  # a resumed run may need a longer one
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
    "base_model.json",
    "*_log.jsonl",
    "training_args.bin",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template.jinja",
    "runs",  # TensorBoard logs (report_to tensorboard)
]


FINISHED = "selfcorrect_config.json"  # written by save_outputs once the final adapter is on disk


def claim_output_dir(
    method: str, setup: Setup, cfg: Any, resume: str | None, is_main: bool, layout=TRL_CHECKPOINT
) -> tuple[str | None, bool]:
    """Record this training run in output_dir/run.json and lock the folder, or refuse a folder that
    holds anything but this method's run with these settings (see run_identity.check_run). Called
    before the model loads, so a refused run costs nothing. Returns the checkpoint to resume from
    (the one asked for, or the last one an interrupted run with these settings left there: a re-run
    continues it instead of training from step 0 over its checkpoints; incomplete ones are named and
    skipped, and a folder holding none complete is refused with how to start fresh) and whether the folder
    already holds this run finished (nothing to do, as for a finished data_gen or eval run)."""
    if not is_main:
        return resume, False
    check_outside_inputs(
        cfg.output_dir, {"--model_name_or_path": setup.model.model_name_or_path, "--dataset_path": setup.data.dataset_path}
    )
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
    last, skipped = usable_checkpoint(cfg.output_dir, layout)
    if last is None and skipped:
        raise no_usable_checkpoint(cfg.output_dir, skipped)
    say_skipped(skipped)
    if last:
        print(
            f"resuming from {last}, where an earlier run with these settings stopped (--overwrite true starts over)",
            file=sys.stderr,
        )
    return last, False


@contextlib.contextmanager
def resumable(output_dir: str):
    """Ctrl-C during training ends with one line saying which checkpoint to resume from."""
    try:
        yield
    except KeyboardInterrupt:
        complete = [d for d in checkpoint_folders(output_dir) if os.path.exists(os.path.join(d, COMPLETE))]
        last = complete[0] if complete else None
        if last:
            raise Interrupted(
                f"the last checkpoint is {last}: re-run the same command with --resume_from_checkpoint true"
            ) from None
        raise Interrupted(
            "no checkpoint was saved yet (set save_steps to save some); re-run the command to start again"
        ) from None


def prepare_run(method: str, setup: Setup, cfg: Any, layout=TRL_CHECKPOINT) -> str | None:
    """Before any model loads: check the training values, find the checkpoint to resume from (the
    newest complete one, ``layout`` saying what a complete one holds: train/checkpoints.py) and
    claim the output folder. Returns the checkpoint (or None)."""
    check_training_values(cfg)
    check_fsdp_state_dict()
    state = process_state(cfg.ddp_timeout)  # the run's first process group: it gets the timeout
    resume = resume_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir, layout, say=state.is_main_process)
    resume, finished = claim_output_dir(method, setup, cfg, resume, state.is_main_process, layout)
    if state.num_processes > 1:  # the main process decided (it alone reads and locks the folder)
        from accelerate.utils import broadcast_object_list

        resume, finished = broadcast_object_list([(resume, finished)])[0]
    if finished:
        raise NothingToDo(
            f"{cfg.output_dir} already holds this finished train/{method} run: nothing to do (--overwrite true trains it again)"
        )
    return resume
