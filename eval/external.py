"""Grade responses produced elsewhere (another framework, an API model) with the same metrics.

    python -m eval.external --task bbq --dataset_path tests/fixtures/bbq --predictions preds.jsonl --output_dir out

Each line of preds.jsonl: {"id": "<task id>", "responses": ["round 1 text", "round 2 text", ...]}
(BBQ ids are "<category>/<example_id>"). Writes traces.jsonl, metrics.json, report.md and plots.
This command imports no model code unless the task's grader is a model (toxicity).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eval.config import EvalConfig, wandb_mode_for
from eval.evaluate import EVAL_OUTPUTS, evaluate_traces, run_info
from selfcorrect.cli import run_cli
from selfcorrect.config import DataConfig, OverwriteConfig, SplitConfig, TaskConfig
from selfcorrect.errors import UserError
from selfcorrect.examples import check_split
from selfcorrect.jsonl import read_rows, write_atomic, write_rows_atomic
from selfcorrect.parsing import parse_config
from selfcorrect.run_identity import check_run, data_identity
from selfcorrect.saved_config import config_to_dict
from selfcorrect.tasks import get_task
from selfcorrect.trace import Round, Trajectory


@dataclass
class ExternalConfig:
    """The predictions to grade."""

    predictions: str = field(default="", metadata={"help": "A .jsonl of {id, responses: [round 1, round 2, ...]}."})
    output_dir: str = field(default="outputs/external", metadata={"help": "Where traces, metrics and the report go."})

    def __post_init__(self) -> None:
        if not self.predictions:
            raise UserError("--predictions is required (a .jsonl of {id, responses})")


OUTPUTS = ["traces.jsonl", "traces.jsonl.tmp.*", "shards", *EVAL_OUTPUTS]


def grade_predictions(task, examples: dict, predictions_path: str, prompt_set_name: str) -> Iterator[dict[str, Any]]:
    """Stream trace rows for the predictions file, checking every line."""
    seen: set[str] = set()
    k = None
    for lineno, pred in enumerate(read_rows(predictions_path), 1):
        where = f"{predictions_path}:{lineno}"
        pid, responses = pred.get("id"), pred.get("responses")
        if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
            raise UserError(f"{where}: 'responses' must be a non-empty list of strings")
        if pid not in examples:
            raise UserError(f"{where}: id {pid!r} is not in the {task.name} dataset")
        if pid in seen:
            raise UserError(f"{where}: duplicate id {pid!r}")
        if k is not None and len(responses) != k:
            raise UserError(f"{where}: {len(responses)} rounds, earlier lines have {k}")
        seen.add(pid)
        k = len(responses)
        ex = examples[pid]
        rounds = [Round.graded(None, None, r, g) for r, g in zip(responses, task.grade_batch([ex] * k, responses))]
        yield Trajectory(id=pid, task=task.name, prompt_set=prompt_set_name, example=ex, rounds=rounds).to_dict()
    if not seen:
        raise UserError(f"{predictions_path}: no predictions")


def main(argv: list[str]) -> None:
    opts, data, split, ext, ev, ow = parse_config(
        [TaskConfig, DataConfig, SplitConfig, ExternalConfig, EvalConfig, OverwriteConfig],
        argv,
        defaults={"prompt_set": "external"},
        prog="python -m eval.external",
        description=__doc__,
    )
    wandb_mode_for(ev.report_to)
    if data.dataset_path is None:
        raise UserError("--dataset_path is required: the task's data the predictions answer")
    task = get_task(opts.task, opts.classifier, opts.threshold)
    check_split(task, data.dataset_path, split.split)
    examples = {ex.id: ex for ex in task.load(data.dataset_path, split.split)}
    settings = {
        "task": task.name,
        "dataset": data_identity(data.dataset_path),
        "split": split.split,
        "predictions": data_identity(ext.predictions),
    }
    check_run(ext.output_dir, "eval.external", settings, OUTPUTS, ow.overwrite)
    traces = os.path.join(ext.output_dir, "traces.jsonl")
    write_rows_atomic(traces, grade_predictions(task, examples, ext.predictions, opts.prompt_set))
    config = config_to_dict(opts, data, split, ext, ev, ow)
    write_atomic(os.path.join(ext.output_dir, "config.json"), json.dumps(config, indent=2))
    info = run_info(
        label=ev.label or os.path.basename(ext.predictions),
        model="external predictions",
        adapter=None,
        prompt_set=opts.prompt_set,
        dataset=data.dataset_path,
        split=split.split,
    )
    evaluate_traces(traces, task, info, ev, ext.output_dir, config)


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
