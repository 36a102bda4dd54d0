"""train/sft.py's modes in-process on the tiny model: padding-free batches (same losses as padded)
and QLoRA (4-bit base through bitsandbytes, which also runs on the CPU)."""

import json
import os
import random

import pytest
from test_train import check_adapter_loads, lora_b_changed, losses

from train.sft import main as sft_main


@pytest.fixture(scope="module")
def sft_rows(tmp_path_factory):
    """Conversations of very different lengths, so padded batches are mostly padding."""
    rng = random.Random(0)
    words = "the answer is A B C because nobody knows who was late review your previous reply".split()
    say = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    path = tmp_path_factory.mktemp("sft-pf") / "sft.jsonl"
    with open(path, "w") as f:
        for _ in range(16):
            n = rng.choice([3, 10, 40, 120])
            msgs = [
                {"role": "user", "content": say(n)},
                {"role": "assistant", "content": say(n // 2 + 1)},
                {"role": "user", "content": "Review your answer."},
                {"role": "assistant", "content": say(5)},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return str(path)


def test_padding_free_matches_padded_losses(tiny_model_dir, sft_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    common = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        sft_rows,
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "3",
        "--learning_rate",
        "5e-3",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--save_steps",
        "3",
        "--max_length",
        "96",
        "--disable_tqdm",
        "true",
        "--lora_dropout",
        "0",
        "--train_on",
        "all_assistant",
    ]  # hand-made rows carry no per-turn flags
    runs = {}
    for mode in ("padded", "padding_free"):
        out = str(tmp_path / mode)
        sft_main(common + ["--output_dir", out, "--padding_free", str(mode == "padding_free").lower()])
        runs[mode] = [h["loss"] for h in losses(out)]
        assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    assert len(runs["padded"]) == 3
    # Same rows per step, same tokens, same loss up to float summation order (LoRA dropout off: its
    # random masks depend on the tensor layout); training moved the
    # loss, so step 2 and 3 agreeing also checks the updates were the same.
    assert runs["padding_free"] == pytest.approx(runs["padded"], abs=1e-4)
    assert runs["padded"][0] != runs["padded"][2]


def test_qlora_trains_an_adapter_on_a_4bit_base(tiny_model_dir, sft_rows, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    import train.sft as sft

    monkeypatch.setenv("WANDB_MODE", "disabled")
    seen = {}
    load = sft.load_policy

    def spy(*a, **kw):
        model, peft_config = load(*a, **kw)
        seen["linear"] = type(model.model.layers[0].self_attn.q_proj)
        return model, peft_config

    monkeypatch.setattr(sft, "load_policy", spy)
    out = str(tmp_path / "qlora")
    sft.main(
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            sft_rows,
            "--output_dir",
            out,
            "--load_in_4bit",
            "true",
            "--per_device_train_batch_size",
            "4",
            "--max_steps",
            "3",
            "--learning_rate",
            "5e-3",
            "--logging_steps",
            "1",
            "--report_to",
            "none",
            "--save_steps",
            "3",
            "--max_length",
            "96",
            "--disable_tqdm",
            "true",
            "--train_on",
            "all_assistant",
        ]
    )
    assert seen["linear"] is bnb.nn.Linear4bit
    hist = [h["loss"] for h in losses(out)]
    assert len(hist) == 3 and all(0 < x < 20 for x in hist)
    assert lora_b_changed(out)
    check_adapter_loads(tiny_model_dir, out)  # the adapter applies to the full-precision base
