"""How an on-policy step runs on the processes it was launched on: one process or DDP, or DeepSpeed
ZeRO (train/online_rl.py holds the loop, this file the differences).

The differences, each in one method of ``TrainStrategy``:
- the accumulation boundary: DDP all-reduces at every backward outside ``no_sync``; a DeepSpeed engine
  reduces at the boundary it is told about;
- the backward and the optimizer step: the engine's own (accelerate's backward would also step the
  engine), or AdamW with clipping;
- the weights the sampler decodes with: under ZeRO-3 each rank holds shards, so they are gathered;
- what a checkpoint holds: the engine's trainable shards, or (LoRA under DDP) the optimizer, schedule
  and RNG states beside the adapter file, never the frozen base.

OpenRLHF's DeepspeedStrategy plays the same part.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from selfcorrect.device import env_flag
from selfcorrect.errors import UserError


def check_not_fsdp(method: str, env: dict[str, str] | None = None) -> None:
    """The on-policy loop runs in one process, under DDP or under DeepSpeed ZeRO; refuse FSDP in one line.

    Under FSDP the sampler would decode from sharded weights with a different number of steps on
    each process, and nothing here gathers them for sampling, as the ZeRO-3 path does.

    >>> check_not_fsdp("kround", {"ACCELERATE_USE_FSDP": "true"})
    Traceback (most recent call last):
    ...
    selfcorrect.errors.UserError: kround runs in one process, under DDP or under DeepSpeed, not under FSDP: launch with accelerate_configs/ddp.yaml, zero2.yaml or zero3.yaml (GPUs), or cpu_ddp.yaml (CPU)
    """
    if env_flag(dict(os.environ if env is None else env), "ACCELERATE_USE_FSDP"):
        raise UserError(
            f"{method} runs in one process, under DDP or under DeepSpeed, not under FSDP: launch with"
            " accelerate_configs/ddp.yaml, zero2.yaml or zero3.yaml (GPUs), or cpu_ddp.yaml (CPU)"
        )


def fill_deepspeed_config(ds: dict[str, Any], micro_batch_size: int, num_processes: int, max_grad_norm: float) -> None:
    """Fill the "auto" values of a DeepSpeed config for this loop, which takes its own steps.

    accelerate fills "auto" from a prepared dataloader, and this loop has none. Each step runs a
    varying number of micro-batches and marks the last as the accumulation boundary itself, so
    DeepSpeed's own accumulation count is 1; its clipping is the loop's ``max_grad_norm``.

    >>> ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
    ...       "train_batch_size": "auto", "gradient_clipping": "auto"}
    >>> fill_deepspeed_config(ds, 4, 2, 1.0); ds
    {'train_micro_batch_size_per_gpu': 4, 'gradient_accumulation_steps': 1, 'train_batch_size': 8, 'gradient_clipping': 1.0}
    >>> fill_deepspeed_config({"gradient_clipping": 0.5}, 4, 2, 1.0)
    Traceback (most recent call last):
    ...
    selfcorrect.errors.UserError: the DeepSpeed config sets gradient_clipping 0.5 but max_grad_norm is 1.0: set one of them so they agree, or leave gradient_clipping "auto"
    """
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch_size * num_processes,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in wanted.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif key == "gradient_clipping" and float(ds[key]) != float(value):
            raise UserError(
                f"the DeepSpeed config sets gradient_clipping {ds[key]} but max_grad_norm is {value}: set one of them"
                ' so they agree, or leave gradient_clipping "auto"'
            )
        elif key == "gradient_accumulation_steps" and int(ds[key]) != 1:
            raise UserError(
                f"the DeepSpeed config sets gradient_accumulation_steps {ds[key]}: the on-policy trainers take one"
                ' optimizer step per training step, so leave it "auto" (or 1)'
            )


class TrainStrategy:
    """The DDP/DeepSpeed difference of one step; built after ``accelerator.prepare``.

    ``model`` is the prepared module (a DDP wrapper or a DeepSpeed engine), ``policy`` the unwrapped
    one; ``lora`` says the trainable weights are an adapter whose file a checkpoint keeps."""

    def __init__(self, accelerator, model, optimizer, params, *, lora: bool, max_grad_norm: float, gradient_checkpointing: bool):
        from accelerate import DistributedType

        self.accelerator, self.model, self.optimizer, self.params = accelerator, model, optimizer, params
        self.lora, self.max_grad_norm, self.gradient_checkpointing = lora, max_grad_norm, gradient_checkpointing
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        self.zero3 = self.deepspeed and accelerator.state.deepspeed_plugin.zero_stage == 3
        if lora and not self.deepspeed:
            # With LoRA, save_state would write (and load_state read) the whole model's state dict, the
            # frozen base too (about 15 GB for a 7B model): a checkpoint keeps the adapter instead
            # (save_model_all_ranks), and accelerate saves the optimizer, the schedule and the RNG states.
            accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
            accelerator.register_load_state_pre_hook(lambda models, folder: models.clear())

    def micro_batch(self, i: int, n: int):
        """The context of micro-batch ``i`` of ``n``: gradients are reduced across processes once, at
        the last one (the engine is told the boundary; DDP skips its all-reduce under no_sync)."""
        if self.deepspeed:
            self.model.set_gradient_accumulation_boundary(i == n - 1)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if i == n - 1 else self.accelerator.no_sync(self.model)

    def backward(self, loss) -> None:
        if self.deepspeed:
            self.model.backward(loss)  # accelerate's backward would also step the engine
        else:
            self.accelerator.backward(loss)

    def optimizer_step(self) -> None:
        """Clip to max_grad_norm, step, zero the gradients."""
        if self.deepspeed:
            self.model.step()  # clips to gradient_clipping (= max_grad_norm), steps, zeroes the gradients
            return
        if self.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()

    def weights_for_sampling(self):
        """Under ZeRO-3 every rank holds a shard of each weight, and a forward pass gathers them layer
        by layer in collectives: ranks that decode different numbers of tokens would pair different
        collectives and hang. So sampling runs on the gathered weights with the hooks removed
        (TRL's ``unwrap_model_for_generation``, as its GRPO trainer does)."""
        if not self.zero3:
            return contextlib.nullcontext()
        from trl.models.utils import unwrap_model_for_generation

        kwargs = {"use_reentrant": False} if self.gradient_checkpointing else None
        return unwrap_model_for_generation(self.model, self.accelerator, gradient_checkpointing_kwargs=kwargs)

    def save_state(self, folder: str) -> None:
        """The optimizer, schedule and RNG states (under DeepSpeed: the engine's trainable shards and
        optimizer shards, the frozen base left out)."""
        self.accelerator.save_state(folder, **({"exclude_frozen_parameters": True} if self.deepspeed else {}))

    def load_state(self, folder: str, policy) -> None:
        """What ``save_state`` wrote, and with LoRA under DDP the adapter file saved beside it."""
        if self.deepspeed:  # the engine's checkpoint holds the trainable weights only
            self.accelerator.load_state(folder, load_module_strict=False)
            return
        self.accelerator.load_state(folder)
        if self.lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(policy, load_file(os.path.join(folder, "adapter_model.safetensors")))
