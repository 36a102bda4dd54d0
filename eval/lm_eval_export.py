"""Each round's results in lm-evaluation-harness's results layout (``lm_eval_results.json``).

Dashboards and scripts built for lm-evaluation-harness read its results file: ``results`` maps a
task name to ``{"alias": name, "<metric>,<filter>": value, "<metric>_stderr,<filter>": ...}``, beside
``configs``, ``versions``, ``n-shot``, ``n-samples`` and the run's ``config``. Here every round is one
task (``selfcorrect_<task>_<prompt set>_round<r>``) and the rounds form one group, so a K-round run
reads as K tasks. Values are this project's metrics under their own names (``accuracy``, BBQ's
``bias_ambiguous``, ...); the harness's "none" filter is the only one. Standard errors are "N/A", as
the harness writes when it has none: the intervals here are bootstrap percentiles (metrics.json),
not mean +- stderr.
"""

from __future__ import annotations

import re
from typing import Any


def lm_eval_results(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The lm-evaluation-harness results dict of one eval run (pure: metrics.json in)."""
    run = metrics["run"]
    group = re.sub(r"[^A-Za-z0-9]+", "_", f"selfcorrect_{run['task']}_{run.get('prompt_set') or 'prompts'}").strip("_")
    n = run["n_examples"]
    results, configs = {}, {}
    for entry in metrics["per_round"]:
        name = f"{group}_round{entry['round']}"
        values = {k: v for k, v in entry["task"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        results[name] = {"alias": name}
        for key, value in values.items():
            results[name][f"{key},none"] = value
            results[name][f"{key}_stderr,none"] = "N/A"
        configs[name] = {
            "task": name,
            "tag": [group],
            "dataset_path": run.get("dataset"),
            "output_type": "generate_until",
            "num_fewshot": 0,
            "metadata": {"round": entry["round"], "rounds": run["rounds"], "prompt_set": run.get("prompt_set")},
        }
    model_args = f"pretrained={run.get('model')}" + (f",peft={run['adapter']}" if run.get("adapter") else "")
    return {
        "results": results,
        "group_subtasks": {group: list(results)},
        "configs": configs,
        "versions": {name: 1.0 for name in results},
        "n-shot": {name: 0 for name in results},
        "higher_is_better": {name: {"accuracy": True} for name in results},
        "n-samples": {name: {"original": n, "effective": n} for name in results},
        "config": {
            "model": "hf",
            "model_args": model_args,
            "batch_size": config.get("batch_size"),
            "random_seed": config.get("seed"),
            "gen_kwargs": {k: config[k] for k in ("temperature", "top_p", "max_new_tokens") if k in config},
        },
        "model_name": run.get("model"),
        "date": run.get("date"),
    }
