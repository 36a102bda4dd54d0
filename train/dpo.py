"""DPO on correction pairs (dpo.jsonl from data_gen): the better revision over the worse one.

    accelerate launch --config_file accelerate_configs/cpu.yaml train/dpo.py --config recipes/demo/dpo.yaml

With LoRA no separate reference model is loaded: the base with the adapter disabled is the
reference (TRL's behaviour with a peft_config). Rows are conversational: ``prompt`` ends with the
correction instruction, ``chosen``/``rejected`` hold one assistant message each.
"""

from __future__ import annotations

from data_gen.config import parse_config
from data_gen.errors import run_cli
from train.common import TrainArgs, device_overrides, load_policy, load_rows, load_tokenizer_for_training, save_outputs


def main(argv: list[str]) -> None:
    from trl import DPOConfig, DPOTrainer

    args, cfg = parse_config([TrainArgs, DPOConfig], argv + device_overrides(TrainArgs, DPOConfig))
    tokenizer = load_tokenizer_for_training(args, cfg.trust_remote_code)
    dataset = load_rows(args.dataset_path, ("prompt", "chosen", "rejected"), args.max_train_samples)
    model, peft_config = load_policy(args, cfg.bf16, cfg.trust_remote_code)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    reference = "base with the adapter disabled" if args.use_peft else "frozen copy of the base"
    objective = (f"DPO ({cfg.loss_type}, beta={cfg.beta}, Rafailov et al. 2023): raise log pi(chosen)/ref(chosen) - "
                 f"log pi(rejected)/ref(rejected) for every pair; reference = {reference}")  # fmt: skip
    accs = [h["rewards/accuracies"] for h in trainer.state.log_history if "rewards/accuracies" in h]
    save_outputs(trainer.save_model, tokenizer, cfg.output_dir, "dpo", objective, args, (args, cfg),
                 {"steps": trainer.state.global_step, "last reward accuracy": f"{accs[-1]:.3f}" if accs else "n/a"},
                 cfg.trust_remote_code, trainer.accelerator.is_main_process)  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
