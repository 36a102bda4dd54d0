"""What a training run leaves: the adapter (or model) saved from every rank, the tokenizer, the
resolved config, a model card with the eval command to run next, an optional merged model and hub
push, and whether training moved the weights at all."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import sys
from typing import Any

from selfcorrect.cli import command_line
from selfcorrect.demo_model import SMOLLM2_ALIAS, SMOLLM2_HUB_ID
from selfcorrect.errors import UserError
from selfcorrect.jsonl import write_atomic
from selfcorrect.modeling import merge_adapter, record_base
from selfcorrect.saved_config import config_to_dict
from selfcorrect.tasks import get_task
from train.run import Setup


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

    hub = getattr(get_task(dg.get("task", setup.task.task)), "hub_id", None)
    return hub, hub or "the task's default data"


def eval_command(output_dir: str, setup: Setup) -> str:
    """The eval command for this adapter, on the held-out part of the data data_gen ran on when its
    config.json is beside the training file, shell-quoted (so the command runs as written)."""
    args = ["python", "-m", "eval", "--model_name_or_path", setup.model.model_name_or_path, "--adapter", output_dir]
    args += ["--task", setup.task.task, "--prompt_set", setup.task.prompt_set]
    if setup.task.prompt_sets_file:
        args += ["--prompt_sets_file", setup.task.prompt_sets_file]
    dg = data_gen_config(setup)
    if dg:
        if dg.get("dataset_path"):
            args += ["--dataset_path", dg["dataset_path"], "--split", dg.get("split", "test")]
        if dg.get("heldout_fraction"):
            args += ["--heldout_fraction", dg["heldout_fraction"], "--heldout", "true"]
    args += ["--rounds", 5, "--output_dir", os.path.join(output_dir, "eval")]
    return command_line(*args)


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
    rank holds a shard, and ``get_state_dict`` gathers them (the main process writes the file).
    A LoRA adapter is saved from its trainable weights alone: ``get_state_dict`` would gather
    every weight of the base to rank 0 under ZeRO-3 to save an adapter of a few MB."""
    from peft import PeftModel

    unwrapped = accelerator.unwrap_model(model)
    if isinstance(unwrapped, PeftModel):
        named = [(n, p) for n, p in unwrapped.named_parameters() if p.requires_grad]
        with gathered([p for _, p in named]):
            state_dict = {n: p.detach().cpu().clone() for n, p in named}
        if accelerator.is_main_process:  # PEFT keeps the adapter's own keys of this state dict
            unwrapped.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
        return
    state_dict = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(
        output_dir,
        state_dict=state_dict,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        safe_serialization=True,
    )


