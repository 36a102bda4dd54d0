"""DPO on correction pairs (dpo.jsonl from data_gen): the better revision over the worse one.

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/dpo.py --config recipes/demo/dpo.yaml

With LoRA no separate reference model is loaded: the base with the adapter disabled is the
reference (TRL's behaviour with a peft_config). Rows are conversational: ``prompt`` ends with the
correction instruction, ``chosen``/``rejected`` hold one assistant message each.
"""

from __future__ import annotations

from selfcorrect.cli import run_cli
from selfcorrect.errors import UserError
from selfcorrect.modeling import load_policy, load_tokenizer
from selfcorrect.tasks import task_and_prompt_set
from train.checkpoints import mark_complete_callback
from train.data import PROVENANCE, check_provenance, load_rows
from train.outputs import save_trained, trainable_snapshot
from train.run import parse_training, prepare_run, resumable, training_config_types


def last_reward_accuracy(history: list[dict]) -> str:
    """The model card's last logged share of pairs the policy ranks as the data does.

    >>> last_reward_accuracy([{"rewards/accuracies": 0.5}, {"loss": 0.6}, {"rewards/accuracies": 0.75}])
    '0.750'
    """
    accs = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
    return f"{accs[-1]:.3f}" if accs else "n/a"


def config_types() -> list[type]:
    """The configs this entry point parses (recipes and tests read them here)."""
    from trl import DPOConfig

    return training_config_types(DPOConfig)


def main(argv: list[str]) -> None:
    from trl import DPOTrainer

    # ---- options, checked before anything loads
    setup, cfg = parse_training(config_types(), argv, prog="train/dpo.py", description=__doc__)
    resume = prepare_run("dpo", setup, cfg)

    # ---- data: conversational (prompt, chosen, rejected) pairs
    tokenizer = load_tokenizer(setup.model.model_name_or_path, cfg.trust_remote_code, padding_side="right")
    task, prompt_set = task_and_prompt_set(setup.task)
    rows = load_rows(setup.data.dataset_path, ("prompt", "chosen", "rejected"), setup.data.limit, optional=PROVENANCE)
    check_provenance(rows, setup.data.dataset_path, task.name, prompt_set.name, prompt_set.version)

    # ---- model and trainer (with LoRA, the reference is the base with the adapter disabled)
    model, peft_config = load_policy(setup.model, cfg.trust_remote_code)
    trainer = DPOTrainer(
        model=model,
        args=cfg,
        train_dataset=rows.remove_columns(["task", "prompt_set"]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if len(trainer.train_dataset) == 0:
        # TRL drops every pair whose prompt alone reaches max_length; the sampler then fails on 0 rows.
        raise UserError(
            f"max_length {cfg.max_length} leaves no DPO pair of {setup.data.dataset_path} to train on: each of its "
            f"{len(rows)} prompts alone is at least that many tokens (TRL drops such pairs): raise max_length"
        )
    reference = "base with the adapter disabled" if setup.model.use_peft else "frozen copy of the base"
    objective = (
        f"DPO ({cfg.loss_type}, beta={cfg.beta}, Rafailov et al. 2023): raise log pi(chosen)/ref(chosen) - "
        f"log pi(rejected)/ref(rejected) for every pair; reference = {reference}"
    )

    # ---- train
    trainer.add_callback(mark_complete_callback())  # a resume takes only checkpoints marked complete
    snapshot = trainable_snapshot(trainer.model)
    with resumable(cfg.output_dir):
        trainer.train(resume_from_checkpoint=resume)

    # ---- save: adapter, tokenizer, resolved config, model card
    extra = {"last reward accuracy": last_reward_accuracy}
    save_trained(
        trainer,
        snapshot=snapshot,
        method="dpo",
        objective=objective,
        setup=setup,
        config_objs=setup.configs(cfg),
        tokenizer=tokenizer,
        extra=extra,
    )


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
