"""GRPO on the revision turn, with first attempts sampled on-policy (rl.jsonl from data_gen).

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/grpo.py --config recipes/demo/grpo.yaml

Each GRPO sample is a two-round episode run by selfcorrect's rollout engine exactly as eval runs it
(``first_attempt: on_policy``, the default): the current policy answers the first turn (y1), the
prompt set's correction instruction follows, and the policy's revision (y2) is the GRPO completion.
Only y2 carries loss; y1 is part of its prompt. Reward of a sample:

    R = r2 + alpha * (r2 - r1) - abandon_penalty * [r1 correct and r2 < r1]

with r1, r2 the task scorer's rewards of the two attempts (train/rewards.py). TRL's GRPO
normalises R within the ``num_generations`` samples of a prompt (Shao et al. 2024, arXiv
2402.03300). Because every sample of a group has its own first attempt, r1 varies within the group
and the shaping terms change the advantages of individual samples. In expectation they change
little: y1 is in the completion's prompt, so -alpha r1 is fixed given the completion's context (a
baseline, zero expected gradient) and alpha r2 rescales the reward; only the group's
normalisation by its standard deviation couples them. In an exact two-state case (signals audit,
2026-12-01) the expected gradient ratio fix / keep moves from 0.667 at alpha 0 to 0.694
at alpha 1, and to 0.646 with abandon_penalty 0.5, which favours keeping a right answer over fixing
a wrong one. The shaping does not make fixing worth clearly more than keeping.

``first_attempt: trace`` trains on the first attempts recorded by data_gen instead (off-policy;
needed by ``generation_backend: trl``, which samples one turn only). Then r1 is the same for the
whole group, alpha * (r2 - r1) is affine in r2 and the group normalisation removes the shaping
entirely, so alpha and abandon_penalty must be 0 in that mode (Kumar et al. 2024, Sec. 4, also
find that learning revisions of fixed first attempts mostly fails).

Completions come from selfcorrect's decoding loop (``generation_backend: selfcorrect``, passed to
TRL as its ``rollout_func``): the samples of a prompt share its encoded prefill, round 2 reuses
round 1's KV cache, and the log-probs are returned at the sampling temperature as TRL computes
them.

Where this departs from the papers it borrows from:

- The loss is TRL's GRPOTrainer with its defaults unless a recipe sets them (TRL's ``loss_type``
  "dapo" token-level normalisation, ``beta`` 0 i.e. no KL term, one policy update per batch), not
  the sequence-averaged, KL-regularised objective of Shao et al. (2024, Sec. 4.1); set ``loss_type:
  grpo`` and ``beta`` > 0 to get theirs.
- The episode is SCoRe's two attempts (Kumar et al. 2024), but only the second is trained: y1 is
  sampled on-policy and kept in the prompt, with no gradient. SCoRe trains both attempts and adds a
  KL on the first (train/score.py does that).
- The shaping ``alpha * (r2 - r1)`` is SCoRe's Stage II bonus; ``abandon_penalty`` is this
  project's own term and has no counterpart in either paper.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

from selfcorrect.chat import render_chat, render_prompt
from selfcorrect.cli import run_cli
from selfcorrect.config import SamplingConfig
from selfcorrect.device import env_flag
from selfcorrect.errors import UserError
from selfcorrect.modeling import load_policy, load_tokenizer
from selfcorrect.rollout import HFGenerator, run_rounds
from selfcorrect.tasks import task_and_prompt_set
from selfcorrect.tasks.base import UNPARSED, Example
from train.checkpoints import mark_complete_callback
from train.data import PROVENANCE, check_provenance, load_rows
from train.outputs import save_trained, trainable_snapshot
from train.rewards import RevisionReward
from train.run import parse_training, prepare_run, resumable, training_config_types


@dataclass
class GRPOEpisodeConfig:
    """GRPO episodes and reward shaping (selfcorrect)."""

    alpha: float = field(default=0.0, metadata={"help": "Bonus alpha * (r2 - r1) for improving on the first attempt."})
    abandon_penalty: float = field(
        default=0.0, metadata={"help": "Penalty for changing a correct first answer into a worse one."}
    )
    first_attempt: Literal["on_policy", "trace"] = field(
        default="on_policy",
        metadata={
            "help": "on_policy: each sample's first attempt is drawn from the current policy; trace: the first "
            "attempt recorded by data_gen (off-policy; alpha and abandon_penalty must then be 0)."
        },
    )
    # A str, not a Literal, so that "vllm" (the value data_gen and eval take) gets the line that says
    # where GRPO's vLLM path is, instead of a bare list of choices.
    generation_backend: str = field(
        default="selfcorrect",
        metadata={"help": "selfcorrect: our decoding loop (needed for on-policy first attempts); trl: TRL's own generation."},
    )


def last_mean_reward(history: list[dict]) -> str:
    """The model card's last logged mean reward.

    >>> last_mean_reward([{"reward": 0.25}, {"reward": 0.5}])
    '0.500'
    """
    rewards = [h["reward"] for h in history if "reward" in h]
    return f"{rewards[-1]:.3f}" if rewards else "n/a"


def self_correction_rows(trajectories) -> list[list[float]]:
    """Per two-round episode: right at rounds 1 and 2 (the grader's ``correct``), unparsed at rounds
    1 and 2, answer changed 1 -> 2.

    >>> from selfcorrect.trace import Round, Trajectory
    >>> rounds = [Round(None, None, "", "unparsed", False, 0.0), Round(None, None, "", "A", True, 0.9)]
    >>> self_correction_rows([Trajectory("0", "t", "p", None, rounds)])
    [[0.0, 1.0, 1.0, 0.0, 1.0]]
    """
    return [
        [float(r.correct) for r in t.rounds[:2]]
        + [float(r.answer == UNPARSED) for r in t.rounds[:2]]
        + [float(t.rounds[0].answer != t.rounds[1].answer)]
        for t in trajectories
    ]


SELF_CORRECTION_KEYS = ("accuracy_r1", "accuracy_r2", "unparsed_r1", "unparsed_r2", "flip_rate_1_2")


def log_self_correction(trainer, trajectories, mode: str) -> None:
    """Self-correction while GRPO trains, as far as its rollouts go (two rounds, on-policy first
    attempts): accuracy per round, unparsed share and flip rate 1 -> 2 over every process's
    episodes (one gather; every process samples at the same point), added to TRL's logged metrics
    under ``self_correction/`` (so to wandb with report_to wandb). No stopping: GRPO trains round 2
    of every episode."""
    import torch

    metrics = getattr(trainer, "_metrics", None)
    if metrics is None:
        return
    rows = torch.tensor(self_correction_rows(trajectories), dtype=torch.float64, device=trainer.accelerator.device)
    if trainer.accelerator.num_processes > 1:
        rows = trainer.accelerator.gather(rows)
    for key, value in zip(SELF_CORRECTION_KEYS, rows.mean(0).tolist()):
        metrics[mode][f"self_correction/{key}"].append(value)


def make_rollout_func(tokenizer, cfg, task=None, prompt_set=None, examples: dict | None = None):
    """TRL ``rollout_func`` that samples with selfcorrect's rollout engine.

    With ``prompt_set`` (on-policy first attempts), each prompt is a rendered first turn and every
    sample is a two-round episode (``run_rounds``); the completion TRL trains is round 2, its prompt
    the rendered conversation, and the first attempt's reward goes to the reward function as the
    ``first_reward`` / ``first_correct`` fields. Without it, each prompt is completed once per sample.

    TRL hands over the process's prompts with each prompt repeated for its group; identical prompts
    in the batch are encoded once (shared prefill). The model samples in eval mode (no LoRA dropout)
    under TRL's unwrap context (which gathers ZeRO-3 weights and pauses gradient checkpointing).
    """
    from trl.models import unwrap_model_for_generation

    sampling = SamplingConfig(
        max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed
    )
    calls: dict[tuple[int, bool], int] = {}

    def rollout(prompts: list[str], trainer) -> dict:
        if not all(isinstance(p, str) for p in prompts):
            raise UserError("generation_backend selfcorrect expects text prompts (rendered by train/grpo.py)")
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=cfg.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=cfg.gradient_checkpointing_kwargs,
        ) as model:
            was_training = model.training
            # The sampling key names the step and the call within that step (training and evaluation
            # apart), never a count since the process started: a run resumed from a checkpoint then
            # draws the tokens the uninterrupted run drew.
            where = (trainer.state.global_step, was_training)
            calls[where] = calls.get(where, 0) + 1
            mode = "train" if was_training else "eval"
            key = f"{mode}/step{where[0]}/call{calls[where]}/rank{trainer.accelerator.process_index}"
            model.eval()
            try:
                gen = HFGenerator(model, tokenizer, sampling, batch_size=len(prompts))
                if prompt_set is None:
                    ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
                    outs = gen.generate_ids(ids, seed_key=key)
                    return {
                        "prompt_ids": ids,
                        "completion_ids": [g.token_ids for g in outs],
                        "logprobs": [g.token_logprobs for g in outs],
                    }
                # One key per prompt row: TRL repeats each prompt for its group, and each copy samples its own episode.
                keys = [f"{key}/{i}" for i in range(len(prompts))]
                episodes = run_rounds(gen, task, prompt_set, [examples[p] for p in prompts], rounds=2, seed_key=keys)
            finally:
                model.train(was_training)
        second = episodes.generations[1]
        log_self_correction(trainer, episodes.trajectories, "train" if was_training else "eval")
        return {
            "prompt_ids": [g.prompt_ids for g in second],
            "completion_ids": [g.token_ids for g in second],
            "logprobs": [g.token_logprobs for g in second],
            "first_reward": [t.rounds[0].reward for t in episodes.trajectories],
            "first_correct": [t.rounds[0].correct for t in episodes.trajectories],
        }

    return rollout


def check_options(args: GRPOEpisodeConfig, cfg) -> None:
    if args.generation_backend not in ("selfcorrect", "trl"):
        vllm = (
            " (GRPO reaches vLLM through TRL: generation_backend trl with use_vllm true)"
            if args.generation_backend == "vllm"
            else ""
        )
        raise UserError(f"generation_backend must be selfcorrect or trl (got '{args.generation_backend}'){vllm}")
    if args.first_attempt == "trace" and (args.alpha != 0 or args.abandon_penalty != 0):
        raise UserError(
            "first_attempt trace gives every sample of a group the same first attempt, so alpha and abandon_penalty "
            "shift all its rewards alike and GRPO's group baseline removes them: set them to 0, or use first_attempt on_policy"
        )
    if cfg.temperature <= 0:
        raise UserError("GRPO needs temperature > 0 (sampled groups)")
    if args.generation_backend == "trl":
        if args.first_attempt == "on_policy":
            raise UserError("first_attempt on_policy needs generation_backend selfcorrect (TRL samples one turn)")
        return
    unsupported = {
        "use_vllm": cfg.use_vllm,
        "use_transformers_continuous_batching": cfg.use_transformers_continuous_batching,
        "top_k": cfg.top_k not in (None, 0),
        "min_p": cfg.min_p is not None,
        "repetition_penalty": cfg.repetition_penalty != 1.0,
        # TrainingArguments' fsdp, or an FSDP config given to accelerate launch (which sets only the
        # env): every forward under FSDP is a collective, so ranks decoding different lengths would
        # hang, and unwrap_model_for_generation gathers ZeRO-3 weights only. TRL's generation syncs
        # the ranks (transformers' synced_gpus).
        "fsdp": bool(cfg.fsdp) or env_flag(dict(os.environ), "ACCELERATE_USE_FSDP"),
    }
    bad = [k for k, on in unsupported.items() if on]
    if bad:
        raise UserError(f"generation_backend selfcorrect does not support {', '.join(bad)}: set generation_backend: trl")


def build_dataset(setup, args: GRPOEpisodeConfig, cfg, task, prompt_set, tokenizer):
    """(prompts as text, TRL rollout_func or None). On-policy: each prompt is a rendered first turn
    and the rollout runs the two-round episode; trace: each prompt is data_gen's revision prompt."""
    path, limit = setup.data.dataset_path, setup.data.limit
    rollout = None
    if args.first_attempt == "on_policy":
        if prompt_set.external:
            raise UserError("on-policy GRPO trains intrinsic self-correction: use a prompt set without external feedback")
        rows = load_rows(path, ("example",), limit, optional=PROVENANCE)
        check_provenance(rows, path, task.name, prompt_set.name)  # first turns are rendered afresh
        examples = {}

        def first_turn(r):
            ex = Example.from_dict(json.loads(r["example"]))
            text = render_chat(
                tokenizer, [{"role": "user", "content": prompt_set.first_turn(ex.question)}], prompt_set.first_prefill
            )
            examples[text] = ex  # identical first turns are the same question: one example serves both
            return {"prompt": text}

        dataset = rows.map(first_turn, remove_columns=list(PROVENANCE))
        rollout = make_rollout_func(tokenizer, cfg, task, prompt_set, examples)
    else:
        rows = load_rows(path, ("revision_prompt", "example", "first_reward", "first_correct"), limit, optional=PROVENANCE)
        check_provenance(rows, path, task.name, prompt_set.name, prompt_set.version)
        dataset = rows.map(
            lambda r: {"prompt": render_prompt(tokenizer, r["revision_prompt"])},
            remove_columns=["revision_prompt", *PROVENANCE],
        )
        if args.generation_backend == "selfcorrect":
            rollout = make_rollout_func(tokenizer, cfg)
    return dataset, rollout


def config_types() -> list[type]:
    """The configs this entry point parses (recipes and tests read them here)."""
    from trl import GRPOConfig

    return training_config_types(GRPOEpisodeConfig, GRPOConfig)


def main(argv: list[str]) -> None:
    from trl import GRPOTrainer

    # ---- options, checked before anything loads
    setup, args, cfg = parse_training(config_types(), argv, prog="train/grpo.py", description=__doc__)
    check_options(args, cfg)
    task, prompt_set = task_and_prompt_set(setup.task)
    resume = prepare_run("grpo", setup, cfg)
    tokenizer = load_tokenizer(setup.model.model_name_or_path, cfg.trust_remote_code, padding_side="left")

    # ---- data: prompts (and, on-policy, the two-round rollout that completes them)
    dataset, rollout = build_dataset(setup, args, cfg, task, prompt_set, tokenizer)

    # ---- model and trainer
    reward = RevisionReward(task, args.alpha, args.abandon_penalty)
    model, peft_config = load_policy(setup.model, cfg.trust_remote_code)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental; we pin its contract in tests
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=cfg,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
    )
    objective = (
        f"GRPO (beta={cfg.beta}) on the revision turn, first attempt {args.first_attempt.replace('_', '-')}; "
        f"reward = r2 + {args.alpha} * (r2 - r1) - {args.abandon_penalty} * [correct first answer abandoned]"
    )

    # ---- train
    trainer.add_callback(mark_complete_callback())  # a resume takes only checkpoints marked complete
    snapshot = trainable_snapshot(trainer.model)
    with resumable(cfg.output_dir):
        trainer.train(resume_from_checkpoint=resume)

    # ---- save: adapter, tokenizer, resolved config, model card
    extra = {"last mean reward": last_mean_reward}
    save_trained(
        trainer,
        snapshot=snapshot,
        method="grpo",
        objective=objective,
        setup=setup,
        config_objs=setup.configs(args, cfg),
        tokenizer=tokenizer,
        extra=extra,
    )


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
