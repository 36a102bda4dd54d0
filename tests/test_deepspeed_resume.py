"""Resume under DeepSpeed ZeRO-2/3 on the CPU (the `multiprocess` tier), for every trainer: a run's
folder as a kill right after its step-2 checkpoint leaves it, then the same command again. The
re-run resumes from that checkpoint by itself and ends with the adapter of an uninterrupted run.

A resumed run must restore what the engine holds (the adapter's trainable shards, AdamW's moments,
the schedule), the step and, for the trainers that sample, the sampling state:
- SCoRe and K-round RL (our loop, train/online_rl.py): the episodes of a step depend only on the
  step, the seed and the weights, so a faithful resume samples what the uninterrupted run sampled.
- SFT, DPO and GRPO (TRL's trainers, HF Trainer's mechanism): the trainer skips the batches the
  checkpoint had seen and restores each process's RNG from ``rng_state_<rank>.pth``; GRPO's
  rollouts come from that RNG.
In both cases the steps after the checkpoint log the uninterrupted run's losses and the adapters
agree within the tolerance of two DDP runs' float32 reductions (1e-5). A resume that lost AdamW's
moments fails these checks (``test_the_checks_catch_a_resume_that_lost_the_optimizer``)."""

import glob
import json
import os

import pytest
from helpers import launch, left_by_a_kill_after
from safetensors.torch import load_file
from test_deepspeed import trainer_args
from test_train import data  # noqa: F401 (a fixture)

pytestmark = pytest.mark.multiprocess

TOL = 1e-5
ONLINE = ("score", "kround")


def _args(method: str, model: str, data) -> list[str]:  # noqa: F811
    """4 steps with a checkpoint at step 2 (SCoRe's Stage II starts at step 4, after the resume)."""
    args = [*trainer_args(method, model, data), "--max_steps", "4", "--save_steps", "2"]
    return [*args, "--stage1_steps", "3"] if method == "score" else args


def _logged(method: str, out: str) -> dict[int, dict[str, float]]:
    """What each step logged that a resume must reproduce: the loss, and the sampled rewards of the
    trainers that sample (GRPO's logged loss is 0 at one update per batch, so its rewards and
    gradient norm carry the check). The on-policy trainers' step log, the TRL trainers' final
    trainer_state."""
    if method in ONLINE:
        keep = lambda k: k == "loss" or k.startswith("reward_r")  # noqa: E731
        rows = map(json.loads, open(os.path.join(out, f"{method}_log.jsonl")))
    else:
        keep = lambda k: k in ("loss", "grad_norm", "reward", "reward_std")  # noqa: E731
        with open(os.path.join(out, "checkpoint-4", "trainer_state.json")) as f:
            rows = [h for h in json.load(f)["log_history"] if "loss" in h]
    return {h["step"]: {k: v for k, v in h.items() if keep(k)} for h in rows}


def _max_adapter_diff(a: str, b: str) -> float:
    wa, wb = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (a, b))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _full_and_resumed(method, config, model, data, tmp_path, break_resume=None):  # noqa: F811
    args = _args(method, model, data)
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    p = launch(config, f"train/{method}.py", [*args, "--output_dir", full], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    left_by_a_kill_after(full, 2, resumed)
    if break_resume:
        break_resume(os.path.join(resumed, "checkpoint-2"))
    p = launch(config, f"train/{method}.py", [*args, "--output_dir", resumed], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in p.stderr and "checkpoint-2" in p.stderr
    return full, resumed


@pytest.mark.parametrize("config", ["cpu_zero2", "cpu_zero3"])
@pytest.mark.parametrize("method", ["sft", "dpo", "grpo", "score", "kround"])
def test_resumed_under_zero_ends_with_the_uninterrupted_adapter(method, config, tiny_model_dir, data, tmp_path):  # noqa: F811
    full, resumed = _full_and_resumed(method, config, tiny_model_dir, data, tmp_path)
    want, got = _logged(method, full), _logged(method, resumed)
    assert sorted(want) == [1, 2, 3, 4] and {3, 4} <= set(got), (want, got)
    for step in (3, 4):
        assert got[step].keys() == want[step].keys()
        for key in want[step]:
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-4, abs=1e-6), (step, key, got, want)
    if method in ONLINE:
        log = lambda d: {h["step"]: h for h in map(json.loads, open(os.path.join(d, f"{method}_log.jsonl")))}  # noqa: E731
        lf, lr = log(full), log(resumed)
        assert sorted(lr) == [3, 4]  # the resumed run's own log starts after the checkpoint
        assert all(lf[s]["samples_sha256"] == lr[s]["samples_sha256"] for s in (3, 4)), "the resumed run sampled other tokens"
    worst = _max_adapter_diff(full, resumed)
    assert worst < TOL, worst


def _forget_adam_moments(checkpoint: str) -> None:
    """Zero AdamW's first and second moments in the checkpoint's DeepSpeed optimizer shards (and
    re-mark it complete, so the resume takes it): a resume that restores the weights and the step
    but starts the optimizer afresh."""
    import torch

    from train.checkpoints import mark_complete

    zeroed = []

    def zero(obj):
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k in ("exp_avg", "exp_avg_sq") and torch.is_tensor(v):
                    out[k] = torch.zeros_like(v)
                    zeroed.append(k)
                else:
                    out[k] = zero(v)
            return out
        if isinstance(obj, list | tuple):
            return type(obj)(zero(v) for v in obj)
        return obj

    shards = glob.glob(os.path.join(checkpoint, "**", "*optim_states.pt"), recursive=True)
    assert shards, os.listdir(checkpoint)
    for path in shards:
        torch.save(zero(torch.load(path, map_location="cpu", weights_only=False)), path)
    assert zeroed, "no AdamW moments found in the optimizer shards"
    mark_complete(checkpoint)


def test_the_checks_catch_a_resume_that_lost_the_optimizer(tiny_model_dir, data, tmp_path):  # noqa: F811
    """The control: the same comparison on a resume whose AdamW moments were zeroed fails it."""
    full, resumed = _full_and_resumed("sft", "cpu_zero2", tiny_model_dir, data, tmp_path, _forget_adam_moments)
    worst = _max_adapter_diff(full, resumed)
    print(f"largest adapter difference after a resume without AdamW's moments: {worst:.2e}")
    assert worst > 100 * TOL, f"the adapter check cannot tell a resume without AdamW's moments: {worst}"
