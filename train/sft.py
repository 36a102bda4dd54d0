"""SFT on self-correction traces (sft.jsonl from data_gen).

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/sft.py --config recipes/demo/sft.yaml

Objective: cross-entropy on the tokens the model produces in the correct assistant turns of each
conversation (``train_on: correct_turns``, the default). Wrong earlier answers stay in the context,
masked, so the model learns to revise them, not to repeat them; the prompt set's prefill of a turn
("The single most likely answer choice is") is given at eval, so it is masked too, and the loss
starts at the first token the model generates and ends with its end-of-turn token.
``train_on: final_turn`` trains the last turn only; ``all_assistant`` trains every assistant turn,
wrong ones included (what plain SFT on whole conversations would do; kept for comparison).

Conversations are tokenised here with an assistant mask computed from the chat template itself
(see selfcorrect.chat.assistant_spans), so any prefix-consistent template works, including ones without
``{% generation %}`` markers.

Speed: ``padding_free: true`` concatenates each batch into one sequence with per-conversation
position ids (no pad tokens; the same batches and the same loss as padded training, see
tests/test_sft_modes.py); ``packing: true`` (TRL's best-fit packing, implies padding-free)
also refills batches up to ``max_length`` tokens. Attention then needs to know where conversations
start: flash_attention_2 reads the boundaries directly; sdpa/eager build a block-diagonal mask over
the whole packed batch, exact but quadratic in its total length. bench/sft_training.py measures both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfcorrect.chat import tokenize_conversation
from selfcorrect.cli import run_cli
from selfcorrect.errors import UserError
from selfcorrect.modeling import load_policy, load_tokenizer
from selfcorrect.tasks import task_and_prompt_set
from train.checkpoints import mark_complete_callback
from train.data import PROVENANCE, check_provenance, load_rows
from train.outputs import save_trained, trainable_snapshot
from train.run import parse_training, prepare_run, resumable, training_config_types

OBJECTIVES = {
    "correct_turns": "cross-entropy on the model-produced tokens of every correct assistant turn (wrong turns and prefills masked)",
    "final_turn": "cross-entropy on the model-produced tokens of the final assistant turn (prefill masked)",
    "all_assistant": "cross-entropy on the model-produced tokens of every assistant turn, wrong ones included (prefills masked)",
}


@dataclass
class SFTLossConfig:
    """Which tokens carry the SFT loss."""

    train_on: Literal["correct_turns", "final_turn", "all_assistant"] = field(
        default="correct_turns",
        metadata={
            "help": "correct_turns: loss on correct assistant turns (wrong ones are context); final_turn: the last "
            "turn only; all_assistant: every assistant turn, wrong ones included."
        },
    )


def turns_to_train(row: dict, train_on: str) -> list[bool] | None:
    """Which assistant turns of an sft.jsonl row carry loss (None = all)."""
    n = sum(m["role"] == "assistant" for m in row["messages"])
    if train_on == "all_assistant":
        return None
    if train_on == "final_turn":
        return [False] * (n - 1) + [True]
    if row.get("train_turns") is None:
        raise UserError(
            "sft rows lack 'train_turns' (made by an older data_gen): re-run data_gen, or set train_on: all_assistant"
        )
    return list(row["train_turns"])


def build_dataset(rows, tokenizer, train_on: str, max_length: int | None):
    def tokenize(r):
        return tokenize_conversation(tokenizer, r["messages"], turns_to_train(r, train_on), r.get("prefills"), max_length)

    tokenized = rows.map(tokenize, remove_columns=rows.column_names, desc="tokenising conversations")
    # A conversation whose trained turns were all cut by max_length carries no loss: drop it here,
    # so padded, padding-free and packed runs see the same rows.
    kept = tokenized.filter(lambda r: 1 in r["assistant_masks"], desc="dropping rows truncated before any answer")
    if len(kept) == 0:
        raise UserError(f"every conversation loses all its trained turns at max_length={max_length}: raise max_length")
    return kept


def config_types() -> list[type]:
    """The configs this entry point parses (recipes and tests read them here)."""
    from trl import SFTConfig

    return training_config_types(SFTLossConfig, SFTConfig)


def main(argv: list[str]) -> None:
    from trl import SFTTrainer

    # ---- options, checked before anything loads
    setup, args, cfg = parse_training(config_types(), argv, prog="train/sft.py", description=__doc__)
    resume = prepare_run("sft", setup, cfg)

    # ---- data: conversations tokenised with the mask of the turns that carry loss
    tokenizer = load_tokenizer(setup.model.model_name_or_path, cfg.trust_remote_code, padding_side="right")
    task, prompt_set = task_and_prompt_set(setup.task)
    rows = load_rows(setup.data.dataset_path, ("messages",), setup.data.limit, optional=("train_turns", "prefills", *PROVENANCE))
    check_provenance(rows, setup.data.dataset_path, task.name, prompt_set.name, prompt_set.version)
    dataset = build_dataset(rows.remove_columns(list(PROVENANCE)), tokenizer, args.train_on, cfg.max_length)
    if cfg.padding_free and not cfg.packing:
        cfg.max_length = None  # build_dataset already truncated; TRL refuses max_length with padding_free alone

    # ---- model and trainer
    model, peft_config = load_policy(setup.model, cfg.trust_remote_code)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)

    # ---- train
    trainer.add_callback(mark_complete_callback())  # a resume takes only checkpoints marked complete
    snapshot = trainable_snapshot(trainer.model)
    with resumable(cfg.output_dir):
        trainer.train(resume_from_checkpoint=resume)

    # ---- save: adapter, tokenizer, resolved config, model card
    save_trained(
        trainer,
        snapshot=snapshot,
        method="sft",
        objective=OBJECTIVES[args.train_on],
        setup=setup,
        config_objs=setup.configs(args, cfg),
        tokenizer=tokenizer,
        extra={},
    )


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
