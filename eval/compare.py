"""One report over several eval runs (base with intrinsic prompting, SFT, DPO, GRPO, SCoRe, ...).

    python -m eval.compare --runs runs/base runs/sft runs/dpo --output_dir runs/compare [--labels base sft dpo]

The first run is the reference in the verdict lines and the paired tests. Reads each run's
metrics.json and items.jsonl (each example's answers per round, written beside it by python -m eval)
and imports no model code. Runs must share the task, the number of rounds K, the data and the very
items graded (the example ids): paired tests compare each item with itself, so runs over different
items are refused rather than cut down to the items they share. Labels must be distinct.

Prints the per-run table, then, for every run against the reference, per round: the exact McNemar
test on correctness and on the per-item flip indicator (answer changed from the previous round) with
the paired difference and its 95% interval resampling the task's groups (BBQ: templates), under the
grader's reading and the strict one; the rounds and tokens each run saves per item against the
reference, with the sign test on per-item rounds, next to its accuracy difference at stop
(``compute_saved``); then the trivial baselines of a multiple-choice task (chance,
always the most frequent gold letter, always the "unknown" option where the task has one). With
``samples > 1`` an example is paired through its first sample.
Writes report.md, comparison.json and the plots with every run on the same axes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from eval.report import convergence_cell, write_report
from selfcorrect.cli import run_cli
from selfcorrect.config import OverwriteConfig
from selfcorrect.errors import UserError
from selfcorrect.jsonl import read_rows, write_atomic
from selfcorrect.parsing import parse_config
from selfcorrect.run_identity import check_run
from selfcorrect.stats import bootstrap_ratio_cis, mcnemar_exact
from selfcorrect.tasks.base import INCONSISTENT

# What eval.compare writes into its output_dir (deleted by --overwrite).
COMPARE_OUTPUTS = ["report.md", "comparison.json", "*.png"]


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


def check_distinct_runs(runs: list[str]) -> None:
    """A run compared with itself has no difference to test: each run's folder once (a folder and
    its metrics.json are the same run; so are two paths to one folder)."""
    seen: dict[str, str] = {}
    for r in runs:
        folder = os.path.realpath(r if os.path.isdir(r) else os.path.dirname(r) or ".")
        if folder in seen:
            same = "twice" if seen[folder] == r else f"twice (as {seen[folder]} and {r})"
            raise UserError(f"--runs names the run {seen[folder]} {same}: a run compared with itself has no difference to test")
        seen[folder] = r


def load_items(path: str) -> dict[str, dict]:
    """The per-example outcomes (items.jsonl) beside a run's metrics.json, by example id."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    f = os.path.join(folder, "items.jsonl")
    if not os.path.isfile(f):
        raise UserError(
            f"no items.jsonl in {folder}: re-run python -m eval there (same command; it rewrites its metrics from the traces)"
        )
    return {r["id"]: r for r in read_rows(f)}


def check_same_items(runs: list[tuple[str, dict[str, dict]]]) -> None:
    """Paired tests compare each item with itself: refuse runs that did not grade the same ids."""
    ref_label, ref = runs[0]
    for label, items in runs[1:]:
        if items.keys() != ref.keys():
            only_ref, only = len(ref.keys() - items.keys()), len(items.keys() - ref.keys())
            raise UserError(
                f"runs {ref_label} and {label} graded different items ({only_ref} only in {ref_label}, {only} only in "
                f"{label}): paired comparisons need the same items; evaluate every run on the same data and split"
            )


def _outcomes(item: dict, reading: str) -> tuple[list, list[bool]]:
    """(answers, correct) per round under the grader's reading or the strict one."""
    if reading == "grader":
        return item["answers"], item["correct"]
    return item["strict"], [c and a != INCONSISTENT for c, a in zip(item["correct"], item["strict"])]


