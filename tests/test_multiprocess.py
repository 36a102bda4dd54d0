"""Several processes on this machine (the `multiprocess` tier; deselect with -m 'not multiprocess'):
the on-policy update under DDP (2 gloo processes, accelerate_configs/cpu_ddp.yaml) and under
DeepSpeed ZeRO-2 and ZeRO-3 (cpu_zero2.yaml, cpu_zero3.yaml) equals the one-process update over the
same episodes, on chat templates of three families."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import LAUNCH_ENV, launch, online_trainer
from test_online_rl import STYLE_RECIPE, _argv

pytestmark = pytest.mark.multiprocess

ENV = {**os.environ, **LAUNCH_ENV}


def hand_made_rewards(n_episodes: int, k: int, group: int, step: int) -> list[list[float]]:
    """Even groups: every episode right at every round (identical returns, no signal); odd groups:
    rewards that differ between the episodes of the group."""
    return [[1.0] * k if (e // group) % 2 == 0 else [float((e + t + step) % 2 == 0) for t in range(k)] for e in range(n_episodes)]


@pytest.fixture(scope="module")
def update_jobs(tmp_path_factory, rl_file):
    """For each template family and method: 2 steps of 8 episodes sampled once by one process from
    the model (so each family's re-rendering shapes the packed sequences), with hand-made rewards."""
    from tiny_model import build

    from train.rl_functions import pack_episode

    root = tmp_path_factory.mktemp("ddp-update")
    jobs, uneven = [], {}
    for style in STYLE_RECIPE:
        model_dir = build(str(root / style), style=style, two_eos=True, end_prob=0.3)
        for method in ("score", "kround"):
            argv = _argv(method, style, model_dir, rl_file, str(root / f"run-{style}-{method}"))
            # No LoRA dropout: its random masks depend on how many forward passes a process ran.
            argv += ["--per_device_prompts", "4", "--micro_batch_size", "1", "--temperature", "0.7", "--lora_dropout", "0"]
            trainer = online_trainer(method, argv)
            trainer.setup()
            steps = []
            for step in range(2):
                episodes = trainer.sample(step)
                k = trainer.rounds()
                for ep, r in zip(episodes, hand_made_rewards(len(episodes), k, trainer.cfg.num_generations, step)):
                    ep.rewards, ep.correct = r, [x == 1.0 for x in r]
                half = len(episodes) // 2
                counts = [sum(len(pack_episode(ep)) for ep in part) for part in (episodes[:half], episodes[half:])]
                uneven[(style, method, step)] = counts[0] != counts[1]
                steps.append(
                    {
                        "episodes": [dataclasses.asdict(e) for e in episodes],
                        "kl": trainer.kl_coefs(step),
                    }
                )
            jobs.append({"method": method, "argv": argv, "name": f"{style}-{method}", "steps": steps})
    return root, jobs, uneven


def test_two_process_update_equals_one_process_update(update_jobs):
    """Each process packs its own episodes, and a template that re-renders a turn (Llama 3 trims,
    Mistral prefixes a space) starts a new sequence, so the ranks run different numbers of
    micro-batches. The old loop called backward once per micro-batch: DDP paired the all-reduces
    of different steps and the run hung. Now the parameters after two steps, and every logged
    value, equal the one-process run over the same episodes."""
    root, jobs, uneven = update_jobs
    assert uneven[("llama3", "kround", 0)] or uneven[("llama3", "kround", 1)]  # the case that hung
    assert sum(uneven.values()) >= 4
    assert_launched_update_equals_one_process(root, jobs, "cpu_ddp")


def test_a_finished_run_exits_0_on_a_busy_machine():
    """A run that finished and saved exits 0: ``run_cli`` destroys the process group, joining gloo's
    worker threads, before Python shuts down (``close_process_group`` says why). Without that, the
    threads race Python's shutdown and a rank that loses aborts ("terminate called without an
    active exception", exit -6). tests/collective_at_exit.py on 8 processes loses the race often:
    with ``close_process_group`` taken out, 6 of 6 launches failed; with it, 12 of 12 exited 0
    (2026-12-07, a 2-core machine)."""
    for _ in range(3):
        p = launch("cpu_ddp", "tests/collective_at_exit.py", [], timeout=120, launcher_args=("--num_processes", "8"))
        assert "terminate called" not in p.stderr, p.stderr[-2000:]
        assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize("config", ["cpu_zero2", "cpu_zero3"])
def test_zero_update_equals_one_process_update(update_jobs, config):
    """Under DeepSpeed, accelerate's backward steps the engine at every call, so each micro-batch
    would be an optimizer step (and the loop's clipping and step would do nothing). The loop now
    marks the last micro-batch as the accumulation boundary and steps the engine once, which clips
    to max_grad_norm: the parameters after two steps equal the one-process run's, on the
    Llama-3-style template whose processes hold different numbers of micro-batches."""
    root, jobs, uneven = update_jobs
    assert uneven[("llama3", "kround", 0)] or uneven[("llama3", "kround", 1)]
    assert_launched_update_equals_one_process(root, [j for j in jobs if j["name"].startswith("llama3")], config)


def assert_launched_update_equals_one_process(root, jobs, config: str) -> None:
    from ddp_update import main as run_here
    from safetensors.torch import load_file

    one = [dict(j, out=str(root / "one" / j["name"])) for j in jobs]
    two = [dict(j, out=str(root / config / j["name"])) for j in jobs]
    todo = [j for j in one if not os.path.exists(os.path.join(j["out"], "params.safetensors"))]
    (root / f"one-{config}.json").write_text(json.dumps(todo))
    (root / f"{config}.json").write_text(json.dumps(two))
    run_here(str(root / f"one-{config}.json"))
    p = launch(config, "tests/ddp_update.py", [str(root / f"{config}.json")], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    stage = {"cpu_ddp": None, "cpu_zero2": 2, "cpu_zero3": 3}[config]
    for b in two:  # accelerate can fall back to plain DDP without a word: check the engine that ran
        state = json.load(open(os.path.join(b["out"], "state.json")))
        assert state == {
            "distributed_type": "MULTI_CPU" if stage is None else "DEEPSPEED",
            "num_processes": 2,
            "zero_stage": stage,
        }
    for a, b in zip(one, two):
        pa, pb = load_file(os.path.join(a["out"], "params.safetensors")), load_file(os.path.join(b["out"], "params.safetensors"))
        assert pa.keys() == pb.keys()
        worst = max(float((pa[n] - pb[n]).abs().max()) for n in pa)
        assert worst < 1e-5, (a["name"], worst)
        la, lb = json.load(open(os.path.join(a["out"], "logs.json"))), json.load(open(os.path.join(b["out"], "logs.json")))
        for x, y in zip(la, lb):
            assert x.keys() == y.keys()
            for key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (a["name"], key)


def test_kround_on_a_llama_template_finishes_under_ddp(rl_file, tmp_path):
    """The reported hang, end to end: `accelerate launch --config_file accelerate_configs/cpu_ddp.yaml
    train/kround.py` with a Llama-3-style template, one sequence per micro-batch. BBQ on the random
    model earns nothing, so every group lacks signal: the run says so once, after 3 steps."""
    from tiny_model import build

    model_dir = build(str(tmp_path / "llama3"), style="llama3", two_eos=True, end_prob=0.3)
    out = tmp_path / "out"
    args = _argv("kround", "llama3", model_dir, rl_file, str(out)) + ["--micro_batch_size", "1", "--max_new_tokens", "8"]
    p = launch("cpu_ddp", "train/kround.py", args, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    log = [json.loads(line) for line in open(out / "kround_log.jsonl")]
    assert [h["step"] for h in log] == [1, 2, 3] and all(h["frac_zero_advantage"] == 1.0 for h in log)
    assert p.stderr.count("warning: kround steps 1-3: most prompt groups had identical returns") == 1  # rank 0 only


def test_kround_with_stopping_and_round_cost_under_ddp(tiny_model_dir, toy_rl_file, tmp_path):
    """stop_when stable with round_cost under cpu_ddp: each process's episodes stop at their own
    rounds (so the processes pack different numbers of sequences), the run finishes, and the step
    log holds the per-round self-correction metrics over both processes' episodes."""
    out = tmp_path / "out"
    args = ["--config", "recipes/demo/kround.yaml", "--model_name_or_path", tiny_model_dir, "--dataset_path", toy_rl_file,
            "--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--output_dir", str(out), "--max_steps", "2",
            "--per_device_prompts", "2", "--num_generations", "2", "--max_new_tokens", "5", "--rounds", "4",
            "--stop_when", "stable", "--round_cost", "0.1", "--micro_batch_size", "1", "--save_steps", "0"]  # fmt: skip
    p = launch("cpu_ddp", "train/kround.py", args, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    log = [json.loads(line) for line in open(out / "kround_log.jsonl")]
    assert [h["step"] for h in log] == [1, 2] and all(1 <= h["stop_round_mean"] <= 4 for h in log)
    assert {"accuracy_r1", "accuracy_r4", "flip_rate_1_2", "unparsed_r4"} <= set(log[0])
    assert (out / "self_correction_curves.png").exists()


def launch_two_machines(tmp_path, module_or_script: list[str], args: list[str], timeout: int):
    """multi_node.yaml as two machines on this one: two `accelerate launch` commands, machine_rank 0
    and 1, rank 0 at 127.0.0.1, one process each. The file's GPU settings are changed for the CPU in a
    copy (use_cpu must come from the file: the --cpu flag makes accelerate start one independent
    process per command, with no process group)."""
    import yaml

    with open(os.path.join(ROOT, "accelerate_configs", "multi_node.yaml")) as f:
        base = yaml.safe_load(f)
    procs = []
    for rank in (1, 0):
        cfg = {**base, "machine_rank": rank, "main_process_ip": "127.0.0.1", "main_process_port": 29541}
        cfg.update(num_processes=2, use_cpu=True, mixed_precision="no")
        path = tmp_path / f"machine{rank}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path), *module_or_script, *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
    out = []
    for p in reversed(procs):
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out  # machine 0, machine 1


def test_two_machines_on_one_host_run_data_gen_and_kround(tiny_model_dir, bbq_dir, tmp_path):
    """data_gen shards over the two machines' processes and the main process merges; K-round RL
    trains in one process group and only machine 0's main process writes the adapter and log."""
    data = tmp_path / "data"
    gen_args = ["--model_name_or_path", tiny_model_dir, "--dataset_path", bbq_dir, "--limit", "8", "--rounds", "2"]
    m0, m1 = launch_two_machines(
        tmp_path, ["-m", "data_gen"], [*gen_args, "--max_new_tokens", "6", "--output_dir", str(data)], 400
    )
    assert m0.returncode == 0 and m1.returncode == 0, (m0.stderr[-2000:], m1.stderr[-2000:])
    ids = [json.loads(line)["id"] for line in open(data / "traces.jsonl")]
    assert ids == [f"Age/{i}" for i in range(0, 8, 2)] + [f"Age/{i}" for i in range(1, 8, 2)]  # rank 0's shard, then rank 1's
    out = tmp_path / "kround"
    rl_args = ["--model_name_or_path", tiny_model_dir, "--dataset_path", str(data / "rl.jsonl"), "--output_dir", str(out)]
    rl_args += [*("--max_steps", "2", "--per_device_prompts", "2", "--num_generations", "2")]
    rl_args += [*("--rounds", "2", "--max_new_tokens", "6")]
    m0, m1 = launch_two_machines(tmp_path, ["train/kround.py"], rl_args, 400)
    assert m0.returncode == 0 and m1.returncode == 0, (m0.stderr[-2000:], m1.stderr[-2000:])
    assert "kround done" in m0.stderr and "kround done" not in m1.stderr  # machine 1's process knows it is rank 1
    assert len(open(out / "kround_log.jsonl").read().splitlines()) == 2 and (out / "adapter_model.safetensors").exists()
