"""Checkpoints are complete or not used: every trainer marks a checkpoint complete once every file is
written (SCoRe/K-round RL also write it under a temporary name), and a resume takes the newest
complete one, naming the incomplete ones it skips in one line, or says how to start fresh."""

import json
import os
import shutil

import pytest
from helpers import online_trainer, run_command

from train.checkpoints import COMPLETE, ONLINE_RL_CHECKPOINT, TRL_CHECKPOINT, checkpoint_problem


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def _undo_finish(out):
    """What a run killed after its last checkpoint leaves: no final adapter, card or config."""
    for name in ("selfcorrect_config.json", "adapter_model.safetensors", "adapter_config.json", "README.md"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))


@pytest.fixture(scope="module")
def sft_file(tiny_model_dir, bbq_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt-dg")
    p = run_command(
        "data_gen.__main__",
        ["--model_name_or_path", tiny_model_dir, "--dataset_path", bbq_dir, "--limit", "8", "--rounds", "2"]
        + ["--max_new_tokens", "6", "--output_dir", str(out), "--sft_sources", "rationalised"],
    )
    assert p.returncode == 0, p.stderr
    return str(out / "sft.jsonl")


def _sft_args(tiny_model_dir, data, out):
    return ["--model_name_or_path", tiny_model_dir, "--dataset_path", data, "--output_dir", str(out), "--max_steps", "4",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--report_to", "none", "--per_device_train_batch_size", "2",
            "--seed", "7", "--disable_tqdm", "true", "--save_steps", "1"]  # fmt: skip


def _losses(out, step):
    with open(os.path.join(out, f"checkpoint-{step}", "trainer_state.json")) as f:
        return [h["loss"] for h in json.load(f)["log_history"] if "loss" in h]


@pytest.mark.slow  # trains through the entry point
def test_sft_resume_skips_incomplete_checkpoints_and_says_how_to_start_fresh(tiny_model_dir, sft_file, tmp_path):
    """The checkpoints a kill can leave: the newest an empty folder, the next without its optimizer
    file (HF resumed from it silently with a new optimizer and schedule), the next with a truncated
    adapter (HF stopped with a traceback). The re-run names all three in one line, resumes from the
    newest complete one and trains the losses of the uninterrupted run; with none complete it says
    how to start fresh; a damaged checkpoint named with --resume_from_checkpoint is refused."""
    out = tmp_path / "sft"
    args = _sft_args(tiny_model_dir, sft_file, out)
    p = run_command("train.sft", args)
    assert p.returncode == 0, p.stderr
    want = _losses(out, 4)
    assert len(want) == 4
    for step in (1, 2, 3, 4):
        assert checkpoint_problem(str(out / f"checkpoint-{step}"), TRL_CHECKPOINT) is None
    marked = [os.path.exists(out / f"checkpoint-{step}" / COMPLETE) for step in (1, 2, 3, 4)]
    _undo_finish(out)
    (out / "checkpoint-5").mkdir()
    os.remove(out / "checkpoint-4" / "optimizer.pt")
    _truncate(out / "checkpoint-3" / "adapter_model.safetensors")
    p = run_command("train.sft", args)
    assert p.returncode == 0, p.stderr
    skip = [line for line in p.stderr.splitlines() if line.startswith("skipping incomplete checkpoints")]
    assert len(skip) == 1, p.stderr
    assert "checkpoint-5 (empty folder)" in skip[0]
    assert "checkpoint-4 (optimizer.pt missing)" in skip[0]
    assert "checkpoint-3 (adapter_model.safetensors truncated" in skip[0]
    assert f"resuming from {out / 'checkpoint-2'}" in p.stderr
    got = _losses(out, 4)
    assert got[2:] == want[2:]  # optimizer, schedule and data position restored from checkpoint-2

    # Nothing complete left: one line, and how to start fresh.
    _undo_finish(out)
    for step in (1, 2, 3, 4):
        _truncate(out / f"checkpoint-{step}" / "optimizer.pt")
    p = run_command("train.sft", args)
    assert p.returncode == 2
    assert "no usable checkpoint" in p.stderr and "--overwrite true" in p.stderr
    assert "checkpoint-1 (optimizer.pt truncated" in p.stderr and "Traceback" not in p.stderr
    p = run_command(
        "train.sft",
        [*_sft_args(tiny_model_dir, sft_file, tmp_path / "other"), "--resume_from_checkpoint", str(out / "checkpoint-2")],
    )
    assert p.returncode == 2 and "is incomplete (optimizer.pt truncated" in p.stderr, p.stderr
    assert marked == [True] * 4  # the callback marked every checkpoint complete


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, sft_file, tmp_path_factory):
    """A finished 4-step SFT run with a checkpoint at every step, and its losses."""
    out = tmp_path_factory.mktemp("sft-ref") / "sft"
    p = run_command("train.sft", _sft_args(tiny_model_dir, sft_file, out))
    assert p.returncode == 0, p.stderr
    return out, _losses(out, 4)


