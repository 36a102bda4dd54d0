"""Scoring a traces file, for ``python -m eval`` and ``python -m eval.external``: traces.jsonl ->
metrics.json, items.jsonl, lm_eval_results.json, report.md and plots. No model code: a run that only
scores traces starts without torch."""

from __future__ import annotations

import datetime
import json
import os
import sys

from eval.aggregate import compute_metrics
from eval.config import EvalConfig
from eval.lm_eval_export import lm_eval_results
from eval.report import verdict, write_report
from selfcorrect.errors import UserError
from selfcorrect.jsonl import dumps, json_text, read_rows, write_atomic

EVAL_DEFAULTS = {"rounds": 5, "output_dir": "outputs/eval"}
# What eval writes besides the traces (deleted by --overwrite).
LM_EVAL_FILE = "lm_eval_results.json"  # each round in lm-evaluation-harness's results layout
EVAL_OUTPUTS = ["metrics.json", "items.jsonl", LM_EVAL_FILE, "report.md", "*.png", "probe.json", "config.json"]


def evaluate_traces(traces: str, task, info: dict, ev: EvalConfig, output_dir: str, config: dict) -> dict:
    """traces.jsonl -> metrics.json, items.jsonl (each example's outcome per round, for eval.compare's
    paired tests) + report.md + plots in output_dir."""
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


def run_info(
    *, label: str, model: str, adapter: str | None, prompt_set: str, dataset: str | None, split: str, heldout: bool | None = None
) -> dict:
    """What a report says about the run it shows (metrics.json's "run")."""
    info = {"label": label, "model": model, "adapter": adapter, "prompt_set": prompt_set, "dataset": dataset, "split": split}
    if heldout is not None:
        info["heldout"] = heldout
    return info
