"""python -m data_gen end to end on the tiny model: outputs, resume after kill -9, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import ROOT
from helpers import launch, run_command

from selfcorrect.jsonl import read_rows


def run(args):
    return run_command("data_gen.__main__", args)


@pytest.mark.slow  # the whole command on a model, in subprocesses
def test_issue_command_writes_traces_and_datasets(tiny_model_dir, bbq_dir, tmp_path):
    out = tmp_path / "dg"
    p = run(
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--task",
            "bbq",
            "--dataset_path",
            bbq_dir,
            "--rounds",
            "3",
            "--limit",
            "50",
            "--output_dir",
            str(out),
            "--max_new_tokens",
            "8",
            "--batch_size",
            "16",
            "--sft_sources",
            "final_correct",
            "rationalised",
            "--dpo_sources",
            "switched",
            "improved",
            "rationalised",
        ]
    )
    assert p.returncode == 0, p.stderr
    traces = list(read_rows(str(out / "traces.jsonl")))
    assert len(traces) == 50 and len({t["id"] for t in traces}) == 50
    assert all(len(t["rounds"]) == 3 for t in traces)
    # The random tiny model is wrong almost always, so rationalised rows exist for most items.
    sft, dpo, rl = (list(read_rows(str(out / f"{k}.jsonl"))) for k in ("sft", "dpo", "rl"))
    assert len(rl) == 50 and len(sft) >= 40 and len(dpo) >= 40
    assert all(m["role"] in ("user", "assistant") for r in sft for m in r["messages"])
    card = (out / "README.md").read_text()
    assert "intrinsic-moral (v1)" in card and "| rl.jsonl | first_turn | 50 |" in card
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rounds"] == 3 and cfg["model_name_or_path"] == tiny_model_dir
    assert "accuracy per round" in p.stderr


@pytest.mark.slow  # the whole command on a model, in subprocesses
def test_resume_after_kill_9_at_random_points(tiny_model_dir, bbq_dir, tmp_path):
    """kill -9 at three random moments (model loading, mid-run, ...), then resume: every id once, all rounds."""
    import random

    out = tmp_path / "resume"
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        bbq_dir,
        "--rounds",
        "2",
        "--limit",
        "40",
        "--batch_size",
        "4",
        "--max_new_tokens",
        "24",
        "--output_dir",
        str(out),
    ]
    rng = random.Random(1234)
    shard = out / "shards" / "rank0.jsonl"
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "data_gen", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 3.0))  # usually while loading: nothing written yet
        else:  # once this run has written a new batch, at a random moment inside the next ones
            before = shard.stat().st_size if shard.exists() else 0
            deadline = time.time() + 1800  # waits for progress; a loaded machine may be slow
            while time.time() < deadline and proc.poll() is None and (not shard.exists() or shard.stat().st_size <= before):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert shard.exists() and shard.stat().st_size > 0, "no batch was written before the kills"
    with open(shard, "a") as f:  # and a torn write, as if the kill had landed inside write()
        f.write('{"id": "Age/999", "sample": 0, "rou')
    p = run(args)
    assert p.returncode == 0, p.stderr
    rows = list(read_rows(str(out / "traces.jsonl")))
    ids = Counter(t["id"] for t in rows)
    assert len(ids) == 40 and set(ids.values()) == {1}
    assert all(len(t["rounds"]) == 2 for t in rows)
    assert "Age/999" not in ids
    assert not (out / "shards").exists()


@pytest.mark.slow  # the whole command on a model, in subprocesses
def test_sigterm_drops_the_batch_and_exits_cleanly(tiny_model_dir, bbq_dir, tmp_path):
    out = tmp_path / "term"
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        bbq_dir,
        "--rounds",
        "2",
        "--limit",
        "40",
        "--batch_size",
        "4",
        "--max_new_tokens",
        "24",
        "--output_dir",
        str(out),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_gen", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    shard = out / "shards" / "rank0.jsonl"
    deadline = time.time() + 1800  # waits for progress; a loaded machine may be slow
    while time.time() < deadline and proc.poll() is None and not (shard.exists() and shard.stat().st_size > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=1800)  # generous: a hang fails, a slow machine does not
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    lines = shard.read_text().splitlines()
    assert lines and all(json.loads(line)["rounds"] for line in lines)  # only whole batches, every line complete
    assert len(lines) % 4 == 0
    p = run(args)
    assert p.returncode == 0 and len(list(read_rows(str(out / "traces.jsonl")))) == 40


@pytest.mark.parametrize(
    "args, message",
    [
        (["--roundz", "3"], "unknown option '--roundz' (did you mean 'rounds'?)"),
        (["--rounds", "0"], "rounds must be >= 1"),
        (["--task", "bbqq"], "unknown task 'bbqq' (did you mean 'bbq'?)"),
        (["--prompt_set", "intrinsic-morall"], "unknown prompt set 'intrinsic-morall'"),
        (["--model_name_or_path", "./no/such/model"], "model path does not exist: ./no/such/model"),
        (["--model_name_or_path", "Org/Not-Cached-Model"], "HF_HUB_OFFLINE is set and hub model"),
    ],
)
def test_bad_input_is_one_line(args, message, bbq_dir, tiny_model_dir, tmp_path):
    base = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        bbq_dir,
        "--limit",
        "2",
        "--output_dir",
        str(tmp_path / "x"),
    ]
    p = run(base + args)  # conftest sets HF_HUB_OFFLINE=1
    assert p.returncode == 2
    lines = [line for line in p.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "x" / "traces.jsonl").exists()


def test_unknown_recipe_key(tmp_path, bbq_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: bbq\nprompt_sett: baseline\n")
    p = run(["--config", str(recipe)])
    assert p.returncode == 2 and "unknown recipe key 'prompt_sett' (did you mean 'prompt_set'?)" in p.stderr


def test_empty_dataset(tmp_path, tiny_model_dir):
    empty = tmp_path / "Age.jsonl"
    empty.write_text("")
    p = run(["--model_name_or_path", tiny_model_dir, "--dataset_path", str(empty), "--output_dir", str(tmp_path / "o")])
    assert p.returncode == 2 and "no examples to run" in p.stderr


@pytest.mark.slow  # the whole command on a model, in subprocesses
@pytest.mark.parametrize("config", ["cpu_ddp", pytest.param("cpu_zero2", marks=pytest.mark.multiprocess)])
def test_two_processes_take_disjoint_shards(tiny_model_dir, bbq_dir, tmp_path, config):
    """Rank r takes examples r, r + 2, ...; under cpu_zero2.yaml too, where the process group comes
    from DeepSpeed's CPU accelerator (selfcorrect.device.process_group_kwargs)."""
    out = tmp_path / "ddp"
    p = launch(
        config,
        ["-m", "data_gen"],
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            bbq_dir,
            "--limit",
            "20",
            "--rounds",
            "2",
            "--max_new_tokens",
            "6",
            "--batch_size",
            "4",
            "--output_dir",
            str(out),
        ],
    )
    assert p.returncode == 0, p.stderr[-3000:]
    ids = [t["id"] for t in read_rows(str(out / "traces.jsonl"))]
    # Rank 0 took examples 0, 2, 4, ...; rank 1 took 1, 3, 5, ...; the main process merged rank 0's shard first.
    assert ids == [f"Age/{i}" for i in range(0, 20, 2)] + [f"Age/{i}" for i in range(1, 20, 2)]
    assert (out / "rl.jsonl").exists() and not (out / "shards").exists()


