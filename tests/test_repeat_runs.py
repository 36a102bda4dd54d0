"""What must repeat bitwise: each on-policy trainer (SCoRe, K-round RL, GRPO), run twice in fresh
processes on the same machine with the same thread count, saves the same adapter bytes and the same
step log. They sample at temperature 1, so a seed that is not threaded through, or state that leaks
between processes, shows here as a different token and from there a different adapter. What does
not repeat (another CPU kernel set or thread count) is measured in docs/reproducibility.md."""

import importlib.util
import json
import os

import pytest
from conftest import ROOT
from helpers import launch

# Log fields that are wall-clock measurements, not results: they differ between any two runs. The
# on-policy trainers' logs hold none; TRL's GRPO logs step_time at every step, and train_runtime and
# the two rates in its final entry (after the checkpoint this test reads, named in case that moves).
TIMING_FIELDS = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def is_timing(key: str) -> bool:
    """Wall-clock fields: the online loop's time split (train/rl_timing.py) and the trainers' runtimes."""
    return key in TIMING_FIELDS or key.startswith("time_") or key.endswith("_per_s")


TRAINERS = {
    # method: (script, arguments beyond the common ones, step log inside the output folder)
    "score": (
        "train/score.py",
        ["--per_device_prompts", "2", "--num_generations", "2", "--stage1_steps", "1"],
        "score_log.jsonl",
    ),
    "kround": ("train/kround.py", ["--per_device_prompts", "2", "--num_generations", "2", "--rounds", "3"], "kround_log.jsonl"),
    # On-policy first attempts (the demo's mode): both rounds sampled by the rollout engine.
    "grpo": (
        "train/grpo.py",
        [
            *("--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "6"),
            *("--alpha", "1.0", "--abandon_penalty", "0.5", "--save_steps", "2"),
        ],
        "checkpoint-2/trainer_state.json",
    ),
}


def train(method: str, model_dir: str, data: str, out: str, seed: int = 42):
    script, extra, _ = TRAINERS[method]
    args = [
        *("--model_name_or_path", model_dir, "--dataset_path", data, "--output_dir", out),
        *("--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--temperature", "1.0"),
        *("--max_steps", "2", "--learning_rate", "1e-2", "--logging_steps", "1", "--report_to", "none"),
        *("--seed", str(seed)),
    ]
    if method != "grpo":
        args += ["--max_new_tokens", "6"]
    p = launch("cpu", script, [*args, *extra])
    assert p.returncode == 0, p.stderr[-3000:]


def step_log(method: str, out: str) -> list[dict]:
    """The per-step records, without the timing fields."""
    path = os.path.join(out, TRAINERS[method][2])
    if path.endswith(".jsonl"):
        rows = [json.loads(line) for line in open(path) if line.strip()]
    else:
        rows = json.load(open(path))["log_history"]
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


def adapter_bytes(out: str) -> bytes:
    with open(os.path.join(out, "adapter_model.safetensors"), "rb") as f:
        return f.read()


# Every trainer launch is a fresh interpreter (accelerate launch), several seconds of start-up each.
@pytest.mark.slow
@pytest.mark.parametrize("method", list(TRAINERS))
def test_two_fresh_runs_are_bitwise_equal(method, tiny_model_dir, toy_rl_file, tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    train(method, tiny_model_dir, toy_rl_file, first)
    train(method, tiny_model_dir, toy_rl_file, second)
    log = step_log(method, first)
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 2, log  # both steps ran and were logged: equal logs are not two empty ones
    if method != "grpo":
        # The digest of each step's sampled token ids is in the log, so equal logs mean equal samples.
        assert all(len(r["samples_sha256"]) == 16 for r in steps)
    assert log == step_log(method, second)
    assert adapter_bytes(first) == adapter_bytes(second)


@pytest.mark.slow
def test_another_seed_samples_other_tokens(tiny_model_dir, toy_rl_file, tmp_path):
    """The comparison above can fail: the same K-round run with another seed samples other tokens
    from the first step on, and saves another adapter."""
    a, b = str(tmp_path / "seed42"), str(tmp_path / "seed43")
    train("kround", tiny_model_dir, toy_rl_file, a, seed=42)
    train("kround", tiny_model_dir, toy_rl_file, b, seed=43)
    assert step_log("kround", a)[0]["samples_sha256"] != step_log("kround", b)[0]["samples_sha256"]
    assert adapter_bytes(a) != adapter_bytes(b)


def test_demo_reports_the_machine_facts():
    """scripts/demo.py prints these beside its table and writes them to machine.json: the facts a
    sampled stage's numbers depend on."""
    import torch

    spec = importlib.util.spec_from_file_location("demo_script", os.path.join(ROOT, "scripts", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    facts = demo.machine_facts()
    assert facts["torch_threads"] == torch.get_num_threads() >= 1
    assert facts["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["cpu"] and facts["logical_cpus"] == os.cpu_count()
