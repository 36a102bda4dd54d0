"""Checkpoints that are complete or not used.

A checkpoint folder is usable when every file a resume reads is in place and whole: the weights
(the adapter, or the model trained without LoRA), the optimizer, the schedule and the trainer's
state. Each trainer marks a checkpoint complete once every file is written (``COMPLETE``, written
last, records each file's size): the TRL trainers through ``mark_complete_callback`` (run after the
Trainer's save), SCoRe and K-round RL by writing under a temporary name and renaming
the folder once it is complete (train/online_rl.py).

On resume (train/run.py) the newest usable checkpoint is taken; the others are named, with what is
wrong with each, in one line. A folder is refused when it is empty, lacks a file a resume reads,
or holds a truncated one: a file shorter or longer than the size its marker recorded, a
safetensors file whose header promises more bytes than it holds, a torch file whose zip directory
(at its end) is gone, a JSON file that does not parse. Checkpoints written before the marker
existed are judged by the files alone.
"""

from __future__ import annotations

import glob
import json
import os
import re
import struct
import zipfile
from typing import Any

COMPLETE = "checkpoint_complete.json"

# What a resume reads, per trainer family: (what it is, the file names that can hold it; ``*``
# matches within one path part). DeepSpeed keeps the optimizer (and for SCoRe/K-round RL the
# trainable weights) in a subfolder of ``*_optim_states.pt`` / ``*_model_states.pt`` files; FSDP in
# ``pytorch_model_fsdp*`` and ``optimizer*`` files or folders of shards.
_FSDP_WEIGHTS = ("pytorch_model_fsdp*.bin", "pytorch_model_fsdp_*/*")
_SHARDED_OPTIMIZER = ("*/*optim_states.pt", "optimizer_*/*")
TRL_CHECKPOINT = (
    (
        "weights",
        ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json", *_FSDP_WEIGHTS),
    ),
    ("optimizer", ("optimizer.pt", "optimizer.bin", *_SHARDED_OPTIMIZER)),
    ("scheduler", ("scheduler.pt",)),
    ("trainer state", ("trainer_state.json",)),
)
ONLINE_RL_CHECKPOINT = (
    ("weights", ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "*/*model_states.pt")),
    ("optimizer", ("optimizer.bin", *_SHARDED_OPTIMIZER)),
    ("scheduler", ("custom_checkpoint_0.pkl",)),  # the schedule, registered with accelerate for checkpointing
    ("trainer state", ("online_rl_state.json",)),
)


def checkpoint_folders(output_dir: str) -> list[str]:
    """The checkpoint-N folders of output_dir, newest (highest N) first."""
    found = [d for d in glob.glob(os.path.join(output_dir, "checkpoint-*")) if re.search(r"checkpoint-\d+$", d)]
    return sorted(found, key=lambda d: int(d.rsplit("-", 1)[1]), reverse=True)


def _files(folder: str) -> dict[str, int]:
    """Every file under ``folder`` (relative path -> size), the marker left out."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel != COMPLETE:
                out[rel] = os.path.getsize(path)
    return out


def mark_complete(folder: str) -> None:
    """Record every file of a checkpoint and its size, last (written whole: temporary file, rename)."""
    files = _files(folder)
    tmp = os.path.join(folder, f".{COMPLETE}.tmp")
    with open(tmp, "w") as f:
        json.dump({"files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, COMPLETE))


def _damage(path: str) -> str | None:
    """Why a file cannot be read back whole, or None (a cheap check: headers and directories, not
    every byte)."""
    size = os.path.getsize(path)
    if size == 0:
        return "empty"
    if path.endswith(".json"):
        try:
            with open(path) as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError):
            return "not valid JSON (truncated?)"
        return None
    with open(path, "rb") as f:
        head = f.read(8)
        if path.endswith(".safetensors"):
            if len(head) < 8:
                return "truncated"
            (n,) = struct.unpack("<Q", head)
            try:
                header = json.loads(f.read(n))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                return "truncated (its header does not parse)"
            if size < 8 + n + end:
                return f"truncated ({size} of {8 + n + end} bytes)"
            return None
    if head.startswith(b"PK"):  # torch.save's zip format: its directory is at the end of the file
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError):
            return "truncated (its zip directory is missing)"
    return None


def checkpoint_problem(folder: str, layout: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    """What makes ``folder`` unusable for a resume (a few words), or None when it is complete."""
    if not os.path.isdir(folder):
        return "not a folder"
    files = _files(folder)
    if not files:
        return "empty folder"
    marker = os.path.join(folder, COMPLETE)
    if os.path.exists(marker):
        try:
            with open(marker) as f:
                recorded: dict[str, Any] = json.load(f)["files"]
        except (ValueError, KeyError, TypeError):
            return f"{COMPLETE} does not parse"
        for rel, size in sorted(recorded.items()):
            if rel not in files:
                return f"{rel} missing"
            if files[rel] != size:
                return f"{rel} truncated ({files[rel]} of {size} bytes)"
    for what, names in layout:
        present = [rel for name in names for rel in sorted(files) if _matches(rel, name)]
        if not present:
            return f"no {what} file ({' or '.join(names)})"
        for rel in present:
            if (why := _damage(os.path.join(folder, rel))) is not None:
                return f"{rel} {why}"
    return None


def _matches(rel: str, name: str) -> bool:
    if "*" not in name:
        return rel == name
    return re.fullmatch(re.escape(name).replace(r"\*", "[^/]*"), rel) is not None


def usable_checkpoint(output_dir: str, layout) -> tuple[str | None, list[str]]:
    """The newest usable checkpoint of output_dir (or None) and the newer ones skipped, each as
    'checkpoint-N (what is wrong)'."""
    skipped = []
    for folder in checkpoint_folders(output_dir):
        problem = checkpoint_problem(folder, layout)
        if problem is None:
            return folder, skipped
        skipped.append(f"{os.path.basename(folder)} ({problem})")
    return None, skipped


def mark_complete_callback():
    """A transformers TrainerCallback that marks each checkpoint complete once the Trainer has saved it."""
    from accelerate import PartialState
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            # on_save runs on every process after the Trainer wrote the checkpoint (and rotated old
            # ones); each process writes files of its own (its random state, its DeepSpeed shards),
            # so all of them finish before the main process records the folder.
            PartialState().wait_for_everyone()
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if state.is_world_process_zero and os.path.isdir(folder):
                mark_complete(folder)
            return control

    return MarkComplete()
