"""DPO on correction pairs (dpo.jsonl from data_gen): the better revision over the worse one.

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/dpo.py --config recipes/demo/dpo.yaml

With LoRA no separate reference model is loaded: the base with the adapter disabled is the
reference (TRL's behaviour with a peft_config). Rows are conversational: ``prompt`` ends with the
correction instruction, ``chosen``/``rejected`` hold one assistant message each.
"""

from __future__ import annotations

from selfcorrect.errors import run_cli
from selfcorrect.tasks import task_and_prompt_set
from train.common import (
    PROVENANCE,
    check_provenance,
    load_policy,
    load_rows,
    load_tokenizer_for_training,
    parse_training,
    prepare_run,
    train_and_save,
)


def main(argv: list[str]) -> None:
    from trl import DPOConfig, DPOTrainer

    setup, cfg = parse_training([DPOConfig], argv, prog="train/dpo.py", description=__doc__)
    resume = prepare_run("dpo", setup, cfg)
    tokenizer = load_tokenizer_for_training(setup, cfg.trust_remote_code)
    task, prompt_set = task_and_prompt_set(setup.task)
    rows = load_rows(setup.data.dataset_path, ("prompt", "chosen", "rejected"), setup.data.limit, optional=PROVENANCE)
    check_provenance(rows, setup.data.dataset_path, task.name, prompt_set.name, prompt_set.version)
    model, peft_config = load_policy(setup.model, cfg.trust_remote_code)
    trainer = DPOTrainer(
        model=model,
        args=cfg,
        train_dataset=rows.remove_columns(["task", "prompt_set"]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    reference = "base with the adapter disabled" if setup.model.use_peft else "frozen copy of the base"
    objective = (
        f"DPO ({cfg.loss_type}, beta={cfg.beta}, Rafailov et al. 2023): raise log pi(chosen)/ref(chosen) - "
        f"log pi(rejected)/ref(rejected) for every pair; reference = {reference}"
    )

    def last_accuracy(history):
        accs = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
        return f"{accs[-1]:.3f}" if accs else "n/a"

    train_and_save(
        trainer,
        resume,
        "dpo",
        objective,
        setup,
        (setup.model, setup.data, setup.task, setup.train, cfg),
        tokenizer,
        {"last reward accuracy": last_accuracy},
    )


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
