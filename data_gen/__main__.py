"""Make self-correction traces with a model (K rounds, every round graded) and build SFT, DPO and RL data from them.

    python -m data_gen --config recipes/<model>/<task>/data_gen.yaml [--key value ...]

Runs a base model for K self-correction rounds on a task, scores every round, and writes into
output_dir: traces.jsonl (one line per example and sample), sft.jsonl, dpo.jsonl, rl.jsonl, a dataset
card (README.md) and the resolved config (config.json). Re-running with the same output_dir resumes.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

from data_gen.build import build_all, dataset_card
from data_gen.config import DataGenConfig
from selfcorrect.cli import run_cli
from selfcorrect.config import DataConfig, OverwriteConfig, RolloutConfig, SplitConfig, TaskConfig
from selfcorrect.device import process_state
from selfcorrect.jsonl import disk_full, read_rows, write_atomic
from selfcorrect.parsing import parse_config
from selfcorrect.saved_config import config_to_dict
from selfcorrect.tasks import task_and_prompt_set
from selfcorrect.trace import Trajectory
from selfcorrect.trace_run import generate_traces

# What data_gen writes besides the traces (deleted by --overwrite).
DATASET_OUTPUTS = ["sft.jsonl", "dpo.jsonl", "rl.jsonl", "*.jsonl.tmp.*", "README.md", "config.json"]


def write_datasets(
    traces_path: str, out_dir: str, task, prompt_set, run: RolloutConfig, data: DataConfig, dg: DataGenConfig
) -> Counter:
    counts: Counter = Counter()
    paths = {k: os.path.join(out_dir, f"{k}.jsonl") for k in ("sft", "dpo", "rl")}
    tmps = {k: f"{p}.tmp.{os.getpid()}" for k, p in paths.items()}
    files = {k: open(t, "w", encoding="utf-8") for k, t in tmps.items()}
    try:
        for kind, row in build_all(read_rows(traces_path), task, prompt_set, dg.sft_sources, dg.dpo_sources):
            files[kind].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[(kind, row.get("source", "first_turn"))] += 1
    except BaseException as e:  # no half-written dataset survives a failure
        for k, f in files.items():
            f.close()
            os.remove(tmps[k])
        if isinstance(e, OSError) and disk_full(e, out_dir):
            raise disk_full(e, f"the datasets in {out_dir}", f"the traces in {traces_path} are kept") from None
        raise
    for f in files.values():
        f.close()
    for k in paths:
        os.replace(tmps[k], paths[k])
    info = {
        "source model": run.model_name_or_path + (f" + adapter {run.adapter}" if run.adapter else ""),
        "task": task.name,
        "dataset": data.dataset_path or getattr(task, "hub_id", None),
        "prompt set": f"{prompt_set.name} (v{prompt_set.version})",
        "rounds K": run.rounds,
        "samples per example": run.samples,
        "decoding": "greedy" if run.temperature == 0 else f"temperature {run.temperature}, top_p {run.top_p}",
        "SFT sources": ", ".join(dg.sft_sources),
        "DPO sources": ", ".join(dg.dpo_sources),
    }
    write_atomic(os.path.join(out_dir, "README.md"), dataset_card(info, counts))
    return counts


def summary(traces_path: str) -> str:
    """Accuracy per round and the right/wrong transitions, for the terminal."""
    n, correct, w2r, r2w = 0, None, None, None
    for row in read_rows(traces_path):
        t = Trajectory.from_dict(row)
        c = [r.correct for r in t.rounds]
        if correct is None:
            correct, w2r, r2w = [0] * len(c), [0] * len(c), [0] * len(c)
        n += 1
        for r, ok in enumerate(c):
            correct[r] += ok
            if r:
                w2r[r] += ok and not c[r - 1]
                r2w[r] += c[r - 1] and not ok
    if not n:
        return "no traces"
    lines = [f"{n} trajectories; accuracy per round: " + "  ".join(f"r{i + 1}={k / n:.3f}" for i, k in enumerate(correct))]
    lines += [f"round {r}->{r + 1}: wrong->right {w2r[r]}, right->wrong {r2w[r]}" for r in range(1, len(correct))]
    return "\n".join(lines)


CONFIG_TYPES = [TaskConfig, DataConfig, SplitConfig, RolloutConfig, DataGenConfig, OverwriteConfig]


def main(argv: list[str]) -> None:
    opts, data, split, run, dg, ow = parse_config(
        CONFIG_TYPES,
        argv,
        prog="python -m data_gen",
        description=__doc__,
    )
    task, prompt_set = task_and_prompt_set(opts)
    traces = generate_traces(
        run,
        data,
        split,
        task,
        prompt_set,
        "data_gen",
        owned=DATASET_OUTPUTS,
        extra_settings={"sft_sources": dg.sft_sources, "dpo_sources": dg.dpo_sources},
        overwrite=ow.overwrite,
    )
    if not process_state().is_main_process:
        return
    write_atomic(
        os.path.join(run.output_dir, "config.json"), json.dumps(config_to_dict(opts, data, split, run, dg, ow), indent=2)
    )
    counts = write_datasets(traces, run.output_dir, task, prompt_set, run, data, dg)
    print(summary(traces), file=sys.stderr)
    totals: Counter = Counter()
    for (kind, _), k in counts.items():
        totals[kind] += k
    print(
        f"wrote {traces}, sft.jsonl ({totals['sft']}), dpo.jsonl ({totals['dpo']}), rl.jsonl ({totals['rl']}) "
        f"in {run.output_dir}",
        file=sys.stderr,
    )


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
