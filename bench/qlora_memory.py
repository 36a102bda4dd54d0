"""Peak memory of LoRA SFT on a bf16 base vs QLoRA (4-bit NF4 base), through train/sft.py's own
model loading (selfcorrect.modeling.load_policy) and TRL's SFTTrainer, one process.

    python bench/qlora_memory.py                                  # CPU, small shape: runs the path, no memory figure
    python bench/qlora_memory.py --shape qwen2.5-7b --seq 2048    # GPU: the issue's 24 GB check

A random-init model of the shape is saved once (bf16 safetensors, in --workdir) and loaded as a
user's checkpoint would be. Each variant trains --steps steps of batch 1 at --seq tokens (LoRA r16
on all linear layers, gradient checkpointing on, as the 7B recipes) and reports
torch.cuda.max_memory_allocated / max_memory_reserved. The last line is one JSON object;
"fits_24gb" compares QLoRA's reserved peak with 24 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from multi_round_generation import SHAPES, build  # noqa: E402
from sft_training import tokenizer  # noqa: E402
from trl import ModelConfig  # noqa: E402

from selfcorrect.modeling import load_policy  # noqa: E402
from train.run import TRAIN_DEFAULTS  # noqa: E402


def save_random_model(shape: str, folder: str) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(shape, device, torch.bfloat16)  # random init is fast on the GPU; weights are saved to disk
    model.save_pretrained(folder, safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def train_peak(folder: str, four_bit: bool, seq: int, steps: int, vocab: int) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    rng = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(2, vocab, (seq,), generator=rng).tolist(),
            "assistant_masks": [0] * (seq // 2) + [1] * (seq - seq // 2),
        }
        for _ in range(steps)
    ]
    args = ModelConfig(
        **{**TRAIN_DEFAULTS, "model_name_or_path": folder, "load_in_4bit": four_bit, "dtype": "bfloat16" if cuda else "float32"}
    )
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, lora = load_policy(args)
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=1,
            max_steps=steps,
            learning_rate=1e-4,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            gradient_checkpointing=True,
            max_length=seq,
            bf16=cuda,
            use_cpu=not cuda,
        )
        trainer = SFTTrainer(
            model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer(), peft_config=lora
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {"losses_finite": all(x == x and abs(x) < 1e4 for x in losses), "steps": len(losses)}
    if cuda:
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    del trainer, model
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--workdir", default=None, help="Where the random model is saved (default: a temporary folder).")
    p.add_argument("--skip_bf16", action="store_true", help="Measure QLoRA only.")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    seq = a.seq or (2048 if cuda else 256)
    work = a.workdir or tempfile.mkdtemp(prefix="qlora-bench-")
    folder = os.path.join(work, a.shape)
    try:
        if not os.path.isfile(os.path.join(folder, "config.json")):
            save_random_model(a.shape, folder)
        vocab = SHAPES[a.shape]["vocab_size"]
        qlora = train_peak(folder, True, seq, a.steps, vocab)
        bf16 = None if a.skip_bf16 else train_peak(folder, False, seq, a.steps, vocab)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "name": f"qlora_memory/{a.shape}",
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "seq": seq,
        "batch": 1,
        "qlora": qlora,
        "bf16_lora": bf16,
    }
    if cuda:
        result["fits_24gb"] = qlora["peak_reserved_gib"] <= 24
        if bf16:
            result["memory_ratio"] = round(bf16["peak_reserved_gib"] / qlora["peak_reserved_gib"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
