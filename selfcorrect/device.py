"""The machine a command runs on: one place that asks whether CUDA is there and which process this is."""

from __future__ import annotations

import os
import re
from datetime import timedelta

from selfcorrect.errors import UserError


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def env_flag(env: dict[str, str], key: str) -> bool:
    """Whether an accelerate launch flag (ACCELERATE_USE_*) is on in ``env``."""
    return env.get(key, "").lower() in ("1", "true", "yes")


def deepspeed_on_cpu(env: dict[str, str] | None = None) -> bool:
    """An ``accelerate launch`` with a DeepSpeed config on a machine without CUDA (cpu_zero2.yaml,
    cpu_zero3.yaml): DeepSpeed runs through its CPU accelerator over gloo."""
    env = dict(os.environ if env is None else env)
    return env_flag(env, "ACCELERATE_USE_DEEPSPEED") and not cuda_available()


def process_group_kwargs() -> dict:
    """What accelerate needs to build the right process group on this machine.

    Without CUDA, cpu_ddp.yaml's processes join a gloo group only when told ``cpu=True`` (else
    each thinks it is the only one). Under DeepSpeed, ``cpu=True`` makes accelerate skip DeepSpeed
    without a word, and ``cpu=False`` finds no backend: it hands None to DeepSpeed, whose CPU
    accelerator then forms the group while accelerate records one process and rank 0 on every
    rank (accelerate 1.15, state.py). Naming gloo keeps DeepSpeed and the real world size."""
    if deepspeed_on_cpu():
        return {"cpu": False, "backend": "gloo"}
    return {"cpu": not cuda_available()}


def process_state(timeout_s: float | None = None):
    """accelerate's process state, with the process group this machine and launch need.

    The first call in a process creates the group, so it is the one that must carry the timeout
    (``--ddp_timeout``): later calls, and TrainingArguments' own ``ddp_timeout``, find the group
    made and change nothing, and a group made without one waits NCCL's default 10 minutes."""
    from accelerate import PartialState

    kwargs = process_group_kwargs()
    if timeout_s is not None:
        kwargs["timeout"] = timedelta(seconds=timeout_s)
    return PartialState(**kwargs)


def check_device(device: str | None) -> None:
    """``--device`` names a device this machine has: cpu, or cuda / cuda:N where CUDA is there."""
    if device is None:
        return
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UserError(f"device must be cpu, cuda or cuda:N (got '{device}')")
    if device.startswith("cuda"):
        if not cuda_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu, or leave it unset)")
        if ":" in device and int(device.split(":")[1]) >= gpu_count():
            raise UserError(f"--device {device}: this machine has {gpu_count()} GPU(s)")


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def check_launch_matches_machine(env: dict[str, str] | None = None, gpus: int | None = None) -> None:
    """Fail in one line when the accelerate config asks for hardware this machine lacks.

    Runs in every process ``accelerate launch`` started (``parse_training`` calls it before the
    model loads); only the main process prints the line, but the launcher then reports each failed
    process in its own words."""
    env = dict(os.environ if env is None else env)
    gpus = gpu_count() if gpus is None else gpus
    local = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    # Several processes without a GPU are fine: cpu_ddp.yaml runs gloo, cpu_zero2/3.yaml run
    # DeepSpeed's CPU accelerator. FSDP on CPU would run as independent processes (accelerate falls
    # back to DistributedType.NO), and bf16/fp16 mixed precision is for GPUs.
    wants_gpu = env_flag(env, "ACCELERATE_USE_FSDP") or env.get("ACCELERATE_MIXED_PRECISION", "no") in ("bf16", "fp16")
    if gpus == 0 and wants_gpu and not env_flag(env, "ACCELERATE_USE_CPU"):
        raise UserError(
            "the accelerate config expects GPUs (FSDP or bf16/fp16 mixed precision) but CUDA is not available:"
            " use --config_file accelerate_configs/cpu.yaml (or cpu_ddp.yaml, cpu_zero2.yaml, cpu_zero3.yaml)"
        )
    if gpus > 0 and local > gpus and not env_flag(env, "ACCELERATE_USE_CPU"):
        raise UserError(
            f"the accelerate config starts {local} processes on this machine but it has {gpus} GPU(s): set num_processes"
        )
