"""One report over several eval runs (base with intrinsic prompting, SFT, DPO, GRPO, SCoRe, ...).

    python -m eval.compare --runs runs/base runs/sft runs/dpo --output_dir runs/compare [--labels base sft dpo]

The first run is the reference in the verdict lines. Reads each run's metrics.json and imports no
model code. Runs must share the task, the number of rounds K and the data; labels must be distinct.
Writes report.md, comparison.json and the plots with every run on the same axes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from eval.report import convergence_cell, write_report
from selfcorrect.config import parse_config
from selfcorrect.errors import UserError, run_cli
from selfcorrect.jsonl import write_atomic


@dataclass
class CompareConfig:
    """Runs to compare."""

    runs: list[str] = field(
        default_factory=list, metadata={"help": "Eval output dirs (or metrics.json files); the first is the reference."}
    )
    output_dir: str = field(default="outputs/compare", metadata={"help": "Where report.md, comparison.json and plots go."})
    labels: list[str] | None = field(default=None, metadata={"help": "Names for the runs, in order (default: each run's label)."})

    def __post_init__(self) -> None:
        if not self.runs:
            raise UserError("give the eval runs to compare: --runs DIR [DIR ...]")
        if self.labels is not None and len(self.labels) != len(self.runs):
            raise UserError(f"{len(self.labels)} labels for {len(self.runs)} runs")


REQUIRED = ("run", "headline", "per_round", "transitions", "convergence")


def load_run(path: str) -> dict:
    f = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    if not os.path.isfile(f):
        raise UserError(f"no metrics.json in {path} (run python -m eval there first)")
    with open(f, encoding="utf-8") as fh:
        try:
            m = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{f}: not valid JSON ({getattr(e, 'msg', e)})") from None
    missing = [k for k in REQUIRED if not isinstance(m, dict) or k not in m]
    if missing:
        raise UserError(f"{f}: not a selfcorrect metrics.json (missing {', '.join(missing)}); re-run python -m eval")
    return m


def check_comparable(runs: list[tuple[str, dict]]) -> None:
    """Refuse runs that cannot share a table: another task, another K, other data; duplicate labels."""
    labels = [label for label, _ in runs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"duplicate run label(s) {', '.join(dup)}: pass --labels with distinct names")
    ref_label, ref = runs[0]
    for label, m in runs[1:]:
        for key, what in (
            ("task", "task"),
            ("rounds", "number of rounds K"),
            ("dataset", "dataset"),
            ("n_examples", "number of examples"),
        ):
            if m["run"].get(key) != ref["run"].get(key):
                raise UserError(f"runs differ in {what}: {ref_label} has {ref['run'].get(key)}, {label} has {m['run'].get(key)}")


def summary_table(runs: list[tuple[str, dict]]) -> list[dict]:
    """Per run: n, K, round-1 and round-K accuracy and the task's report columns with intervals,
    convergence round, right->wrong and wrong->right rates."""
    out = []
    for label, m in runs:
        h = m["headline"]
        first, last = m["per_round"][0], m["per_round"][-1]
        row = {
            "run": label,
            "n": m["run"]["n_examples"],
            "K": m["run"]["rounds"],
            "acc_round1": h["values"][0],
            "acc_round1_ci": h["ci95"][0],
            "acc_roundK": h["values"][-1],
            "acc_roundK_ci": h["ci95"][-1],
            "unparsed_roundK": last["task"].get("unparsed_rate"),
            "convergence_round": m["convergence"]["convergence_round"],
            "right_to_wrong": m["transitions"]["first_to_last"].get("right_to_wrong_rate"),
            "wrong_to_right": m["transitions"]["first_to_last"].get("wrong_to_right_rate"),
        }
        for key, _ in m["run"].get("report_columns", []):
            row[f"{key}_round1"], row[f"{key}_round1_ci"] = first["task"].get(key), first.get("intervals", {}).get(key)
            row[f"{key}_roundK"], row[f"{key}_roundK_ci"] = last["task"].get(key), last.get("intervals", {}).get(key)
        out.append(row)
    return out


def format_table(rows: list[dict], columns: list[list[str]]) -> str:
    def v(x, ci=None):
        if x is None:
            return "n/a"
        return f"{x:.3f} [{ci[0]:.2f},{ci[1]:.2f}]" if ci else f"{x:.3f}"

    head = ["run", "n", "K", "acc r1 [95% CI]", "acc rK [95% CI]"]
    for _, title in columns:
        head += [f"{title} r1", f"{title} rK"]
    head += ["unparsed rK", "conv. round", "right->wrong", "wrong->right"]
    table = [head]
    for r in rows:
        cells = [
            r["run"],
            str(r["n"]),
            str(r["K"]),
            v(r["acc_round1"], r["acc_round1_ci"]),
            v(r["acc_roundK"], r["acc_roundK_ci"]),
        ]
        for key, _ in columns:
            cells += [v(r[f"{key}_round1"], r[f"{key}_round1_ci"]), v(r[f"{key}_roundK"], r[f"{key}_roundK_ci"])]
        cells += [
            v(r["unparsed_roundK"]),
            convergence_cell(r["convergence_round"], r["K"]),
            v(r["right_to_wrong"]),
            v(r["wrong_to_right"]),
        ]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def main(argv: list[str]) -> None:
    (a,) = parse_config([CompareConfig], argv, prog="python -m eval.compare", description=__doc__)
    metrics = [load_run(r) for r in a.runs]
    labels = a.labels or [m["run"].get("label") or os.path.basename(os.path.normpath(r)) for m, r in zip(metrics, a.runs)]
    runs = list(zip(labels, metrics))
    check_comparable(runs)
    report = write_report(runs, a.output_dir, "Self-correction: trained checkpoints vs intrinsic prompting")
    table = summary_table(runs)
    write_atomic(os.path.join(a.output_dir, "comparison.json"), json.dumps(table, indent=2))
    print(format_table(table, metrics[0]["run"].get("report_columns", [])))
    print(f"\nreport: {report}")


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
