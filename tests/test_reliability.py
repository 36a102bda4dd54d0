"""Determinism, training resume, and secrets never written or printed."""

import glob
import json
import os
import subprocess
import sys

from conftest import ROOT

SECRET = "sk-SENTINEL-do-not-print-4242"
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
    "WANDB_API_KEY": SECRET,
    "HF_TOKEN": SECRET,
    "OPENAI_API_KEY": SECRET,
}


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=ENV, **kw)


def _traces(path):
    return [{k: v for k, v in json.loads(line).items() if k != "model"} for line in open(path)]


def _main(module: str, args: list[str]) -> None:
    """An entry point in this process, as its command line runs it (exit code 0 expected)."""
    import importlib

    from selfcorrect.errors import run_cli

    try:
        run_cli(importlib.import_module(module).main, args)
    except SystemExit as e:
        assert not e.code, f"{module} exited with {e.code}"


def _data_gen(tiny_model_dir, bbq_dir, out):
    _main("data_gen.__main__", ["--model_name_or_path", tiny_model_dir, "--dataset_path", bbq_dir, "--limit", "8", "--rounds", "2",
                                "--max_new_tokens", "6", "--output_dir", str(out), "--sft_sources", "rationalised"])  # fmt: skip


def _sft_args(tiny_model_dir, data, out, steps):
    return ["--model_name_or_path", tiny_model_dir, "--dataset_path", str(data), "--output_dir", str(out), "--max_steps", str(steps),
            "--learning_rate", "1e-3", "--logging_steps", "1", "--report_to", "none", "--per_device_train_batch_size", "2",
            "--seed", "7", "--disable_tqdm", "true"]  # fmt: skip


def test_greedy_traces_and_sft_loss_are_deterministic_and_secrets_stay_out(
    tiny_model_dir, bbq_dir, tmp_path, capsys, monkeypatch
):
    for key in ("WANDB_API_KEY", "HF_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.setenv(key, SECRET)
    outs = []
    for i in range(2):
        _data_gen(tiny_model_dir, bbq_dir, tmp_path / f"dg{i}")
        outs.append(tmp_path / f"dg{i}")
    assert _traces(outs[0] / "traces.jsonl") == _traces(outs[1] / "traces.jsonl")
    losses = []
    for i in range(2):
        out = tmp_path / f"sft{i}"
        _main("train.sft", _sft_args(tiny_model_dir, outs[0] / "sft.jsonl", out, 3))
        state = json.load(open(glob.glob(str(out / "checkpoint-*" / "trainer_state.json"))[0]))
        losses.append([h["loss"] for h in state["log_history"] if "loss" in h])
    assert losses[0] == losses[1] and len(losses[0]) == 3
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    for path in glob.glob(str(tmp_path / "**" / "*"), recursive=True):
        if os.path.isfile(path) and not path.endswith((".safetensors", ".pt", ".bin", ".pth")):
            with open(path, "rb") as f:
                assert SECRET.encode() not in f.read(), path


def test_sft_resume_from_checkpoint(tiny_model_dir, bbq_dir, tmp_path):
    import shutil

    _data_gen(tiny_model_dir, bbq_dir, tmp_path / "dg")
    args = _sft_args(tiny_model_dir, tmp_path / "dg" / "sft.jsonl", tmp_path / "sft", 4) + ["--save_steps", "2"]
    _main("train.sft", args)
    ref = json.load(open(tmp_path / "sft" / "checkpoint-4" / "trainer_state.json"))
    # Drop the final checkpoint, as if the job had died after step 2, and resume from the last one left.
    shutil.rmtree(tmp_path / "sft" / "checkpoint-4")
    _main("train.sft", args + ["--resume_from_checkpoint", "true"])
    state = json.load(open(tmp_path / "sft" / "checkpoint-4" / "trainer_state.json"))
    assert state["global_step"] == 4
    got = [h["loss"] for h in state["log_history"] if "loss" in h]
    want = [h["loss"] for h in ref["log_history"] if "loss" in h]
    assert len(got) == 4 and all(x == x and x < 100 for x in got)
    # Optimizer, scheduler and data position were restored: steps 3-4 repeat the uninterrupted run.
    assert got[2:] == want[2:]


def test_accelerate_config_must_match_machine():
    import pytest

    from selfcorrect.errors import UserError
    from train.common import check_launch_matches_machine

    with pytest.raises(UserError, match="expects GPUs"):
        check_launch_matches_machine({"ACCELERATE_MIXED_PRECISION": "bf16"}, gpus=0)
    with pytest.raises(UserError, match="expects GPUs"):
        check_launch_matches_machine({"ACCELERATE_USE_DEEPSPEED": "true"}, gpus=0)
    with pytest.raises(UserError, match="starts 8 processes on this machine but it has 1 GPU"):
        check_launch_matches_machine({"LOCAL_WORLD_SIZE": "8"}, gpus=1)
    check_launch_matches_machine({"ACCELERATE_MIXED_PRECISION": "no", "LOCAL_WORLD_SIZE": "2"}, gpus=0)  # cpu_ddp.yaml
    check_launch_matches_machine({"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"}, gpus=0)  # cpu.yaml
    check_launch_matches_machine({}, gpus=0)  # plain python or cpu.yaml


def test_single_gpu_config_on_cpu_is_one_line(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    p = _run(
        [
            "-m",
            "accelerate.commands.launch",
            "--quiet",
            "--config_file",
            "accelerate_configs/single_gpu.yaml",
            "train/sft.py",
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            str(tmp_path / "none.jsonl"),
            "--output_dir",
            str(tmp_path / "o"),
        ]
    )
    assert p.returncode != 0
    # With --quiet (as in every documented launch command) the launcher adds no traceback of its own.
    assert "error: the accelerate config expects GPUs" in p.stderr
    assert "Traceback" not in p.stderr
