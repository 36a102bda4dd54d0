"""Every trainer under DeepSpeed ZeRO-2 and ZeRO-3 on the CPU (accelerate_configs/cpu_zero2.yaml,
cpu_zero3.yaml: two processes, DeepSpeed's CPU accelerator over gloo), against the same run under
DDP (cpu_ddp.yaml): two optimizer steps, the first step's loss equal, and an adapter that is whole
(no empty ZeRO-3 shard), moved and reloadable. The `multiprocess` tier."""

import glob
import json
import os

import pytest
from helpers import launch
from safetensors.torch import load_file
from test_train import check_adapter_loads, data, lora_b_changed, toy_rl_args  # noqa: F401 (data: a fixture)

pytestmark = pytest.mark.multiprocess

STEPS = ["--max_steps", "2", "--learning_rate", "5e-3", "--logging_steps", "1", "--report_to", "none"]


def trainer_args(method: str, model: str, data) -> list[str]:  # noqa: F811
    bbq, toy = data / "bbq", data / "toy"
    trl_steps = [*STEPS, "--save_steps", "2"]
    if method == "sft":
        return [
            "--model_name_or_path",
            model,
            "--dataset_path",
            str(bbq / "sft.jsonl"),
            "--per_device_train_batch_size",
            "2",
            *trl_steps,
        ]
    if method == "dpo":
        return [
            "--model_name_or_path",
            model,
            "--dataset_path",
            str(bbq / "dpo.jsonl"),
            "--per_device_train_batch_size",
            "2",
            *trl_steps,
        ]
    if method == "grpo":
        return [
            *("--model_name_or_path", model, "--dataset_path", str(toy / "rl.jsonl"), "--task", "toy_task:EvenLengthTask"),
            *("--prompt_set", "intrinsic", "--per_device_train_batch_size", "4", "--num_generations", "4"),
            *("--max_completion_length", "8", *trl_steps),
        ]
    rl = [*toy_rl_args(model, data), *STEPS, "--per_device_prompts", "2", "--num_generations", "2", "--save_steps", "1"]
    return [*rl, "--stage1_steps", "1"] if method == "score" else [*rl, "--rounds", "2"]


def first_step(method: str, out: str) -> dict:
    """The first step's logged loss (and rewards, for the on-policy trainers)."""
    if method in ("score", "kround"):
        log = [json.loads(line) for line in open(os.path.join(out, f"{method}_log.jsonl"))]
        assert [h["step"] for h in log] == [1, 2]
        return {k: v for k, v in log[0].items() if k == "loss" or k.startswith("reward_r")}
    with open(os.path.join(out, "checkpoint-2", "trainer_state.json")) as f:
        state = json.load(f)
    assert state["global_step"] == 2  # one optimizer step per training step
    return {"loss": [h for h in state["log_history"] if "loss" in h][0]["loss"]}


@pytest.fixture(scope="module")
def ddp_runs(tiny_model_dir, data, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("ddp-runs")
    return {"root": root, "done": {}}


def ddp_reference(method, tiny_model_dir, data, ddp_runs) -> str:  # noqa: F811
    """The same run under DDP, once per method for both ZeRO stages."""
    if method not in ddp_runs["done"]:
        out = str(ddp_runs["root"] / method)
        p = launch(
            "cpu_ddp", f"train/{method}.py", [*trainer_args(method, tiny_model_dir, data), "--output_dir", out], timeout=600
        )
        assert p.returncode == 0, p.stderr[-3000:]
        ddp_runs["done"][method] = out
    return ddp_runs["done"][method]


@pytest.mark.parametrize("config", ["cpu_zero2", "cpu_zero3"])
@pytest.mark.parametrize("method", ["sft", "dpo", "grpo", "score", "kround"])
def test_trainer_under_zero_matches_ddp_and_saves_a_whole_adapter(method, config, tiny_model_dir, data, ddp_runs, tmp_path):  # noqa: F811
    ref = ddp_reference(method, tiny_model_dir, data, ddp_runs)
    out = str(tmp_path / method)
    p = launch(config, f"train/{method}.py", [*trainer_args(method, tiny_model_dir, data), "--output_dir", out], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    # accelerate can fall back to plain DDP without a word (it does with cpu=True): DeepSpeed's own
    # ZeRO checkpoint files show that the engine ran, and the DDP run has none.
    zero_files = lambda d: glob.glob(os.path.join(d, "checkpoint-*", "**", "*zero_pp_rank_*"), recursive=True)  # noqa: E731
    assert zero_files(out) and not zero_files(ref)
    got, want = first_step(method, out), first_step(method, ref)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (key, got, want)
    adapter, ref_adapter = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (out, ref))
    assert {k: tuple(t.shape) for k, t in adapter.items()} == {k: tuple(t.shape) for k, t in ref_adapter.items()}
    assert lora_b_changed(out)
    check_adapter_loads(tiny_model_dir, out)