SAMPLED = ["--limit", "12", "--rounds", "2", "--samples", "2", "--temperature", "1.0", "--max_new_tokens", "8"]


def _sampled_rows(path):
    """Each trajectory's sampled rounds by (id, sample): the responses and what was read from them."""
    return {
        (t["id"], t["sample"]): [(r["response"], r["answer"], r["new_tokens"], r["finish"]) for r in t["rounds"]]
        for t in read_rows(str(path))
    }


@pytest.fixture(scope="module")
def sampled_whole(tiny_model_dir, bbq_dir, tmp_path_factory):
    """An uninterrupted one-process run at temperature 1, batch size 4."""
    out = tmp_path_factory.mktemp("sampled") / "whole"
    p = run(
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            bbq_dir,
            *SAMPLED,
            "--batch_size",
            "4",
            "--output_dir",
            str(out),
        ]
    )
    assert p.returncode == 0, p.stderr
    rows = _sampled_rows(out / "traces.jsonl")
    assert len(rows) == 24 and len({json.dumps(v) for v in rows.values()}) == 24  # every trajectory its own tokens
    return rows


@pytest.mark.slow  # the whole command on a model, in subprocesses
def test_sampled_run_resumed_after_kill_9_with_another_batch_size_writes_the_uninterrupted_rows(
    tiny_model_dir, bbq_dir, tmp_path, sampled_whole
):
    """At temperature 1, a run killed with SIGKILL once a batch of 2 is on disk and resumed with
    --batch_size 5 writes the rows of the uninterrupted run with --batch_size 4: a trajectory's
    random stream is keyed by its example and sample, not by the batch it fell in."""
    out = tmp_path / "killed"
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_path", bbq_dir, *SAMPLED, "--output_dir", str(out)]
    shard = out / "shards" / "rank0.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_gen", *args, "--batch_size", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and not (shard.exists() and shard.stat().st_size > 0):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sum(1 for line in shard.read_text().splitlines() if line.endswith("}"))
    assert 0 < kept < 24, "the kill must land between the first batch and the end"
    p = run([*args, "--batch_size", "5"])
    assert p.returncode == 0, p.stderr
    assert f"resuming: {kept} trajectories" in p.stderr
    assert _sampled_rows(out / "traces.jsonl") == sampled_whole


@pytest.mark.slow  # the whole command on a model, in subprocesses
def test_sampled_two_process_run_writes_the_one_process_rows(tiny_model_dir, bbq_dir, tmp_path, sampled_whole):
    """At temperature 1, two processes (each its shard of the examples, batch size 3) write the rows of
    the one-process run."""
    out = tmp_path / "ddp"
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_path", bbq_dir, *SAMPLED, "--batch_size", "3"]
    p = launch("cpu_ddp", ["-m", "data_gen"], [*args, "--output_dir", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    assert _sampled_rows(out / "traces.jsonl") == sampled_whole
