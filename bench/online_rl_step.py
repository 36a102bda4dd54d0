"""One K-round RL step (train/kround.py) with the HF loop vs a vLLM engine sampling, on the same prompts.

    .venv-vllm/bin/python bench/online_rl_step.py                       # SmolLM2-135M-Instruct, CPU
    .venv-vllm/bin/python bench/online_rl_step.py --shape qwen2.5-1.5b  # a lent GPU: random-init Qwen2.5-1.5B shape

Both trainers are set up the same way (LoRA on the attention projections, K = 3 rounds, BBQ items of
tests/fixtures/bbq, intrinsic-moral prompts, temperature 1) and run ``--steps`` steps in this process;
the last step's split is printed (the earlier ones warm up kernels and caches): sampling, the weight
push (vLLM only), the policy's forward and backward passes, the reference pass, the optimizer step,
and tokens sampled and trained per second. The vLLM engine's start is timed apart (once per run).
The ratio is the HF step's time over the vLLM step's (over 1: vLLM faster). Both sample the same
prompts with their own random draws, so the token counts differ; the rates count each path's own.
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from selfcorrect.modeling import SMOLLM2_ALIAS, resolve_model_path  # noqa: E402
from selfcorrect.tasks import get_task  # noqa: E402
from train.kround import KRoundTrainer, config_types  # noqa: E402
from train.rl_functions import round_advantages  # noqa: E402
from train.run import parse_training  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "bbq")


def rl_rows(path: str, n: int) -> None:
    """``n`` BBQ items as data_gen's rl.jsonl rows (the columns the trainer reads)."""
    task = get_task("bbq")
    with open(path, "w") as f:
        for i, ex in enumerate(task.load(FIXTURE)):
            if i == n:
                break
            f.write(
                json.dumps({"id": ex.id, "task": "bbq", "prompt_set": "intrinsic-moral", "example": json.dumps(ex.to_dict())})
                + "\n"
            )


def random_model(shape: str, folder: str) -> str:
    """A random-init model of ``shape`` with SmolLM2's tokenizer (its ids fit every shape's vocabulary)."""
    import torch
    from multi_round_generation import SHAPES
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPES[shape], max_position_embeddings=4096))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path(SMOLLM2_ALIAS)).save_pretrained(folder)
    return folder


def one_run(backend: str, model: str, data: str, out: str, a) -> dict:
    argv = ["--model_name_or_path", model, "--dataset_path", data, "--output_dir", out, "--task", "bbq"]
    argv += ["--prompt_set", "intrinsic-moral", "--rounds", str(a.rounds), "--max_steps", str(a.steps)]
    argv += ["--per_device_prompts", str(a.prompts), "--num_generations", str(a.generations), "--micro_batch_size", "8"]
    argv += ["--max_new_tokens", str(a.max_new_tokens), "--learning_rate", "5e-5", "--use_peft", "true", "--lora_r", "16"]
    argv += ["--lora_target_modules", "q_proj", "k_proj", "v_proj", "o_proj", "--generation_backend", backend]
    setup, cfg = parse_training(config_types(), argv, prog="bench")
    trainer = KRoundTrainer(setup, cfg)
    t0 = time.perf_counter()
    trainer.setup()
    setup_s = time.perf_counter() - t0
    for step in range(a.steps):
        trainer.timer.step_log()  # the split of this step only
        episodes = trainer.sample(step)
        adv = round_advantages([trainer.episode_returns(ep, step) for ep in episodes], cfg.num_generations)
        trainer.update(episodes, adv, trainer.kl_coefs(step))
        split = trainer.timer.step_log()
        split["tokens_sampled"] = sum(len(r) for ep in episodes for r in ep.responses)
    return {"setup_s": setup_s, **split}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--shape", default=None, help="random-init model of this shape (bench/multi_round_generation.py SHAPES), for a GPU"
    )
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="episodes per prompt")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, default=24)
    p.add_argument("--steps", type=int, default=2, help="steps per backend; the last one's split is reported")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-online-rl-")
    try:
        model = random_model(a.shape, os.path.join(tmp, "model")) if a.shape else SMOLLM2_ALIAS
        data = os.path.join(tmp, "rl.jsonl")
        rl_rows(data, a.prompts * a.steps)
        res = {b: one_run(b, model, data, os.path.join(tmp, b), a) for b in ("hf", "vllm")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ["time_step", "time_sampling", "time_weight_push", "time_policy_pass", "time_reference_pass", "time_optimizer_step"]
    keys += ["tokens_sampled", "tokens_sampled_per_s", "tokens_trained_per_s", "setup_s"]
    print(f"{'':24s}{'hf':>12s}{'vllm':>12s}")
    for k in keys:
        print(f"{k:24s}{res['hf'][k]:12.2f}{res['vllm'][k]:12.2f}")
    ratio = res["hf"]["time_step"] / res["vllm"]["time_step"]
    sampling_ratio = res["hf"]["time_sampling"] / res["vllm"]["time_sampling"]
    print(f"step time hf / vllm: {ratio:.2f}x (sampling alone {sampling_ratio:.2f}x; the vLLM engine start is setup_s)")
    print(
        json.dumps(
            {"model": a.shape or SMOLLM2_ALIAS, "ratio": ratio, "sampling_ratio": sampling_ratio, **{b: res[b] for b in res}}
        )
    )


if __name__ == "__main__":
    main()