def save_outputs(
    *,
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
    check_saved_weights(output_dir, use_peft=setup.model.use_peft)  # before the marker of a finished run
    os.makedirs(output_dir, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    if setup.model.use_peft:
        record_base(output_dir, setup.model.model_name_or_path)
    write_atomic(os.path.join(output_dir, "selfcorrect_config.json"), json.dumps(config_to_dict(*config_objs), indent=2))
    write_atomic(os.path.join(output_dir, "README.md"), model_card(method, objective, setup, output_dir, extra or {}))
    if setup.train.merge:
        merge_adapter(setup.model.model_name_or_path, output_dir, os.path.join(output_dir, "merged"), trust_remote_code)


def check_saved_weights(output_dir: str, *, use_peft: bool) -> None:
    """Refuse to mark a run finished when ``save_model`` left no weights: the adapter file (LoRA) or
    model*.safetensors (full fine-tuning) must exist and hold tensors, none of them empty. Under FSDP
    with SHARDED_STATE_DICT, transformers' Trainer.save_model writes nothing and says nothing, and an
    empty shard is what a save outside ZeRO-3's or FSDP's gather writes."""
    from safetensors import safe_open

    if use_peft:
        what, files = "no adapter", [os.path.join(output_dir, "adapter_model.safetensors")]
    else:
        what, files = "no model weights", sorted(glob.glob(os.path.join(output_dir, "model*.safetensors")))
    shapes = []
    for path in files:
        if os.path.exists(path):
            with safe_open(path, framework="pt") as f:
                shapes += [f.get_slice(key).get_shape() for key in f.keys()]
    if not shapes or any(math.prod(shape) == 0 for shape in shapes):
        found = "empty tensors" if shapes else "no tensors" if any(map(os.path.exists, files)) else "no file"
        raise UserError(
            f"the trainer saved {what} in {output_dir} ({os.path.basename(files[0]) if files else 'model*.safetensors'}:"
            f" {found}), so the run is not marked finished: under FSDP set fsdp_state_dict_type: FULL_STATE_DICT"
            " in the accelerate config (accelerate_configs/fsdp.yaml has it)"
        )


def final_loss(log_history: list[dict], key: str = "loss") -> str:
    """The last logged value of ``key``; with logging_steps larger than the run, TRL logs only the
    run's average (``train_loss``), which is reported then."""
    values = [h[key] for h in log_history if key in h]
    if values:
        return f"{values[-1]:.4f}"
    avg = [h["train_loss"] for h in log_history if "train_loss" in h]
    return f"{avg[-1]:.4f} (average over the run)" if avg else "n/a"


SNAPSHOT_MAX_ELEMENTS = 50_000_000  # a full fine-tune's weights beyond this are not copied


def trainable_snapshot(model, max_elements: int = SNAPSHOT_MAX_ELEMENTS) -> dict[str, Any]:
    """A CPU copy of the trainable weights (LoRA: a few MB), to tell at the end whether training
    moved them; empty for a full fine-tune of a large model (too big to copy), and on a rank whose
    weights are on the meta device: with fsdp_cpu_ram_efficient_loading, ranks >= 1 load the model
    there and receive rank 0's weights when FSDP wraps it, and rank 0 (which writes the card) has
    the snapshot."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if too_big_to_copy(params, max_elements) or any(p.is_meta for _, p in params):
        return {}
    with gathered([p for _, p in params]):
        return {n: whole(p).detach().float().cpu().clone() for n, p in params}


def too_big_to_copy(params: list[tuple[str, Any]], max_elements: int) -> bool:
    """The same answer on every rank (ZeRO-3's ds_numel and a DTensor's numel are the whole
    weight's), so that every rank takes the same collectives in weights_moved."""
    return sum(getattr(p, "ds_numel", p.numel()) for _, p in params) > max_elements


def whole(p):
    """A parameter as a whole tensor: FSDP2's parameters are DTensor shards, gathered here (a
    collective: every rank calls it, for the same parameters in the same order)."""
    from torch.distributed.tensor import DTensor

    return p.full_tensor() if isinstance(p, DTensor) else p


def gathered(params: list[Any]):
    """A context in which ZeRO-3's sharded parameters are whole (every process must enter it);
    elsewhere a no-op. Under ZeRO-3 a parameter outside it is an empty shard, so a comparison of
    weights would always differ."""
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params)


def weights_moved(model, initial: dict[str, Any], max_elements: int = SNAPSHOT_MAX_ELEMENTS) -> bool | None:
    """Whether any trainable tensor differs from ``initial`` (``trainable_snapshot``); None when
    there was no snapshot. A run whose weights never moved learnt nothing (say, every reward was 0).
    Call on every rank: the sharded weights (ZeRO-3, FSDP) are gathered first, by every rank,
    including one with no snapshot (FSDP's ranks >= 1 under cpu-RAM-efficient loading)."""
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if too_big_to_copy(named, max_elements):
        return None
    with torch.no_grad(), gathered([p for _, p in named]):
        current = {name: whole(p) for name, p in named}
        if not initial:
            return None
        for name, tensor in current.items():
            key = name if name in initial else name.replace("module.", "", 1)
            if key in initial and not same_in_narrower_dtype(tensor.detach().cpu(), initial[key]):
                return True
    return False


def same_in_narrower_dtype(current, initial) -> bool:
    """Whether two tensors are equal once both are in the narrower of their dtypes. The snapshot is
    fp32; DeepSpeed bf16 casts the trainable weights to bf16 before the first step, so an exact fp32
    comparison always differed. The tolerance is the cast's rounding: an unmoved weight casts to
    exactly the engine's copy (round to nearest is deterministic), and an update too small to change
    a bf16 weight did not move it."""
    import torch

    narrow = min((current.dtype, initial.dtype), key=lambda d: torch.finfo(d).bits)
    return torch.equal(current.to(narrow), initial.to(narrow))


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


def save_trained(
    trainer,
    *,
    snapshot: dict[str, Any],
    method: str,
    objective: str,
    setup: Setup,
    config_objs,
    tokenizer,
    extra: dict[str, Any],
) -> None:
    """Save a trained TRL trainer's outputs on every rank. The card records the steps, the last
    loss, ``extra`` (a value may be a function of the trainer's log history) and a warning when the
    weights never moved from ``snapshot`` (``trainable_snapshot`` taken before training)."""
    history = trainer.state.log_history
    extra = {"steps": trainer.state.global_step, "final train loss": final_loss(history), **extra}
    extra = {key: value(history) if callable(value) else value for key, value in extra.items()}
    if weights_moved(trainer.model, snapshot) is False:
        extra["warning"] = not_moved(trainer.lr_scheduler, trainer.state.global_step)
        if trainer.accelerator.is_main_process:
            print(f"warning: {extra['warning']}", file=sys.stderr)
    save_outputs(
        save_model=trainer.save_model,
        tokenizer=tokenizer,
        output_dir=trainer.args.output_dir,
        method=method,
        objective=objective,
        setup=setup,
        config_objs=config_objs,
        extra=extra,
        trust_remote_code=trainer.args.trust_remote_code,
        is_main_process=trainer.accelerator.is_main_process,
    )


SELF_CORRECTION_PNG = "self_correction_curves.png"


def self_correction_card(last: dict[str, Any], k: int) -> dict[str, str]:
    """The model card's lines for the last logged step's self-correction metrics (``step_log``).

    >>> self_correction_card({"accuracy_r1": 0.5, "accuracy_r2": 0.75, "flip_rate_1_2": 0.25, "unparsed_r1": 0.0,
    ...                       "unparsed_r2": 0.0, "stop_round_mean": 1.5}, 2)["last accuracy per round"]
    '0.500 / 0.750'
    """
    if "accuracy_r1" not in last:
        return {}

    def row(name: str, n: int, first: int = 1) -> str:
        return " / ".join(f"{last.get(name.format(t=t, u=t + 1), float('nan')):.3f}" for t in range(first, first + n))

    return {
        "last accuracy per round": row("accuracy_r{t}", k),
        "last flip rate per round pair": row("flip_rate_{t}_{u}", k - 1),
        "last unparsed share per round": row("unparsed_r{t}", k),
        "last mean rounds run per episode": f"{last['stop_round_mean']:.2f} of {k}",
    }


def plot_self_correction(history: list[dict[str, Any]], k: int, path: str) -> str | None:
    """Accuracy per round, flip rate per round pair, unparsed share and mean rounds run over the
    training steps, one panel each, as a PNG at ``path``; None when the log holds none of them."""
    rows = [h for h in history if "accuracy_r1" in h]
    if not rows:
        return None
    import matplotlib  # heavy, and only this plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = [
        ("accuracy (grader's correct)", [(f"round {t}", f"accuracy_r{t}") for t in range(1, k + 1)]),
        ("flip rate (answer changed)", [(f"{t}->{t + 1}", f"flip_rate_{t}_{t + 1}") for t in range(1, k)]),
        ("unparsed share", [(f"round {t}", f"unparsed_r{t}") for t in range(1, k + 1)]),
        ("mean rounds run", [("episodes", "stop_round_mean")]),
    ]
    for ax, (title, series) in zip(axes, panels):
        for label, key in series:
            ax.plot(steps, [h[key] for h in rows], label=label, alpha=0.85)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    # A temporary name, renamed once written: a run killed mid-save leaves no truncated PNG.
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return path
