"""The five training entry points under accelerate launch on the tiny model, with data made by data_gen."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import LAUNCH_ENV, launch, run_command
from safetensors.torch import load_file

ENV = {**os.environ, **LAUNCH_ENV}


# Every test here trains through a real entry point (most under accelerate launch): end to end.
pytestmark = pytest.mark.slow


def in_process(script, config, args):
    """The same entry point in this process (what ``accelerate launch`` with cpu.yaml runs in its one
    process); test_sft and the DDP test keep the real launcher."""
    assert config == "cpu"
    return run_command(f"train.{script}", args)


@pytest.fixture(scope="module")
def data(tiny_model_dir, bbq_dir, tmp_path_factory):
    """BBQ traces (SFT/DPO rows) and toy-task traces (RL rows with rewards that vary) from data_gen."""
    root = tmp_path_factory.mktemp("train-data")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_gen",
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            bbq_dir,
            "--limit",
            "16",
            "--rounds",
            "2",
            "--max_new_tokens",
            "8",
            "--output_dir",
            str(root / "bbq"),
            "--sft_sources",
            "rationalised",
            "--dpo_sources",
            "rationalised",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert p.returncode == 0, p.stderr
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something number {i}."}) + "\n" for i in range(8)))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_gen",
            "--model_name_or_path",
            tiny_model_dir,
            "--task",
            "toy_task:EvenLengthTask",
            "--dataset_path",
            str(prompts),
            "--prompt_set",
            "intrinsic",
            "--rounds",
            "2",
            "--max_new_tokens",
            "8",
            "--output_dir",
            str(root / "toy"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert p.returncode == 0, p.stderr
    return root


def lora_b_changed(out_dir):
    """LoRA's B matrices start at exactly zero: any non-zero entry means training moved them."""
    weights = load_file(os.path.join(out_dir, "adapter_model.safetensors"))
    bs = [t for k, t in weights.items() if "lora_B" in k]
    assert bs, "no LoRA weights saved"
    return all(float(t.abs().sum()) > 0 for t in bs)


def losses(out_dir):
    ckpts = sorted((d for d in os.listdir(out_dir) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1]))
    with open(os.path.join(out_dir, ckpts[-1], "trainer_state.json")) as f:
        return [h for h in json.load(f)["log_history"] if "loss" in h]


def check_adapter_loads(tiny_model_dir, out_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out_dir)
    assert any("lora" in n for n, _ in model.named_parameters())
    card = open(os.path.join(out_dir, "README.md")).read()
    assert tiny_model_dir in card and "python -m eval" in card
    assert json.load(open(os.path.join(out_dir, "selfcorrect_config.json")))["model_name_or_path"] == tiny_model_dir


COMMON = ["--max_steps", "3", "--learning_rate", "5e-3", "--logging_steps", "1", "--report_to", "none", "--save_steps", "3"]


def test_sft(tiny_model_dir, data, tmp_path):
    out = str(tmp_path / "sft")
    p = launch(
        "cpu",
        "train/sft.py",
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            str(data / "bbq" / "sft.jsonl"),
            "--output_dir",
            out,
            "--per_device_train_batch_size",
            "4",
            *COMMON,
        ],
    )
    assert p.returncode == 0, p.stderr[-3000:]
    hist = losses(out)
    assert len(hist) == 3 and all(h["loss"] == h["loss"] and h["loss"] < 100 for h in hist)
    assert lora_b_changed(out)
    check_adapter_loads(tiny_model_dir, out)


def test_sft_two_processes_ddp(tiny_model_dir, data, tmp_path):
    out = str(tmp_path / "sft_ddp")
    p = launch(
        "cpu_ddp",
        "train/sft.py",
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            str(data / "bbq" / "sft.jsonl"),
            "--output_dir",
            out,
            "--per_device_train_batch_size",
            "2",
            *COMMON,
        ],
    )
    assert p.returncode == 0, p.stderr[-3000:]
    with open(os.path.join(out, "checkpoint-3", "trainer_state.json")) as f:
        state = json.load(f)
    # 16 rows; 2 processes x 2 rows per step = 4 rows a step, so 3 steps are 0.75 epoch (one process: 0.375).
    assert state["global_step"] == 3 and state["train_batch_size"] == 2
    assert state["log_history"][-1]["epoch"] == pytest.approx(0.75)
    assert lora_b_changed(out)


def test_dpo(tiny_model_dir, data, tmp_path):
    out = str(tmp_path / "dpo")
    p = in_process(
        "dpo",
        "cpu",
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            str(data / "bbq" / "dpo.jsonl"),
            "--output_dir",
            out,
            "--per_device_train_batch_size",
            "4",
            *COMMON,
        ],
    )
    assert p.returncode == 0, p.stderr[-3000:]
    hist = losses(out)
    assert len(hist) == 3 and all(0 < h["loss"] < 10 for h in hist)
    assert lora_b_changed(out)
    check_adapter_loads(tiny_model_dir, out)


