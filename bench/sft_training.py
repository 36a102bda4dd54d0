"""LoRA SFT throughput: plain TRL (padded batches, gradient checkpointing) vs padding-free batches
without gradient checkpointing, and TRL's best-fit packing, on the same data in one process.

    python bench/sft_training.py                       # CPU, small random model, < 1 min
    python bench/sft_training.py --shape qwen2.5-1.5b  # GPU, random-init Qwen2.5-1.5B shape, bf16

The data are pre-tokenised conversations as train/sft.py builds them (input_ids + assistant_masks,
loss on the second half) with lengths spread like self-correction traces (a quarter of max_length
to max_length, uniform). tok/s counts real tokens (no padding) over the time of ``trainer.train()``
for one epoch; the median of --repeats runs. LoRA dropout is 0 so padded and padding-free runs
take exactly the same steps: ``loss_max_abs_diff`` is the largest per-step loss gap between them
(packing changes which rows share a step, so its curve is compared by mean loss only). On CUDA
the JSON adds peak memory and MFU counted as 4 x params FLOPs per token (LoRA: forward plus
activation gradients, no weight gradients) against --peak_tflops. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from multi_round_generation import SHAPES, build  # noqa: E402


def tokenizer():
    """A stand-in tokenizer: the trainer only needs the pad token (the data are already ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def dataset(n: int, max_length: int, vocab: int):
    from datasets import Dataset

    rng = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        length = int(torch.randint(max_length // 4, max_length + 1, (1,), generator=rng))
        ids = torch.randint(2, vocab, (length,), generator=rng).tolist()
        rows.append({"input_ids": ids, "assistant_masks": [0] * (length // 2) + [1] * (length - length // 2)})
    return Dataset.from_list(rows)


def train_once(shape, device, dtype, data, variant: str, batch: int, max_length: int, liger: bool, attn: str) -> dict:
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model = build(shape, device, dtype, attn).train()
    cuda = device == "cuda"
    opts = {
        "naive": dict(gradient_checkpointing=True, max_length=max_length),
        "padding_free": dict(gradient_checkpointing=False, padding_free=True, max_length=None),
        "packed": dict(gradient_checkpointing=False, packing=True, packing_strategy="bfd", max_length=max_length),
    }[variant]
    if liger and variant != "naive":
        opts["use_liger_kernel"] = True
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            num_train_epochs=1,
            learning_rate=1e-4,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            seed=0,
            disable_tqdm=True,
            use_cpu=not cuda,
            bf16=cuda,
            dataloader_num_workers=0,
            **opts,
        )
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tokenizer(), peft_config=lora)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.train()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    tokens = sum(len(ids) for ids in data["input_ids"])
    return {
        "tok_s": tokens / seconds,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max_length", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--liger", action="store_true", help="Add use_liger_kernel to the fast runs (needs liger-kernel).")
    p.add_argument("--attn", default="sdpa", help="Attention kernel: sdpa, eager, flash_attention_2 (needs flash-attn).")
    p.add_argument("--peak_tflops", type=float, default=989.0, help="Dense bf16 peak for MFU (H100 SXM: 989).")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    max_length = a.max_length or (1024 if cuda else 256)
    n = a.rows or (256 if cuda else 32)
    if a.liger and importlib.util.find_spec("liger_kernel") is None:
        raise SystemExit("--liger needs the liger-kernel package")
    data = dataset(n, max_length, SHAPES[a.shape]["vocab_size"])
    runs: dict[str, list[dict]] = {"naive": [], "padding_free": [], "packed": []}
    for _ in range(a.repeats):
        for variant in runs:
            runs[variant].append(train_once(a.shape, device, dtype, data, variant, a.batch, max_length, a.liger, a.attn))
    speed = {k: statistics.median(r["tok_s"] for r in v) for k, v in runs.items()}
    naive_l, free_l, packed_l = (runs[k][0]["losses"] for k in ("naive", "padding_free", "packed"))
    result = {
        "name": f"sft_training/{a.shape}",
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "dtype": str(dtype).replace("torch.", ""),
        "rows": n,
        "batch": a.batch,
        "max_length": max_length,
        "liger": a.liger,
        "attn": a.attn,
        "naive_tok_s": round(speed["naive"], 1),
        "fast_tok_s": round(speed["padding_free"], 1),
        "packed_tok_s": round(speed["packed"], 1),
        "speedup": round(speed["padding_free"] / speed["naive"], 2),
        "packed_speedup": round(speed["packed"] / speed["naive"], 2),
        "steps": {"naive": len(naive_l), "padding_free": len(free_l), "packed": len(packed_l)},
        "loss_max_abs_diff": round(max(abs(x - y) for x, y in zip(naive_l, free_l)), 6),
        "mean_loss": {"naive": round(statistics.mean(naive_l), 4), "packed": round(statistics.mean(packed_l), 4)},
        "bound_ratio": None,
    }
    if cuda:
        params = runs["naive"][0]["params"]
        result["peak_gb"] = {k: round(v[0]["peak_gb"], 2) for k, v in runs.items()}
        result["mfu"] = {k: round(4 * params * s / (a.peak_tflops * 1e12), 4) for k, s in speed.items()}
        result["bound_ratio"] = result["mfu"]["padding_free"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
