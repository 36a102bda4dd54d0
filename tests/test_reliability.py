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

    from selfcorrect.cli import run_cli

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
    instead of training from step 0 over it; a finished run has nothing left to do; an explicit
    --resume_from_checkpoint true works as in HF. ``--hub_token`` reaches no written byte: not
    training_args.bin (transformers pickles TrainingArguments) nor any checkpoint's copy."""
    import shutil

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
    finished = _tree(str(out))
    capsys.readouterr()
    _main("train.sft", args)
    assert "already holds this finished train/sft run: nothing to do" in capsys.readouterr().err
    assert _tree(str(out)) == finished
    shutil.rmtree(out / "checkpoint-4")
    _main("train.sft", args + ["--resume_from_checkpoint", "true"])  # the explicit way, as in HF
    assert json.load(open(out / "checkpoint-4" / "trainer_state.json"))["global_step"] == 4
    for path in glob.glob(str(tmp_path / "**" / "*"), recursive=True):
        if os.path.isfile(path):  # binary files too: training_args.bin, optimizer.pt, safetensors
            with open(path, "rb") as f:
                assert token.encode() not in f.read(), path


def test_accelerate_config_must_match_machine():
    import pytest

    from selfcorrect.device import check_launch_matches_machine
    from selfcorrect.errors import UserError

    with pytest.raises(UserError, match="expects GPUs"):
        check_launch_matches_machine({"ACCELERATE_MIXED_PRECISION": "bf16"}, gpus=0)
    with pytest.raises(UserError, match="expects GPUs"):
        check_launch_matches_machine({"ACCELERATE_USE_FSDP": "true"}, gpus=0)  # would run as independent processes
    with pytest.raises(UserError, match="expects GPUs"):  # zero2.yaml: bf16
        check_launch_matches_machine({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_MIXED_PRECISION": "bf16"}, gpus=0)
    check_launch_matches_machine(
        {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_MIXED_PRECISION": "no"}, gpus=0
    )  # cpu_zero2.yaml
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
        assert "--overwrite" not in _one_error(_run_cmd("train.sft", sft), "is (inside) the --model_name_or_path folder")
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


# ---- 4. every value checked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, flag, value",
    [
        ("data_gen.__main__", "--temperature", "nan"),
        ("data_gen.__main__", "--temperature", "inf"),
        ("eval.__main__", "--threshold", "nan"),
        ("eval.__main__", "--epsilon", "nan"),
        ("eval.__main__", "--delta", "nan"),
        ("eval.__main__", "--epsilon", "-inf"),
        ("train.sft", "--learning_rate", "nan"),
        ("train.dpo", "--adam_beta1", "nan"),
        ("train.dpo", "--beta", "inf"),
        ("train.grpo", "--alpha", "nan"),
        ("train.score", "--beta1", "nan"),
        ("train.kround", "--learning_rate", "nan"),
    ],
)
def test_nan_and_inf_are_refused_by_every_command(module, flag, value, tmp_path):
    """NaN passes every range comparison (``nan < 0`` is False): it used to decode greedily while
    recording NaN, or write a bare NaN into metrics.json, or fail in torch after the model loaded."""
    result = _run_cmd(
        module, ["--dataset_path", str(tmp_path / "x.jsonl"), "--output_dir", str(tmp_path / "o"), f"{flag}={value}"]
    )
    _one_error(result, f"{flag[2:]} must be a finite number (got {float(value)})")
    assert not os.path.exists(tmp_path / "o")


def test_generation_stops_at_the_models_context(tiny_model_dir, capsys):
    """A row's answer never runs past the context (each row by its own prompt's length, so batching
    does not change it); it is said once; a prompt that fills the context is refused."""
    from selfcorrect.errors import UserError
    from selfcorrect.modeling import load_model, load_tokenizer
    from selfcorrect.rollout import HFGenerator, SamplingConfig

    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    model.config.max_position_embeddings = 40
    gen = HFGenerator(model, tok, SamplingConfig(max_new_tokens=64, temperature=1.0, seed=3), batch_size=4)
    prompts = [list(range(5, 35)), list(range(5, 25))]  # room for 10 and 20 new tokens
    outs = gen.generate_ids(prompts)
    for g, p in zip(outs, prompts):
        assert len(p) + g.new_tokens <= 40
        assert g.finish == "eos" or g.new_tokens == 40 - len(p)
    assert sum(g.finish == "length" for g in outs) >= 1
    assert capsys.readouterr().err.count("answers stop at the model's context of 40 tokens") == 1
    with pytest.raises(UserError, match="a prompt of 40 tokens fills the model's context of 40 tokens"):
        gen.generate_ids([list(range(5, 45))])


def test_split_that_the_data_cannot_honour_is_refused(tiny_model_dir, bbq_dir, tmp_path):
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        bbq_dir,
        "--split",
        "train",
        "--output_dir",
        str(tmp_path / "o"),
        *("--limit", "1", "--rounds", "1", "--max_new_tokens", "2"),
    ]
    _one_error(_run_cmd("data_gen.__main__", args), "task bbq reads every row of")
    gsm = os.path.join(ROOT, "tests", "fixtures", "gsm8k")  # a folder of <split>.jsonl files honours it
    from selfcorrect.examples import check_split
    from selfcorrect.tasks import get_task

    check_split(get_task("gsm8k"), gsm, "train")


@pytest.mark.parametrize(
    "task, row, needle",
    [
        ("bbq", {"context": None}, "field 'context' must be text (got null None)"),
        ("bbq", {"ans1": ["a", "b"]}, "field 'ans1' must be text (got list ['a', 'b'])"),
        ("gsm8k", {"answer": 12345}, "field 'answer' must be text (got int 12345)"),
        ("gsm8k", {"question": None}, "field 'question' must be text (got null None)"),
    ],
)
def test_data_fields_of_the_wrong_type_are_refused_with_file_and_line(task, row, needle, tmp_path):
    from selfcorrect.errors import UserError
    from selfcorrect.tasks import get_task

    source = os.path.join(ROOT, "tests", "fixtures", "bbq", "Age.jsonl") if task == "bbq" else None
    good = json.loads(open(source).readline()) if source else {"question": "1+1?", "answer": "two\n#### 2"}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **row}) + "\n")
    with pytest.raises(UserError) as e:
        list(get_task(task).load(str(path)))
    assert str(e.value).startswith(f"{path}:2: ") and needle in str(e.value)