@pytest.mark.parametrize(
    "mode",
    [
        ["--alpha", "1.0", "--abandon_penalty", "0.5"],  # on-policy first attempts
        ["--generation_backend", "trl", "--first_attempt", "trace"],
    ],
)
def test_grpo(tiny_model_dir, data, tmp_path, mode):
    out = str(tmp_path / "grpo")
    p = in_process(
        "grpo",
        "cpu",
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            str(data / "toy" / "rl.jsonl"),
            "--task",
            "toy_task:EvenLengthTask",
            "--prompt_set",
            "intrinsic",
            "--output_dir",
            out,
            "--per_device_train_batch_size",
            "8",
            "--num_generations",
            "8",
            "--max_completion_length",
            "8",
            *mode,
            *COMMON,
        ],
    )
    assert p.returncode == 0, p.stderr[-3000:]
    with open(os.path.join(out, "checkpoint-3", "trainer_state.json")) as f:
        hist = [h for h in json.load(f)["log_history"] if "reward" in h]
    assert len(hist) == 3 and all(abs(h["reward"]) < 100 and h["reward"] == h["reward"] for h in hist)
    assert any(h["reward_std"] > 0 for h in hist)  # the toy reward varied, so there was a signal
    assert lora_b_changed(out)
    check_adapter_loads(tiny_model_dir, out)


def toy_rl_args(tiny_model_dir, data):
    """SCoRe / K-round RL on the toy task (its reward, even response length, varies between samples):
    4 steps of 4 prompts x 4 episodes, 8 new tokens (later flags override these)."""
    return [
        *("--model_name_or_path", tiny_model_dir, "--dataset_path", str(data / "toy" / "rl.jsonl")),
        *("--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--max_steps", "4"),
        *("--per_device_prompts", "4", "--num_generations", "4", "--max_new_tokens", "8", "--learning_rate", "5e-3"),
    ]


def test_score(tiny_model_dir, data, tmp_path):
    out = str(tmp_path / "score")
    p = in_process("score", "cpu", [*toy_rl_args(tiny_model_dir, data), "--output_dir", out, "--stage1_steps", "2"])
    assert p.returncode == 0, p.stderr[-3000:]
    log = [json.loads(line) for line in open(os.path.join(out, "score_log.jsonl"))]
    assert [h["stage"] for h in log] == [1, 1, 2, 2]
    assert {"reward_r1", "reward_r2", "kl_r1", "kl_r2", "pg_loss_r1", "pg_loss_r2"} <= set(log[0])
    assert all(abs(h["loss"]) < 1e4 for h in log)
    assert lora_b_changed(out)
    check_adapter_loads(tiny_model_dir, out)


def test_score_resume_reproduces_the_uninterrupted_run(tiny_model_dir, data, tmp_path):
    args = [*toy_rl_args(tiny_model_dir, data), "--stage1_steps", "2", "--save_steps", "2"]
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    p = in_process("score", "cpu", [*args, "--output_dir", full])
    assert p.returncode == 0, p.stderr[-3000:]
    p = in_process("score", "cpu", [*args, "--output_dir", resumed, "--resume_from_checkpoint", f"{full}/checkpoint-2"])
    assert p.returncode == 0, p.stderr[-3000:]
    log_full = [json.loads(line) for line in open(os.path.join(full, "score_log.jsonl"))]
    log_resumed = [json.loads(line) for line in open(os.path.join(resumed, "score_log.jsonl"))]
    assert [h["step"] for h in log_resumed] == [3, 4]
    for a, b in zip(log_full[2:], log_resumed):
        assert a["reward_r1"] == b["reward_r1"] and a["reward_r2"] == b["reward_r2"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    wa, wb = (
        load_file(os.path.join(full, "adapter_model.safetensors")),
        load_file(os.path.join(resumed, "adapter_model.safetensors")),
    )
    assert wa.keys() == wb.keys() and all(float((wa[k] - wb[k]).abs().max()) < 1e-5 for k in wa)


def test_kround_two_processes_keep_the_learning_rate_schedule(tiny_model_dir, data, tmp_path):
    """max_steps counts optimizer steps whatever the number of processes: the linear decay must not
    run num_processes times faster (accelerate's prepared scheduler does that, and a 2-process run
    trained its second half at learning rate 0)."""
    out = str(tmp_path / "kround_ddp")
    args = [*toy_rl_args(tiny_model_dir, data), "--output_dir", out, "--rounds", "2", "--per_device_prompts", "1"]
    p = launch("cpu_ddp", "train/kround.py", [*args, "--learning_rate", "4e-3"])
    assert p.returncode == 0, p.stderr[-3000:]
    log = [json.loads(line) for line in open(os.path.join(out, "kround_log.jsonl"))]
    # The rate step s (1-based) used: 4e-3 * (4 - s + 1) / 4.
    assert [h["lr"] for h in log] == pytest.approx([4e-3, 3e-3, 2e-3, 1e-3])
    assert lora_b_changed(out)