@pytest.mark.slow  # trains through the entry point
@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda c: os.remove(c / "optimizer.pt"), "optimizer.pt missing"),
        (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt truncated"),
        (lambda c: _truncate(c / "scheduler.pt"), "scheduler.pt truncated"),
        (lambda c: _truncate(c / "adapter_model.safetensors"), "adapter_model.safetensors truncated"),
        (lambda c: _truncate(c / "trainer_state.json"), "trainer_state.json truncated"),
        (lambda c: [os.remove(f) for f in c.iterdir()], "empty folder"),
    ],
    ids=["optimizer-missing", "optimizer-cut", "scheduler-cut", "adapter-cut", "state-cut", "empty"],
)
def test_sft_resume_skips_a_damaged_last_checkpoint(tiny_model_dir, sft_file, sft_run, tmp_path, damage, named):
    """The last checkpoint (step 3, of a run killed before step 4 finished) lacks a file or holds a
    truncated one: the re-run names it, resumes from step 2 and trains the uninterrupted run's
    losses. Before, a missing optimizer resumed from step 3 with a new optimizer and schedule (other
    losses), a truncated file ended in a traceback, an empty folder in 'Can't find a valid checkpoint'."""
    ref, want = sft_run
    out = tmp_path / "sft"
    shutil.copytree(ref, out)
    shutil.rmtree(out / "checkpoint-4")
    _undo_finish(out)
    damage(out / "checkpoint-3")
    p = run_command("train.sft", _sft_args(tiny_model_dir, sft_file, out))
    assert p.returncode == 0, p.stderr
    assert f"skipping incomplete checkpoints: checkpoint-3 ({named}" in p.stderr, p.stderr
    assert f"resuming from {out / 'checkpoint-2'}" in p.stderr
    assert _losses(out, 4)[2:] == want[2:]


def _kround_args(tiny_model_dir, toy_rl_file, out):
    return [
        *("--model_name_or_path", tiny_model_dir, "--dataset_path", toy_rl_file, "--output_dir", str(out)),
        *("--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--rounds", "2", "--report_to", "none"),
        *("--max_steps", "4", "--save_steps", "1", "--per_device_prompts", "2", "--num_generations", "2"),
        *("--max_new_tokens", "6", "--learning_rate", "5e-3"),
    ]


def _log(out):
    return [json.loads(line) for line in open(os.path.join(out, "kround_log.jsonl"))]


@pytest.mark.slow  # trains through the entry point
def test_kround_resume_skips_incomplete_checkpoints(tiny_model_dir, toy_rl_file, tmp_path):
    """K-round RL's checkpoints after a kill: an empty newest folder, one with a truncated optimizer
    file, one without its adapter (a traceback each before). The re-run names them in one line and
    resumes from the newest complete one, training what the uninterrupted run trained."""
    from safetensors.torch import load_file

    out = tmp_path / "kround"
    args = _kround_args(tiny_model_dir, toy_rl_file, out)
    p = run_command("train.kround", args)
    assert p.returncode == 0, p.stderr
    want, adapter = _log(out), load_file(str(out / "adapter_model.safetensors"))
    for step in (1, 2, 3):
        assert checkpoint_problem(str(out / f"checkpoint-{step}"), ONLINE_RL_CHECKPOINT) is None
    _undo_finish(out)
    os.remove(out / "kround_log.jsonl")
    (out / "checkpoint-4").mkdir()
    _truncate(out / "checkpoint-3" / "optimizer.bin")
    os.remove(out / "checkpoint-2" / "adapter_model.safetensors")
    p = run_command("train.kround", args)
    assert p.returncode == 0, p.stderr
    skip = [line for line in p.stderr.splitlines() if line.startswith("skipping incomplete checkpoints")]
    assert len(skip) == 1, p.stderr
    assert "checkpoint-4 (empty folder)" in skip[0]
    assert "checkpoint-3 (optimizer.bin truncated" in skip[0]
    assert "checkpoint-2 (adapter_model.safetensors missing)" in skip[0]
    assert f"resuming from {out / 'checkpoint-1'}" in p.stderr
    got = _log(out)
    assert [h["step"] for h in got] == [2, 3, 4]
    for a, b in zip(want[1:], got):
        assert a["samples_sha256"] == b["samples_sha256"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    resumed = load_file(str(out / "adapter_model.safetensors"))
    assert all(float((adapter[k] - resumed[k]).abs().max()) < 1e-5 for k in adapter)


def test_an_online_rl_save_killed_midway_leaves_no_checkpoint(tiny_model_dir, toy_rl_file, tmp_path, monkeypatch):
    """SCoRe/K-round RL write a checkpoint under a temporary name and rename it when complete: a save
    stopped after the optimizer state and before the adapter leaves no checkpoint-N folder that a
    resume could take, and the next save of that step replaces the leftover."""
    import train.online_rl as online_rl

    trainer = online_trainer("kround", _kround_args(tiny_model_dir, toy_rl_file, tmp_path / "o"))
    trainer.setup()
    save_model = online_rl.save_model_all_ranks

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(online_rl, "save_model_all_ranks", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(1)
    assert not (tmp_path / "o" / "checkpoint-1").exists()
    monkeypatch.setattr(online_rl, "save_model_all_ranks", save_model)
    trainer.save_checkpoint(1)
    assert checkpoint_problem(str(tmp_path / "o" / "checkpoint-1"), ONLINE_RL_CHECKPOINT) is None
    assert "checkpoint-1.tmp" not in os.listdir(tmp_path / "o")


def test_a_checkpoint_file_cut_after_it_was_marked_complete_is_refused(tmp_path):
    """The marker records each file's size: a file shortened later (a copy cut short, a full disk
    on a sync) is named, whatever its format."""
    from train.checkpoints import mark_complete

    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    (folder / "rng_state.pth").write_bytes(b"x" * 100)
    mark_complete(str(folder))
    assert checkpoint_problem(str(folder), ()) is None
    _truncate(folder / "rng_state.pth")
    assert checkpoint_problem(str(folder), ()) == "rng_state.pth truncated (50 of 100 bytes)"
    shutil.rmtree(folder)
    folder.mkdir()
    assert checkpoint_problem(str(folder), ()) == "empty folder"
