"""Resume under DeepSpeed ZeRO-2/3 on the CPU (the `multiprocess` tier): a K-round RL folder as a kill
right after its step-2 checkpoint leaves it, then the same command again: the re-run resumes from
that checkpoint by itself and ends with the adapter of an uninterrupted run.

A resumed run must restore what the engine holds (the adapter's trainable shards, AdamW's moments,
the schedule) and the step; the episodes of a step depend only on the step, the seed and the
weights, so a faithful resume samples what the uninterrupted run sampled, and the adapters agree
within the tolerance of two DDP runs' float32 reductions (1e-5)."""

import json
import os

import pytest
from helpers import launch, left_by_a_kill_after
from safetensors.torch import load_file
from test_train import data, toy_rl_args  # noqa: F401 (data: a fixture)

pytestmark = pytest.mark.multiprocess

TOL = 1e-5


def _log(out):
    return [json.loads(line) for line in open(os.path.join(out, "kround_log.jsonl"))]


@pytest.mark.parametrize("config", ["cpu_zero2", "cpu_zero3"])
def test_kround_resumed_under_zero_ends_with_the_uninterrupted_adapter(config, tiny_model_dir, data, tmp_path):  # noqa: F811
    args = [*toy_rl_args(tiny_model_dir, data), "--per_device_prompts", "2", "--num_generations", "2", "--rounds", "2"]
    args += ["--max_new_tokens", "6", "--save_steps", "2", "--report_to", "none"]
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    p = launch(config, "train/kround.py", [*args, "--output_dir", full], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    left_by_a_kill_after(full, 2, resumed)
    p = launch(config, "train/kround.py", [*args, "--output_dir", resumed], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in p.stderr and "checkpoint-2" in p.stderr
    log_full, log_resumed = _log(full), _log(resumed)
    assert [h["step"] for h in log_resumed] == [3, 4]
    for a, b in zip(log_full[2:], log_resumed):
        assert a["samples_sha256"] == b["samples_sha256"], "the resumed run sampled other tokens"
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    wa, wb = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (full, resumed))
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < TOL, worst
