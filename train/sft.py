"""SFT on self-correction traces (sft.jsonl from data_gen), loss on assistant turns only.

    accelerate launch --config_file accelerate_configs/cpu.yaml train/sft.py --config recipes/demo/sft.yaml

Conversations are tokenised here with an assistant mask computed from the chat template itself
(see train.common.assistant_spans), so any prefix-consistent template works, including ones without
``{% generation %}`` markers. ``train_on: final_turn`` puts the loss on the last revision only.

Speed: ``padding_free: true`` concatenates each batch into one sequence with per-conversation
position ids (no pad tokens; the same batches and the same loss as padded training, see
tests/test_sft_modes.py); ``packing: true`` (TRL's best-fit packing, implies padding-free)
also refills batches up to ``max_length`` tokens. Attention then needs to know where conversations
start: flash_attention_2 reads the boundaries directly; sdpa/eager build a block-diagonal mask over
the whole packed batch, exact but quadratic in its total length. bench/sft_training.py measures both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_gen.config import parse_config
from data_gen.errors import UserError, run_cli
from train.common import (
    TrainArgs,
    device_overrides,
    load_policy,
    load_rows,
    load_tokenizer_for_training,
    save_outputs,
    tokenize_conversation,
)


@dataclass
class SFTArgs(TrainArgs):
    train_on: str = field(
        default="all_assistant",
        metadata={"help": "all_assistant: every assistant turn carries loss; final_turn: only the last revision."},
    )


def build_dataset(rows, tokenizer, train_on: str, max_length: int | None):
    if train_on not in ("all_assistant", "final_turn"):
        raise UserError(f"train_on must be all_assistant or final_turn (got '{train_on}')")
    tokenized = rows.map(
        lambda r: tokenize_conversation(tokenizer, r["messages"], train_on == "final_turn", max_length),
        remove_columns=rows.column_names,
        desc="tokenising conversations",
    )
    # A conversation whose assistant turns were all cut by max_length carries no loss: drop it here,
    # so padded, padding-free and packed runs see the same rows.
    kept = tokenized.filter(lambda r: 1 in r["assistant_masks"], desc="dropping rows truncated before any answer")
    if len(kept) == 0:
        raise UserError(f"every conversation loses all its assistant turns at max_length={max_length}: raise max_length")
    return kept


def main(argv: list[str]) -> None:
    from trl import SFTConfig, SFTTrainer

    args, cfg = parse_config([SFTArgs, SFTConfig], argv + device_overrides())
    tokenizer = load_tokenizer_for_training(args, cfg.trust_remote_code)
    rows = load_rows(args.dataset_path, ("messages",), args.max_train_samples)
    dataset = build_dataset(rows, tokenizer, args.train_on, cfg.max_length)
    if cfg.padding_free and not cfg.packing:
        cfg.max_length = None  # build_dataset already truncated; TRL refuses max_length with padding_free alone
    model, peft_config = load_policy(args, cfg.bf16, cfg.trust_remote_code)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    if trainer.accelerator.is_main_process:
        objective = "cross-entropy on " + ("the final revision turn" if args.train_on == "final_turn" else "every assistant turn")
        save_outputs(trainer.model, tokenizer, cfg.output_dir, "sft", objective, args, (args, cfg),
                     {"steps": trainer.state.global_step, "final train loss": _last_loss(trainer)},
                     cfg.trust_remote_code)  # fmt: skip


def _last_loss(trainer) -> str:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return f"{losses[-1]:.4f}" if losses else "n/a"


if __name__ == "__main__":
    run_cli(main)
