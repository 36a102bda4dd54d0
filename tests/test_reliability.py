"""Determinism, training resume, and secrets never written or printed."""

import glob
import json
import os
import subprocess
import sys

import pytest
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


def test_sft_rerun_after_a_kill_resumes_and_the_hub_token_is_never_written(
    tiny_model_dir, bbq_dir, tmp_path, capsys, monkeypatch
):
    """A re-run of the same command after a kill continues from the last checkpoint (and says so)
    instead of training from step 0 over it; a finished run is refused; an explicit
    --resume_from_checkpoint true works as in HF. ``--hub_token`` reaches no written byte: not
    training_args.bin (transformers pickles TrainingArguments) nor any checkpoint's copy."""
    import shutil

    import pytest

    token = "hf_" + "SeCrEt" * 6
    monkeypatch.delenv("HF_TOKEN", raising=False)  # the run moves the token there; restored after the test
    _data_gen(tiny_model_dir, bbq_dir, tmp_path / "dg")
    out = tmp_path / "sft"
    args = _sft_args(tiny_model_dir, tmp_path / "dg" / "sft.jsonl", out, 4) + ["--save_steps", "2", "--hub_token", token]
    _main("train.sft", args)
    ref = json.load(open(out / "checkpoint-4" / "trainer_state.json"))
    # As if the job had been killed after step 2's checkpoint: no final adapter, no checkpoint-4.
    shutil.rmtree(out / "checkpoint-4")
    for name in ("selfcorrect_config.json", "adapter_model.safetensors", "README.md"):
        os.remove(out / name)
    kept = os.path.getmtime(out / "checkpoint-2" / "trainer_state.json")
    capsys.readouterr()
    _main("train.sft", args)
    assert f"resuming from {out / 'checkpoint-2'}" in capsys.readouterr().err
    assert os.path.getmtime(out / "checkpoint-2" / "trainer_state.json") == kept  # not trained over from step 0
    state = json.load(open(out / "checkpoint-4" / "trainer_state.json"))
    got = [h["loss"] for h in state["log_history"] if "loss" in h]
    want = [h["loss"] for h in ref["log_history"] if "loss" in h]
    assert state["global_step"] == 4 and len(got) == 4
    assert got[2:] == want[2:]  # optimizer, scheduler and data position were restored
    from selfcorrect.errors import run_cli
    from train.sft import main as sft

    with pytest.raises(SystemExit):
        run_cli(sft, args)
    assert "already holds a finished train/sft run with these settings" in capsys.readouterr().err
    shutil.rmtree(out / "checkpoint-4")
    _main("train.sft", args + ["--resume_from_checkpoint", "true"])  # the explicit way, as in HF
    assert json.load(open(out / "checkpoint-4" / "trainer_state.json"))["global_step"] == 4
    for path in glob.glob(str(tmp_path / "**" / "*"), recursive=True):
        if os.path.isfile(path):  # binary files too: training_args.bin, optimizer.pt, safetensors
            with open(path, "rb") as f:
                assert token.encode() not in f.read(), path


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


# ---- 1. --overwrite deletes only what the same command wrote ----------------------------------------


def _run_cmd(module, args):
    from helpers import run_command

    return run_command(module, args)


def _one_error(result, needle):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def _tree(folder):
    """Every file under ``folder`` with its bytes: what must survive a refused command."""
    return {p: open(p, "rb").read() for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(p)}


def test_overwrite_refuses_folders_holding_what_the_command_did_not_write(tiny_model_dir, bbq_dir, tmp_path):
    import shutil

    # The user's own folder: config.json, a report, plots and a shards/ tree, no run of eval's.
    user = tmp_path / "mine"
    (user / "shards").mkdir(parents=True)
    for name in ("config.json", "report.md", "plot.png", "shards/rank0.jsonl"):
        (user / name).write_text("the user's own\n")
    before = _tree(str(user))
    ev = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        bbq_dir,
        "--limit",
        "1",
        "--rounds",
        "1",
        "--max_new_tokens",
        "2",
    ]
    err = _one_error(_run_cmd("eval.__main__", [*ev, "--output_dir", str(user), "--overwrite", "true"]), "without a run.json")
    assert "--overwrite" not in err and _tree(str(user)) == before
    # A base model's folder as a training output: refused, and no advice that would delete the model.
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    before = _tree(str(base))
    rows = tmp_path / "sft.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    for extra in ([], ["--overwrite", "true"]):
        sft = ["--model_name_or_path", str(base), "--dataset_path", str(rows), "--output_dir", str(base), *extra]
        assert "--overwrite" not in _one_error(_run_cmd("train.sft", sft), "without a run.json")
    assert _tree(str(base)) == before
    # This command's own run plus a file it did not write: --overwrite refuses, naming it.
    from selfcorrect.errors import UserError
    from selfcorrect.run_identity import check_run

    own = tmp_path / "own"
    check_run(str(own), "eval", {"rounds": 1}, ["metrics.json"], False)
    (own / "metrics.json").write_text("{}")
    (own / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="also holds notes.txt"):
        check_run(str(own), "eval", {"rounds": 2}, ["metrics.json"], True)
    assert sorted(os.listdir(own)) == ["metrics.json", "notes.txt", "run.json"]
    os.remove(own / "notes.txt")
    os.makedirs(own / "eval")  # a run of its own inside (an eval beside an adapter) is never deleted
    (own / "eval" / "run.json").write_text("{}")
    check_run(str(own), "eval", {"rounds": 2}, ["metrics.json"], True)
    assert sorted(os.listdir(own)) == ["eval", "run.json"]


