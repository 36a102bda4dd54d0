"""Several processes on this machine (the `multiprocess` tier; deselect with -m 'not multiprocess'):
the on-policy update under DDP (2 gloo processes, accelerate_configs/cpu_ddp.yaml) equals the
one-process update over the same episodes, on chat templates of three families."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import online_trainer
from test_online_rl import STYLE_RECIPE, _argv

pytestmark = pytest.mark.multiprocess

TESTS = os.path.join(ROOT, "tests")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": TESTS, "OMP_NUM_THREADS": "1"}


def launch(config: str, script: str, args: list[str], timeout: int):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}.yaml", script]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=timeout)


def hand_made_rewards(n_episodes: int, k: int, group: int, step: int) -> list[list[float]]:
    """Even groups: every episode right at every round (identical returns, no signal); odd groups:
    rewards that differ between the episodes of the group."""
    return [[1.0] * k if (e // group) % 2 == 0 else [float((e + t + step) % 2 == 0) for t in range(k)] for e in range(n_episodes)]


@pytest.fixture(scope="module")
def update_jobs(tmp_path_factory, rl_file):
    """For each template family and method: 2 steps of 8 episodes sampled once by one process from
    the model (so each family's re-rendering shapes the packed sequences), with hand-made rewards."""
    from tiny_model import build

    from train.online_rl import pack_episode

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
                    ep.rewards = r
                half = len(episodes) // 2
                counts = [sum(len(pack_episode(ep)) for ep in part) for part in (episodes[:half], episodes[half:])]
                uneven[(style, method, step)] = counts[0] != counts[1]
                steps.append(
                    {
                        "episodes": [{"prompts": e.prompts, "responses": e.responses, "rewards": e.rewards} for e in episodes],
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
    from ddp_update import main as run_here
    from safetensors.torch import load_file

    root, jobs, uneven = update_jobs
    assert uneven[("llama3", "kround", 0)] or uneven[("llama3", "kround", 1)]  # the case that hung
    assert sum(uneven.values()) >= 4
    one = [dict(j, out=str(root / "one" / j["name"])) for j in jobs]
    two = [dict(j, out=str(root / "two" / j["name"])) for j in jobs]
    (root / "one.json").write_text(json.dumps(one))
    (root / "two.json").write_text(json.dumps(two))
    run_here(str(root / "one.json"))
    p = launch("cpu_ddp", "tests/ddp_update.py", [str(root / "two.json")], timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
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