@pytest.mark.parametrize(
    "device, needle", [("tpu", "device must be cpu, cuda or cuda:N (got 'tpu')"), ("cuda", "CUDA is not available")]
)
def test_a_device_the_machine_lacks_is_one_line(device, needle, tiny_model_dir, bbq_dir, tmp_path):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        bbq_dir,
        "--device",
        device,
        "--output_dir",
        str(tmp_path / "o"),
        *("--limit", "1", "--rounds", "1", "--max_new_tokens", "2"),
    ]
    _one_error(_run_cmd("eval.__main__", args), needle)


# ---- 5. errors that say where ---------------------------------------------------------------------------


def test_yaml_errors_name_line_column_and_a_tab(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rounds: 2\n\tlimit: 3\n")
    _one_error(_run_cmd("data_gen.__main__", ["--config", str(recipe)]), f"{recipe}:2:1: not valid YAML: a tab character")
    recipe.write_text("rounds: 2\nlimit: [3\nseed: 1\n")
    _one_error(_run_cmd("data_gen.__main__", ["--config", str(recipe)]), f"{recipe}:3:5: not valid YAML:")


def _tiny_adapter(tiny_model_dir, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(out)
    return out


def test_model_and_adapter_folders_missing_files_are_named(tiny_model_dir, bbq_dir, tmp_path):
    import shutil

    args = ["--dataset_path", bbq_dir, "--limit", "1", "--rounds", "1", "--max_new_tokens", "2"]
    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_model_dir, no_tok, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json", "vocab.json"))
    err = _one_error(_run_cmd("eval.__main__", [*args, "--model_name_or_path", str(no_tok), "--output_dir", str(tmp_path / "a")]),
                     f"model folder {no_tok} holds no tokenizer files")  # fmt: skip
    assert err.endswith("or copy it from the base model")  # a whole message, not one cut off mid-sentence
    adapter = _tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(adapter / "adapter_config.json", unfinished)
    (unfinished / "training_args.bin").write_bytes(b"\x80\x04pickle")
    base = ["--model_name_or_path", tiny_model_dir, *args]
    err = _one_error(_run_cmd("eval.__main__", [*base, "--adapter", str(unfinished), "--output_dir", str(tmp_path / "b")]),
                     f"adapter folder {unfinished} holds no adapter weights (adapter_model.safetensors)")  # fmt: skip
    assert "pickle" not in err
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated copy
    _one_error(
        _run_cmd("eval.__main__", [*base, "--adapter", str(adapter), "--output_dir", str(tmp_path / "c")]),
        f"cannot load adapter {adapter}",
    )


def test_merge_advice_names_its_own_options(tiny_model_dir, tmp_path):
    from tiny_model import build

    other = build(str(tmp_path / "other"), seed=1)
    adapter = _tiny_adapter(other, tmp_path / "adapter")
    err = _one_error(_run_cmd("train.merge", ["--base", tiny_model_dir, "--adapter", str(adapter), "--out", str(tmp_path / "m")]),
                     f"was trained on {other}")  # fmt: skip
    assert f"pass --base {other}" in err and "--model_name_or_path" not in err


def test_weights_that_never_moved_under_a_zero_learning_rate_say_so():
    import torch
    from transformers import get_linear_schedule_with_warmup

    from train.outputs import NOT_MOVED, not_moved

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    warm = get_linear_schedule_with_warmup(opt, num_warmup_steps=5, num_training_steps=1)
    assert "the learning rate was 0 at each of the run's 1 step(s)" in not_moved(warm, 1)
    assert not_moved(warm, 2) == NOT_MOVED  # step 2 trains at lr/5: then the gradients are to blame
    assert not_moved(get_linear_schedule_with_warmup(opt, 0, 1), 1) == NOT_MOVED


def test_disk_full_keeps_what_was_written_and_says_so_in_one_line(tmp_path, monkeypatch):
    import errno

    import selfcorrect.jsonl as jsonl
    from selfcorrect.errors import UserError
    from selfcorrect.trace_run import merge_shards

    shard = tmp_path / "shards" / "rank0.jsonl"
    shard.parent.mkdir()
    jsonl.append_rows(str(shard), [{"id": "a", "sample": 0}])

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl.os, "fsync", full)
    with pytest.raises(UserError, match="disk full while writing .*rank0.jsonl: the rows finished before this batch are kept"):
        jsonl.append_rows(str(shard), [{"id": "b", "sample": 0}])
    jsonl.repair_tail(str(shard))
    with pytest.raises(UserError, match="disk full while writing .*traces.jsonl: the data it is made from is kept"):
        merge_shards(str(tmp_path))
    assert [r["id"] for r in jsonl.read_rows(str(shard))][0] == "a" and sorted(os.listdir(tmp_path)) == ["shards"]


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("messages", [], "'messages' must be a non-empty list of {role, content} messages"),
        (
            "messages",
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}],
            "assistant message whose content is None",
        ),
        (
            "messages",
            [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}],
            "role 'bot'; roles are system, user, assistant",
        ),
        ("example", 7, "'example' must be an object with text fields id, question and gold"),
        ("example", '{"id": "x", "question": "q"', "'example' is not valid JSON"),
    ],
)
def test_training_rows_follow_one_rule_in_every_trainer(field, value, needle, tmp_path):
    """The same bad row is the same one line (file and line) whichever trainer reads it."""
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "example": json.dumps({"id": "x", "question": "q", "gold": "A"})}  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, field: value}) + "\n")
    trainers = ["train.sft"] if field == "messages" else ["train.grpo", "train.score", "train.kround"]
    for module in trainers:
        line = _one_error(_run_cmd(module, ["--dataset_path", str(path), "--output_dir", str(tmp_path / module)]), needle)
        assert line.startswith(f"error: {path}:2: ")


def test_an_example_given_as_an_object_is_read_as_its_json_text(tmp_path):
    from train.data import load_rows

    example = {"id": "x", "question": "q", "gold": "A"}
    path = tmp_path / "rl.jsonl"
    path.write_text(json.dumps({"example": example}) + "\n" + json.dumps({"example": json.dumps(example)}) + "\n")
    assert [json.loads(r["example"]) for r in load_rows(str(path), ("example",))] == [example, example]