def test_merge_never_writes_over_its_inputs_nor_claims_success_without_writing(tiny_model_dir, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    before = _tree(str(base))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, needle in ((base, "is (inside) the --base folder"), (base / "merged", "is (inside) the --base folder"),
                        (adapter, "is (inside) the --adapter folder"), (a_file, "is a file, not a folder")):  # fmt: skip
        result = _run_cmd("train.merge", ["--base", str(base), "--adapter", str(adapter), "--out", str(out)])
        _one_error(result, needle)
        assert "merged model written" not in result.stderr
    assert _tree(str(base)) == before and a_file.read_text() == "x"


def _external_run(tmp_path, name, label):
    preds = tmp_path / f"{name}.jsonl"
    preds.write_text(json.dumps({"id": "Age/0", "responses": ["C"]}) + "\n")
    out = tmp_path / name
    args = ["--task", "bbq", "--dataset_path", os.path.join(ROOT, "tests", "fixtures", "bbq", "Age.jsonl"), "--predictions",
            str(preds), "--output_dir", str(out), "--n_boot", "10", "--label", label]  # fmt: skip
    assert _run_cmd("eval.external", args).returncode == 0
    return out


def test_compare_has_a_run_identity_like_every_command(tmp_path):
    a, b = _external_run(tmp_path, "a", "A"), _external_run(tmp_path, "b", "B")
    before = _tree(str(a))
    err = _one_error(
        _run_cmd("eval.compare", ["--runs", str(a), str(b), "--output_dir", str(a), "--overwrite", "true"]),
        "holds a 'eval.external' run",
    )
    assert "--overwrite" not in err and _tree(str(a)) == before
    cmp = str(tmp_path / "cmp")
    assert _run_cmd("eval.compare", ["--runs", str(a), str(b), "--output_dir", cmp]).returncode == 0
    assert _run_cmd("eval.compare", ["--runs", str(a), str(b), "--output_dir", cmp]).returncode == 0  # the same comparison again
    _one_error(_run_cmd("eval.compare", ["--runs", str(b), str(a), "--output_dir", cmp]), "was written with labels=")


# ---- 2. one run per folder ------------------------------------------------------------------------


def test_a_folder_in_use_is_refused_before_any_work_and_a_dead_holder_frees_it(tmp_path):
    import fcntl
    import signal
    import time

    out = tmp_path / "ext"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # another command holds the folder
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        preds = tmp_path / "p.jsonl"
        preds.write_text(json.dumps({"id": "Age/0", "responses": ["C"]}) + "\n")
        args = ["--task", "bbq", "--dataset_path", os.path.join(ROOT, "tests", "fixtures", "bbq", "Age.jsonl"),
                "--predictions", str(preds), "--output_dir", str(out), "--n_boot", "10"]  # fmt: skip
        _one_error(_run_cmd("eval.external", args), "is in use by another run that is still going")
        assert os.listdir(out) == []
    finally:
        os.close(fd)
    # A run holds its folder until it ends, however it ends: kill -9 leaves no stale lock.
    code = f"from selfcorrect.run_identity import check_run; check_run({str(out)!r}, 'x', {{}}, [], False); print('held', flush=True); import time; time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        from selfcorrect.errors import UserError
        from selfcorrect.run_identity import check_run, release_locks

        with pytest.raises(UserError, match="in use by another run"):
            check_run(str(out), "x", {}, [], False)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(0.1)
    check_run(str(out), "x", {}, [], False)
    release_locks()
