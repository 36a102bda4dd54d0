"""Evaluate a model (optionally with an adapter) over K self-correction rounds: per-round metrics, a report and plots.

    python -m eval --config recipes/<model>/<task>/eval.yaml [--key value ...]

Runs K self-correction rounds (default 5) with the data_gen rollout engine and writes into
output_dir: traces.jsonl, metrics.json, items.jsonl (each example's answers per round, which
eval.compare pairs), report.md and PNG plots (accuracy with intervals, flip rate,
option entropy, probe activation, the task's own metrics). Re-running with the same output_dir and the
same settings resumes; other settings stop with one line (``--overwrite true`` starts fresh).
"""

from __future__ import annotations

import datetime
import json
import os
import sys

from eval.config import EvalConfig, wandb_mode_for
from selfcorrect.config import (
    DataSource,
    OverwriteOption,
    RolloutOptions,
    SplitOptions,
    TaskOptions,
    config_to_dict,
    parse_config,
)
from selfcorrect.device import process_state
from selfcorrect.errors import UserError, run_cli
from selfcorrect.jsonl import json_text, read_rows, write_atomic
from selfcorrect.tasks import task_and_prompt_set
from selfcorrect.trace_run import generate_traces, load_examples

EVAL_DEFAULTS = {"rounds": 5, "output_dir": "outputs/eval"}
# What eval writes besides the traces (deleted by --overwrite).
LM_EVAL_FILE = "lm_eval_results.json"  # each round in lm-evaluation-harness's results layout
EVAL_OUTPUTS = ["metrics.json", "items.jsonl", LM_EVAL_FILE, "report.md", "*.png", "probe.json", "config.json"]


def evaluate_traces(traces: str, task, info: dict, ev: EvalConfig, output_dir: str, config: dict) -> dict:
    """traces.jsonl -> metrics.json, items.jsonl (each example's outcome per round, for eval.compare's
    paired tests) + report.md + plots in output_dir."""
    from eval.aggregate import compute_metrics
    from eval.lm_eval_export import lm_eval_results
    from eval.report import verdict, write_report
    from selfcorrect.jsonl import dumps

    info = {**info, "date": datetime.date.today().isoformat()}
    items = os.path.join(output_dir, "items.jsonl")
    tmp = f"{items}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            seed = config.get("seed", 0)
            metrics = compute_metrics(
                read_rows(traces), task, info, ev.epsilon, ev.delta, ev.n_boot, seed, on_item=lambda r: f.write(dumps(r) + "\n")
            )
        os.replace(tmp, items)
    except ValueError as e:
        raise UserError(f"{traces}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    probe_file = os.path.join(output_dir, "probe.json")
    if os.path.exists(probe_file):
        with open(probe_file) as f:
            metrics["probe"] = {k: v for k, v in json.load(f).items() if k not in ("w", "b")}
    write_atomic(os.path.join(output_dir, "metrics.json"), json_text(metrics))
    write_atomic(os.path.join(output_dir, LM_EVAL_FILE), json_text(lm_eval_results(metrics, config)))
    report = write_report([(info["label"], metrics)], output_dir, f"Self-correction evaluation: {info['label']}")
    if ev.report_to == "wandb":
        _log_wandb(metrics, output_dir, config)
    print(verdict(info["label"], metrics), file=sys.stderr)
    print(f"wrote {os.path.join(output_dir, 'metrics.json')} and {report}", file=sys.stderr)
    return metrics


def _log_wandb(metrics: dict, out_dir: str, config: dict) -> None:
    import wandb

    run = wandb.init(project="selfcorrect-eval", name=metrics["run"]["label"], config=config)
    for entry, value in zip(metrics["per_round"], metrics["headline"]["values"]):
        run.log(
            {
                "round": entry["round"],
                "accuracy": value,
                **{f"task/{k}": v for k, v in entry["task"].items() if isinstance(v, (int, float))},
                **{f"uncertainty/{k}": v for k, v in entry["uncertainty"].items() if isinstance(v, (int, float))},
            }
        )
    for png in sorted(f for f in os.listdir(out_dir) if f.endswith(".png")):
        run.log({png[:-4]: wandb.Image(os.path.join(out_dir, png))})
    run.summary["convergence_round"] = metrics["convergence"]["convergence_round"]
    run.finish()


def default_label(adapter: str | None) -> str:
    """A run's name in reports without --label: its adapter's folder, or "base" for the model alone
    (so a comparison's base rows say so, whatever the model is called)."""
    return os.path.basename(os.path.normpath(adapter)) if adapter else "base"


CONFIG_TYPES = [TaskOptions, DataSource, SplitOptions, RolloutOptions, EvalConfig, OverwriteOption]


def main(argv: list[str]) -> None:
    opts, data, split, run, ev, ow = parse_config(
        CONFIG_TYPES,
        argv,
        defaults=EVAL_DEFAULTS,
        prog="python -m eval",
        description=__doc__,
    )
    wandb_mode_for(ev.report_to)
    task, prompt_set = task_and_prompt_set(opts)
    probe, probe_settings = None, {}
    if ev.probe:
        from eval.probe import ConceptProbe, file_statements

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
        label = ev.label or default_label(run.adapter)
        info = {
            "label": label,
            "model": run.model_name_or_path,
            "adapter": run.adapter,
            "prompt_set": prompt_set.name,
            "dataset": data.dataset_path,
            "split": split.split,
            "heldout": split.heldout,
        }
        evaluate_traces(traces, task, info, ev, run.output_dir, config)


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