def paired_tests(ref: dict[str, dict], run: dict[str, dict], reading: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per round, correctness; per pair of rounds, the flip indicator: each as reference rate, run
    rate, the difference run - reference with its 95% template-cluster bootstrap interval, the
    discordant counts and the exact McNemar p-value."""
    ids = sorted(ref)
    k = len(ref[ids[0]]["answers"])

    def indicators(items):
        out = {}
        for i in ids:
            answers, correct = _outcomes(items[i], reading)
            out[i] = [int(c) for c in correct] + [int(answers[t] != answers[t + 1]) for t in range(k - 1)]
        return out

    a, b = indicators(ref), indicators(run)
    names = [f"r{t + 1}" for t in range(k)] + [f"{t + 1}->{t + 2}" for t in range(k - 1)]
    groups: dict[str, list] = {}
    for i in ids:
        g = groups.setdefault(ref[i]["group"], [[0] * len(names), 0])
        g[0] = [x + y - z for x, y, z in zip(g[0], b[i], a[i])]
        g[1] += 1
    units: dict[tuple, int] = {}
    for sums, n in groups.values():
        units[(tuple(sums), n)] = units.get((tuple(sums), n), 0) + 1
    cis = bootstrap_ratio_cis(units, n_boot, seed)
    out = {}
    for j, name in enumerate(names):
        only_ref = sum(a[i][j] and not b[i][j] for i in ids)
        only_run = sum(b[i][j] and not a[i][j] for i in ids)
        ra, rb = sum(a[i][j] for i in ids) / len(ids), sum(b[i][j] for i in ids) / len(ids)
        out[name] = {
            "reference": ra,
            "run": rb,
            "difference": rb - ra,
            "ci95_group": cis[j],
            "only_reference": only_ref,
            "only_run": only_run,
            "p_mcnemar": mcnemar_exact(only_ref, only_run),
        }
    return out


def compute_saved(ref: dict[str, dict], run: dict[str, dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """What a run saves against the reference per item, next to what it gains in accuracy: rounds
    run and tokens generated (reference - run: positive = saved) and the accuracy at the answer each
    item stopped with (run - reference; under carrying, the round-K accuracy).

    Each mean has a 95% interval resampling the task's groups (BBQ: templates), the three drawn
    together. Rounds are compared item by item with the exact sign test: per-item rounds are small
    integers, mostly tied (an item both runs stop at the same round), so a test on ranks of
    differences (Wilcoxon) would rest on many tied ranks and a normal approximation; the sign test
    counts the items where the run needed fewer rounds against those where it needed more, and is
    exact under the null that each is equally likely (the binomial of ``mcnemar_exact``). An item
    written before stopping existed counts K rounds and no token count.

    >>> ref = {i: {"group": i, "correct": [0, 1], "rounds_run": 2, "tokens": 8} for i in "abc"}
    >>> run = {i: {"group": i, "correct": [1, 1], "rounds_run": 1, "tokens": 4} for i in "abc"}
    >>> out = compute_saved(ref, run, n_boot=10)
    >>> out["rounds_saved"]["value"], out["tokens_saved"]["value"], out["accuracy_at_stop_difference"]["value"]
    (1.0, 4.0, 0.0)
    >>> out["rounds_sign_test"]
    {'run_fewer': 3, 'run_more': 0, 'p': 0.25}
    """
    ids = sorted(ref)
    k = len(ref[ids[0]]["correct"])

    def rounds(item: dict) -> int:
        return item.get("rounds_run") or k

    have_tokens = all(ref[i].get("tokens") is not None and run[i].get("tokens") is not None for i in ids)
    groups: dict[str, list] = {}
    fewer = more = 0
    for i in ids:
        a, b = ref[i], run[i]
        saved = rounds(a) - rounds(b)
        fewer, more = fewer + (saved > 0), more + (saved < 0)
        values = [saved, (a["tokens"] - b["tokens"]) if have_tokens else 0, int(b["correct"][-1]) - int(a["correct"][-1])]
        g = groups.setdefault(a["group"], [[0] * 3, 0])
        g[0] = [x + y for x, y in zip(g[0], values)]
        g[1] += 1
    units: dict[tuple, int] = {}
    for sums, n in groups.values():
        units[(tuple(sums), n)] = units.get((tuple(sums), n), 0) + 1
    cis = bootstrap_ratio_cis(units, n_boot, seed)
    totals = [sum(g[0][j] for g in groups.values()) / len(ids) for j in range(3)]

    def cell(j: int) -> dict:
        return {"value": totals[j], "ci95_group": cis[j]}

    return {
        "rounds_reference": sum(rounds(ref[i]) for i in ids) / len(ids),
        "rounds_run": sum(rounds(run[i]) for i in ids) / len(ids),
        "rounds_saved": cell(0),
        "rounds_sign_test": {"run_fewer": fewer, "run_more": more, "p": mcnemar_exact(more, fewer)},
        "tokens_saved": cell(1) if have_tokens else None,
        "accuracy_at_stop_difference": cell(2),
    }


def format_saved(label: str, ref_label: str, c: dict) -> str:
    def v(cell, fmt):
        if cell is None:
            return "n/a"
        lo, hi = cell["ci95_group"]
        return f"{cell['value']:{fmt}} [{lo:{fmt}},{hi:{fmt}}]"

    st = c["rounds_sign_test"]
    return (
        f"{label} vs {ref_label}: rounds per item {c['rounds_reference']:.2f} -> {c['rounds_run']:.2f}, saved "
        f"{v(c['rounds_saved'], '+.2f')} (sign test p={st['p']:.2g}, fewer/more {st['run_fewer']}/{st['run_more']}) | "
        f"tokens saved per item {v(c['tokens_saved'], '+.1f')} | accuracy at stop {v(c['accuracy_at_stop_difference'], '+.3f')}"
    )


def trivial_baselines(items: dict[str, dict]) -> list[dict]:
    """Accuracy of constant strategies on these items (they never change an answer, so every flip
    rate is 0): a uniform guess, always the most frequent gold letter (an upper bound on any one
    letter), always the item's "unknown" option where every item has one. Multiple choice only."""
    rows = list(items.values())
    if not rows or any(r.get("n_choices") is None for r in rows):
        return []
    n = len(rows)
    out = [{"baseline": "chance", "accuracy": sum(1 / r["n_choices"] for r in rows) / n}]
    golds = [r["gold"] for r in rows]
    letter = max(sorted(set(golds)), key=golds.count)
    out.append({"baseline": f"always {letter} (most frequent gold letter)", "accuracy": golds.count(letter) / n})
    if all(r.get("unknown") for r in rows):
        out.append({"baseline": "always unknown", "accuracy": sum(r["gold"] == r["unknown"] for r in rows) / n})
    return out


def format_paired(label: str, ref_label: str, reading: str, tests: dict) -> list[str]:
    def cell(t):
        ci = t["ci95_group"]
        return (
            f"{t['difference']:+.3f} [{ci[0]:+.2f},{ci[1]:+.2f}] p={t['p_mcnemar']:.2g} ({t['only_reference']}/{t['only_run']})"
        )

    acc = [n for n in tests if n.startswith("r")]
    flips = [n for n in tests if "->" in n]
    return [
        f"{label} vs {ref_label}, {reading} reading: accuracy   " + " | ".join(f"{n} {cell(tests[n])}" for n in acc),
        f"{label} vs {ref_label}, {reading} reading: flip rate  " + " | ".join(f"{n} {cell(tests[n])}" for n in flips),
    ]


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
    a, ow = parse_config([CompareConfig, OverwriteConfig], argv, prog="python -m eval.compare", description=__doc__)
    check_distinct_runs(a.runs)
    metrics = [load_run(r) for r in a.runs]
    labels = a.labels or [m["run"].get("label") or os.path.basename(os.path.normpath(r)) for m, r in zip(metrics, a.runs)]
    runs = list(zip(labels, metrics))
    check_comparable(runs)
    items = [load_items(r) for r in a.runs]
    check_same_items(list(zip(labels, items)))
    paired = {
        label: {reading: paired_tests(items[0], it, reading) for reading in ("grader", "strict")}
        for label, it in zip(labels[1:], items[1:])
    }
    compute = {label: compute_saved(items[0], it) for label, it in zip(labels[1:], items[1:])}
    baselines = trivial_baselines(items[0])
    # Its own folder, like every command's: the same comparison re-run replaces its report (the runs
    # may have been re-evaluated); another set of runs there is refused.
    settings = {"runs": [os.path.abspath(r) for r in a.runs], "labels": labels}
    check_run(a.output_dir, "eval.compare", settings, COMPARE_OUTPUTS, ow.overwrite)
    report = write_report(runs, a.output_dir, "Self-correction: trained checkpoints vs intrinsic prompting")
    table = summary_table(runs)
    comparison = {"runs": table, "reference": labels[0], "paired": paired, "compute": compute, "baselines": baselines}
    write_atomic(os.path.join(a.output_dir, "comparison.json"), json.dumps(comparison, indent=2))
    print(format_table(table, metrics[0]["run"].get("report_columns", [])))
    if paired:
        print(
            f"\nPaired tests on the {len(items[0])} items every run graded: difference run - {labels[0]} "
            "[95% interval resampling the task's groups], exact McNemar p (discordant items: only reference / only run)"
        )
        for label, by_reading in paired.items():
            for reading, tests in by_reading.items():
                print("\n".join(format_paired(label, labels[0], reading, tests)))
    if compute:
        # Converging faster is a claim about both: fewer rounds (and tokens) at no loss of accuracy.
        print(
            "\nCompute against the reference (rounds and tokens: reference - run; accuracy at stop: run - reference)"
            " [95% interval resampling the task's groups]; rounds after an item's stop carry its last answer:"
        )
        for label, c in compute.items():
            print(format_saved(label, labels[0], c))
    if baselines:
        print("\nTrivial baselines on these items (constant answers: every flip rate is 0):")
        for b in baselines:
            print(f"  {b['baseline']}: accuracy {b['accuracy']:.3f}")
    print(f"\nreport: {report}")


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
