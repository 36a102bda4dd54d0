"""Evaluate a model (optionally with an adapter) over K self-correction rounds: per-round metrics, a report and plots.

    python -m eval --config recipes/<model>/<task>/eval.yaml [--key value ...]

Runs K self-correction rounds (default 5) with the data_gen rollout engine and writes into
output_dir: traces.jsonl, metrics.json, items.jsonl (each example's answers per round, which
eval.compare pairs), report.md and PNG plots (accuracy with intervals, flip rate,
option entropy, probe activation, the task's own metrics). Re-running with the same output_dir and the
same settings resumes; other settings stop with one line (``--overwrite true`` starts fresh).
"""

from __future__ import annotations

import json
import os

from eval.config import EvalConfig, wandb_mode_for
from eval.evaluate import EVAL_DEFAULTS, EVAL_OUTPUTS, default_label, evaluate_traces, run_info
from eval.probe import ConceptProbe, file_statements
from selfcorrect.cli import run_cli
from selfcorrect.config import DataConfig, OverwriteConfig, RolloutConfig, SplitConfig, TaskConfig
from selfcorrect.device import process_state
from selfcorrect.errors import UserError
from selfcorrect.examples import load_examples
from selfcorrect.jsonl import write_atomic
from selfcorrect.parsing import parse_config
from selfcorrect.saved_config import config_to_dict
from selfcorrect.tasks import task_and_prompt_set
from selfcorrect.trace_run import generate_traces

CONFIG_TYPES = [TaskConfig, DataConfig, SplitConfig, RolloutConfig, EvalConfig, OverwriteConfig]


def main(argv: list[str]) -> None:
    opts, data, split, run, ev, ow = parse_config(
        CONFIG_TYPES, argv, defaults=EVAL_DEFAULTS, prog="python -m eval", description=__doc__
    )
    wandb_mode_for(ev.report_to)
    evaluate_model(opts, data, split, run, ev, ow)


def evaluate_model(
    opts: TaskConfig, data: DataConfig, split: SplitConfig, run: RolloutConfig, ev: EvalConfig, ow: OverwriteConfig
) -> None:
    """K rounds with the model (and adapter) ``run`` names, then ``evaluate_traces`` on the main process."""
    task, prompt_set = task_and_prompt_set(opts)
    probe, probe_settings = None, {}
    if ev.probe:
        if ev.probe_statements == "task":
            groups = task.probe_statements(list(load_examples(task, data, split)))
            if groups is None:
                raise UserError(
                    f"task {task.name} has no probe statements of its own: pass --probe_statements file.jsonl of {{text, label}}"
                )
        else:
            groups = file_statements(ev.probe_statements)
        probe = ConceptProbe(groups, ev.probe_statements, ev.probe_layer, ev.probe_max_statements, run.seed)
        probe_settings = {
            "probe_statements": ev.probe_statements,
            "probe_layer": ev.probe_layer,
            "probe_max_statements": ev.probe_max_statements,
        }
    traces = generate_traces(
        run,
        data,
        split,
        task,
        prompt_set,
        "eval",
        probe=probe,
        extra_settings=probe_settings,
        owned=EVAL_OUTPUTS,
        overwrite=ow.overwrite,
    )
    if process_state().is_main_process:
        config = config_to_dict(opts, data, split, run, ev, ow)
        write_atomic(os.path.join(run.output_dir, "config.json"), json.dumps(config, indent=2))
        info = run_info(
            label=ev.label or default_label(run.adapter),
            model=run.model_name_or_path,
            adapter=run.adapter,
            prompt_set=prompt_set.name,
            dataset=data.dataset_path,
            split=split.split,
            heldout=split.heldout,
        )
        info.update(run.stop_settings())  # only a run that stops says how (a run without the rule is unchanged)
        evaluate_traces(traces, task, info, ev, run.output_dir, config)


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
