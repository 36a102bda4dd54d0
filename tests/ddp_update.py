"""Run the on-policy trainers' update on fixed episodes, in every process of an ``accelerate launch``
or in one process, and save the trainable parameters and step logs (tests/test_multiprocess.py
compares the two).

    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml tests/ddp_update.py JOBS.json
    accelerate launch --config_file accelerate_configs/cpu_zero3.yaml tests/ddp_update.py JOBS.json

JOBS.json lists jobs: {"method", "argv" (trainer arguments), "out" (a folder), "steps": [{"episodes":
[{"prompts", "responses", "rewards"}], "kl": [...]}]}. Each process trains on its consecutive share of
every step's episodes (whole groups of num_generations), as ``prompt_indices`` splits a step's prompts.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_job(job: dict) -> None:
    from helpers import online_trainer
    from safetensors.torch import save_file

    from train.outputs import gathered
    from train.rl_functions import Episode, round_advantages

    trainer = online_trainer(job["method"], job["argv"])
    trainer.setup()
    acc, g = trainer.accelerator, trainer.cfg.num_generations
    world, rank = acc.num_processes, acc.process_index
    done = []
    for step, s in enumerate(job["steps"]):
        episodes = [Episode(**e) for e in s["episodes"]]
        share = len(episodes) // world
        assert share % g == 0, "each process must get whole groups"
        mine = episodes[rank * share : (rank + 1) * share]
        rewards = [ep.rewards for ep in mine]
        returns = [trainer.episode_returns(ep, step) for ep in mine]
        advantages = round_advantages(returns, g)
        parts = trainer.update(mine, advantages, s["kl"])
        print(f"rank {rank} finished the update of step {step}", file=sys.stderr, flush=True)
        done.append((rewards, advantages, parts))
    logs = [trainer.step_log(step, *d) for step, d in enumerate(done)]
    named = [(n, p) for n, p in trainer.policy.named_parameters() if p.requires_grad]
    with gathered([p for _, p in named]):  # whole again under ZeRO-3 (every process enters)
        params = {n: p.detach().clone().contiguous() for n, p in named}
    if acc.is_main_process:
        os.makedirs(job["out"], exist_ok=True)
        save_file(params, os.path.join(job["out"], "params.safetensors"))
        with open(os.path.join(job["out"], "logs.json"), "w") as f:
            json.dump(logs, f)
        with open(os.path.join(job["out"], "state.json"), "w") as f:  # which engine really ran
            plugin = acc.state.deepspeed_plugin
            engine = {"distributed_type": acc.distributed_type.value, "num_processes": world}
            json.dump({**engine, "zero_stage": plugin.zero_stage if plugin else None}, f)
    acc.wait_for_everyone()


def main(path: str) -> None:
    from selfcorrect.cli import close_process_group
    from selfcorrect.run_identity import release_locks

    with open(path) as f:
        for job in json.load(f):
            run_job(job)
            # Each job is one run, as one command would be: it gives up its output folder when done
            # (run_cli does this for a command), so a later run in another process may claim it.
            release_locks()
    close_process_group()  # as run_cli ends a command: no exit race with gloo's threads


if __name__ == "__main__":
    main(sys.argv[1])
