"""GRPO on the revision turn (rl.jsonl from data_gen).

    accelerate launch --config_file accelerate_configs/cpu.yaml train/grpo.py --config recipes/demo/grpo.yaml

Each prompt holds the model's first attempt (from the traces), the self-correction instruction and
the prompt set's answer prefill, rendered with the chat template here (so the model continues the
prefill, exactly as in data_gen and eval); the completion sampled by GRPO is the revision. Reward = the task's score of the revision, plus an
optional bonus ``alpha * (r2 - r1)`` for improving on the first attempt and a penalty for abandoning
a correct first answer (train/rewards.py). The scorer is the task's own (data_gen/tasks).

Completions come from selfcorrect's decoding loop by default (``generation_backend: selfcorrect``,
passed to TRL as its ``rollout_func``): the ``num_generations`` copies of a prompt are encoded once
and share that KV cache, and prompts are tokenised exactly as data_gen does (no extra BOS). Set
``generation_backend: trl`` for TRL's own generation (HF generate, or vLLM / continuous batching
through their GRPO config keys).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from data_gen.config import parse_config
from data_gen.errors import UserError, run_cli
from data_gen.tasks import get_task
from train.common import (
    TrainArgs,
    device_overrides,
    load_policy,
    load_rows,
    load_tokenizer_for_training,
    render_prompt,
    save_outputs,
)
from train.rewards import RevisionReward


@dataclass
class GRPOArgs(TrainArgs):
    alpha: float = field(default=0.0, metadata={"help": "Bonus alpha * (r2 - r1) for improving on the first attempt."})
    abandon_penalty: float = field(default=0.0, metadata={"help": "Penalty for changing a correct first answer into a worse one."})
    classifier: str | None = field(default=None, metadata={"help": "Classifier for model-scored tasks (toxicity, refusal)."})
    threshold: float = field(default=0.5, metadata={"help": "Classifier threshold."})
    generation_backend: str = field(
        default="selfcorrect",
        metadata={"help": "selfcorrect: our decoding loop, each prompt encoded once per group; trl: TRL's own generation."},
    )


def make_rollout_func(tokenizer, cfg):
    """TRL ``rollout_func`` that samples completions with data_gen's Generator.

    TRL hands over the process's prompts with each prompt repeated for its group; identical prompts
    in the batch are encoded once (shared prefill). The model samples in eval mode (no LoRA dropout)
    under TRL's unwrap context (which gathers ZeRO-3 weights and pauses gradient checkpointing).
    Returned log-probs are at the sampling temperature, as TRL computes them.
    """
    from trl.models import unwrap_model_for_generation

    from data_gen.rollout import Generator, SamplingConfig

    sampling = SamplingConfig(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.seed)
    calls = [0]

    def rollout(prompts: list[str], trainer) -> dict:
        if not all(isinstance(p, str) for p in prompts):
            raise UserError("generation_backend selfcorrect expects text prompts (rendered by train/grpo.py)")
        ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        calls[0] += 1
        key = f"step{trainer.state.global_step}/call{calls[0]}/rank{trainer.accelerator.process_index}"
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=cfg.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=cfg.gradient_checkpointing_kwargs,
        ) as model:
            was_training = model.training
            model.eval()
            try:
                outs = Generator(model, tokenizer, sampling, batch_size=len(ids), incremental=False).generate_ids(ids, seed_key=key)
            finally:
                model.train(was_training)
        return {
            "prompt_ids": ids,
            "completion_ids": [g.token_ids for g in outs],
            "logprobs": [g.token_logprobs for g in outs],
        }

    return rollout


def check_backend(args: GRPOArgs, cfg) -> None:
    if args.generation_backend not in ("selfcorrect", "trl"):
        raise UserError(f"generation_backend must be selfcorrect or trl (got '{args.generation_backend}')")
    if args.generation_backend == "trl":
        return
    unsupported = {
        "use_vllm": cfg.use_vllm,
        "use_transformers_continuous_batching": cfg.use_transformers_continuous_batching,
        "top_k": cfg.top_k not in (None, 0),
        "min_p": cfg.min_p is not None,
        "repetition_penalty": cfg.repetition_penalty != 1.0,
        "fsdp": bool(cfg.fsdp),
    }
    bad = [k for k, on in unsupported.items() if on]
    if bad:
        raise UserError(f"generation_backend selfcorrect does not support {', '.join(bad)}: set generation_backend: trl")
    if cfg.temperature <= 0:
        raise UserError("GRPO needs temperature > 0 (sampled groups)")


def main(argv: list[str]) -> None:
    from trl import GRPOConfig, GRPOTrainer

    args, cfg = parse_config([GRPOArgs, GRPOConfig], argv + device_overrides())
    check_backend(args, cfg)
    tokenizer = load_tokenizer_for_training(args, cfg.trust_remote_code)
    tokenizer.padding_side = "left"
    rows = load_rows(args.dataset_path, ("revision_prompt", "example", "first_reward", "first_correct"), args.max_train_samples)
    dataset = rows.map(lambda r: {"prompt": render_prompt(tokenizer, r["revision_prompt"])}, remove_columns=["revision_prompt"])
    reward = RevisionReward(get_task(args.task, args.classifier, args.threshold), args.alpha, args.abandon_penalty)
    model, peft_config = load_policy(args, cfg.bf16, cfg.trust_remote_code)
    rollout = make_rollout_func(tokenizer, cfg) if args.generation_backend == "selfcorrect" else None
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental; we pin its contract in tests
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=cfg, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config, rollout_func=rollout)  # fmt: skip
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    if trainer.accelerator.is_main_process:
        objective = (
            f"GRPO on the revision turn; reward = task score r2 + {args.alpha} * (r2 - r1)"
            f" - {args.abandon_penalty} * [correct first answer abandoned]; beta={cfg.beta}"
        )
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        save_outputs(trainer.model, tokenizer, cfg.output_dir, "grpo", objective, args, (args, cfg),
                     {"steps": trainer.state.global_step, "last mean reward": f"{rewards[-1]:.3f}" if rewards else "n/a"},
                     cfg.trust_remote_code)  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
