"""The machine a command runs on: one place that asks whether CUDA is there and which process this is."""

from __future__ import annotations

import os
import re

from selfcorrect.errors import UserError


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def process_state():
    """accelerate's process state; on a machine without CUDA the processes of cpu_ddp.yaml join a
    gloo group (PartialState() alone would leave each of them thinking it is the only one)."""
    from accelerate import PartialState

    return PartialState(cpu=not cuda_available())


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
    on = lambda key: env.get(key, "").lower() in ("1", "true", "yes")  # noqa: E731
    local = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    # Several processes without a GPU are fine (cpu_ddp.yaml runs gloo); these are GPU-only.
    wants_gpu = (
        on("ACCELERATE_USE_DEEPSPEED")
        or on("ACCELERATE_USE_FSDP")
        or (env.get("ACCELERATE_MIXED_PRECISION", "no") in ("bf16", "fp16"))
    )
    if gpus == 0 and wants_gpu and not on("ACCELERATE_USE_CPU"):
        raise UserError(
            "the accelerate config expects GPUs (DeepSpeed, FSDP or bf16/fp16 mixed precision) but CUDA is "
            "not available: use --config_file accelerate_configs/cpu.yaml (or cpu_ddp.yaml)"
        )
    if gpus > 0 and local > gpus and not on("ACCELERATE_USE_CPU"):
        raise UserError(
            f"the accelerate config starts {local} processes on this machine but it has {gpus} GPU(s): set num_processes"
        )
