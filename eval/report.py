"""report.md and PNG plots for one run or several (base vs trained on the same axes).

Task-agnostic: the task's own columns (BBQ's s_AMB and s_DIS, Winogender's correlation, ...) are
named in each metrics.json (``run.report_columns``), with their values and intervals per round.
"""

from __future__ import annotations

import os
from typing import Any

from eval.aggregate import FIELD_METRICS
from selfcorrect.jsonl import write_atomic


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def convergence_cell(conv: int | None, k: int) -> str:
    """The convergence round in a table: a number only when the run settled before its last round (the
    last round qualifies trivially, so "K" would read as "settled at K" when it means "never")."""
    if k <= 1 or conv is None:
        return "n/a (K = 1)" if k == 1 else "n/a"
    return str(conv) if conv < k else "not settled"


def settling(m: dict[str, Any]) -> str:
    """Where the run's accuracy settles and in which direction, in words.

    Convergence is about stability: a run whose accuracy falls and stays down has converged too,
    so the direction is always said."""
    conv = m["convergence"]["convergence_round"]
    values = m["headline"]["values"]
    k = len(values)
    move = values[-1] - values[0]
    direction = "up" if move > 1e-9 else "down" if move < -1e-9 else "unchanged"
    if k == 1:
        return f"K = 1: convergence not defined (accuracy {values[0]:.3f})"
    where = f"settles at round {conv}" if conv < k else f"does not settle within {k} rounds"
    return f"{where} (accuracy {values[0]:.3f} -> {values[-1]:.3f}, {direction})"


def verdict(label: str, m: dict[str, Any], base: tuple[str, dict[str, Any]] | None = None) -> str:
    # The final round with its interval, and how the run got there: a final value alone cannot tell a
    # run that improved from one that fell and settled. Against the baseline (the first run), both
    # sides are in one line so neither is read without the other; the baseline gets no comparison.
    h = m["headline"]
    final, final_ci = h["values"][-1], h["ci95"][-1]
    if base is None or base[1] is m:
        return f"{label}: {settling(m)}; final {h['metric']} {final:.3f} {_ci(final_ci)}"
    bm = base[1]
    bh = bm["headline"]
    return (
        f"{label}: {settling(m)}; final {h['metric']} {final:.3f} {_ci(final_ci)} vs {base[0]} "
        f"{bh['values'][-1]:.3f} {_ci(bh['ci95'][-1])} ({base[0]} {settling(bm)})"
    )


def _series(m: dict[str, Any], path: list[str]) -> list[float | None]:
    # None where a round lacks the value (free-form answers have no option entropy, a run without a
    # probe no probe score) rather than a KeyError: runs of different kinds share one plot.
    out = []
    for entry in m["per_round"]:
        v: Any = entry
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        out.append(v)
    return out


def _labels_with_twins(runs: list[tuple[str, list]]) -> list[str]:
    """Legend labels; a run whose whole curve equals an earlier run's says so (it is drawn under it)."""
    labels = []
    for i, (label, ys) in enumerate(runs):
        twin = next((runs[j][0] for j in range(i) if runs[j][1] == ys), None)
        labels.append(f"{label} (same as {twin})" if twin else label)
    return labels


# A line style and a marker per run, so curves that overlap stay apart; cycled past eight runs.
_STYLES = ["-o", "--s", ":^", "-.D", "-v", "--P", ":X", "-.*"]


def _probe_at_chance(m: dict[str, Any]) -> bool:
    # The probe has two classes (chance 0.5): below 0.6 held out, or untested, its score per round says
    # nothing about the concept, and the report says so instead of plotting it as a finding.
    p = m.get("probe")
    return p is not None and (p.get("heldout_accuracy") is None or p["heldout_accuracy"] < 0.6)


def plot_runs(runs: list[tuple[str, dict[str, Any]]], out_dir: str) -> list[str]:
    # matplotlib is heavy and only plotting needs it: imported here, so the commands that score and
    # compare runs stay light. Agg renders to files, with no display (a training server has none).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = runs[0][1]["run"]
    task, k = info["task"], max(len(m["headline"]["values"]) for _, m in runs)
    sizes = sorted({m["run"]["n_examples"] for _, m in runs})
    about = f"K={k}, n={'/'.join(map(str, sizes))} examples"
    paths = []

    # Saved under a temporary name and renamed: a run killed mid-save leaves no truncated PNG that
    # report.md links to; the temporary name keeps the .png suffix matplotlib reads the format from.
    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path + ".tmp.png", dpi=110)
        plt.close(fig)
        os.replace(path + ".tmp.png", path)
        paths.append(path)

    def lines(ax, series: list[tuple[str, list]], band: dict[str, list] | None = None):
        for (label, ys), shown, style in zip(series, _labels_with_twins(series), _STYLES * 4):
            # A round without a value (no flip rate at round 1) is left out, never drawn as 0.
            xs = [r + 1 for r, y in enumerate(ys) if y is not None]
            ax.plot(xs, [y for y in ys if y is not None], style, label=shown, alpha=0.85)
            cis = (band or {}).get(label)
            if cis and all(cis):  # a band only where every round has an interval: none can bridge a gap
                ax.fill_between(range(1, len(cis) + 1), [c[0] for c in cis], [c[1] for c in cis], alpha=0.12)
        ax.set_xticks(range(1, k + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines(ax, [(label, m["headline"]["values"]) for label, m in runs], {label: m["headline"]["ci95"] for label, m in runs})
    # Chance (mean 1/options) is the floor a multiple-choice accuracy is read against.
    chance = info.get("chance_accuracy")
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--")
        ax.text(1, chance, f" chance {chance:.2f}", va="bottom", fontsize=8, color="grey")
    ax.set(title=f"{task}: accuracy per round (95% CI; {about})", xlabel="round", ylabel="accuracy", ylim=(0, 1))
    save(fig, "accuracy.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    series = []
    for label, m in runs:
        cons = m["transitions"]["consecutive"]
        # A leading None puts the flip rate r -> r+1 at round r+1, the round whose answer changed.
        series.append((label, [None] + [cons[f"{r}->{r + 1}"]["flip_rate"] for r in range(1, len(cons) + 1)]))
    lines(ax, series)
    ax.set(title=f"Answers changed from the previous round ({about})", xlabel="round", ylabel="flip rate", ylim=(0, 1))
    save(fig, "flip_rate.png")

    # Stacked answer shares per round: a run can gain or lose accuracy by collapsing onto one option
    # (always answering BBQ's unknown option scored above every arm of the first study), which only
    # the distribution shows.
    with_answers = [(label, m) for label, m in runs if "distribution" in m["per_round"][0].get("answers", {})]
    if with_answers:
        fig, axes = plt.subplots(1, len(with_answers), figsize=(3.2 * len(with_answers) + 1, 3.6), squeeze=False, sharey=True)
        for (label, m), ax in zip(with_answers, axes[0]):
            dists = [e["answers"]["distribution"] for e in m["per_round"]]
            keys = sorted({a for d in dists for a in d}, key=lambda a: (a == "unparsed", a))
            bottom = [0.0] * len(dists)
            for a in keys:
                share = [d.get(a, 0.0) for d in dists]
                ax.bar(range(1, len(dists) + 1), share, bottom=bottom, label=a)
                bottom = [b + x for b, x in zip(bottom, share)]
            ax.set(title=label, xlabel="round", ylim=(0, 1))
            ax.set_xticks(range(1, len(dists) + 1))
        axes[0][0].set_ylabel("share of answers")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
        fig.suptitle(f"Answer distribution per round: collapse onto one option shows here ({about})", fontsize=9)
        save(fig, "answers.png")

    per_round_plots = (
        ("entropy.png", ["uncertainty", "option_entropy"], "Entropy of the answer-option distribution", "entropy (nats)"),
        ("probe.png", ["probe", "mean_score"], "Concept probe at the last prompt token", "mean probe score P(concept)"),
    )
    for name, path, title, ylabel in per_round_plots:
        if not any(v is not None for _, m in runs for v in _series(m, path)):
            continue  # no option probabilities (free-form answers) or no probe
        fig, ax = plt.subplots(figsize=(6.5, 4))
        lines(ax, [(label, _series(m, path)) for label, m in runs])
        if name == "probe.png" and any(_probe_at_chance(m) for _, m in runs):
            title += "\n(probe held-out accuracy near chance: not interpretable)"
        ax.set(title=f"{title} ({about})", xlabel="round", ylabel=ylabel)
        save(fig, name)

    columns = [
        c for c in info.get("report_columns", []) if any(v is not None for _, m in runs for v in _series(m, ["task", c[0]]))
    ]
    if columns:
        fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
        for (key, title), ax in zip(columns, axes[0]):
            lines(
                ax,
                [(label, _series(m, ["task", key])) for label, m in runs],
                {label: _series(m, ["intervals", key]) for label, m in runs},
            )
            ax.axhline(0, color="grey", lw=0.8)  # the task's columns are signed (bias, correlation): 0 is none
            ax.set(title=f"{task}: {title} per round", xlabel="round", ylabel=title)
        save(fig, "task_metrics.png")
    return paths


def _cell(c: dict[str, Any] | None) -> str:
    """A value with its template-cluster interval and, where it differs, the item interval."""
    if c is None:
        return "n/a"
    # The template-cluster interval first: items of one template are not independent, so it is the one
    # to read; the item interval beside it shows how much the clustering widens it.
    out = f"{c['value']:.3f} {_ci(c['ci95_group'])}"
    if c["ci95_item"] != c["ci95_group"]:
        out += f" (items {_ci(c['ci95_item'])})"
    return out


def self_correction_lines(runs: list[tuple[str, dict[str, Any]]], k: int) -> list[str]:
    """The field's metrics, flip rates with intervals, the edit-distance ratio and the answers
    (distribution, letter/text agreement) of each run, for report.md."""
    runs = [(label, m) for label, m in runs if "self_correction" in m]
    if not runs:
        return []
    lines = [
        "## Self-correction metrics (Kumar et al. 2024 names; t2 = round K)",
        "",
        "Intervals: 95% bootstrap resampling the task's groups (BBQ: templates), with the item bootstrap in",
        "brackets where it differs. Grader: the answer the grader reads (the first option named, letter or",
        "text); strict: an answer whose letter and option text name different options is inconsistent,",
        "never right, and counts as its own answer in flips.",
        "",
        "| run | reading | " + " | ".join(FIELD_METRICS) + " |",
        "|---|---|" + "---|" * len(FIELD_METRICS),
    ]
    # Both readings in every table: the grader's keeps numbers comparable with published ones, the
    # strict one shows where letters drift while the option text stays (docs/metrics.md).
    for label, m in runs:
        for reading in ("grader", "strict"):
            sc = m["self_correction"][reading]
            lines.append(f"| {label} | {reading} | " + " | ".join(_cell(sc[name]) for name in FIELD_METRICS) + " |")
    pairs = [f"{t}->{t + 1}" for t in range(1, k)]
    lines += ["", "Flip rate (share of items whose answer changed) per pair of rounds:", ""]
    lines += ["| run | reading | " + " | ".join(pairs) + " |", "|---|---|" + "---|" * len(pairs)]
    for label, m in runs:
        for reading in ("grader", "strict"):
            flips = m["self_correction"][reading]["flip_rate"]
            lines.append(f"| {label} | {reading} | " + " | ".join(_cell(flips.get(p)) for p in pairs) + " |")
    # Kumar et al. check for collapse to "no edit" with this ratio: a model that learned to repeat
    # itself has flip rate 0 and edit ratio near 0.
    lines += ["", "Edit-distance ratio between consecutive responses (words; 0 = unchanged):", ""]
    lines += ["| run | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
    for label, m in runs:
        edit = m["self_correction"]["edit_distance_ratio"]
        lines.append(f"| {label} | " + " | ".join(_fmt(edit.get(p)) for p in pairs) + " |")
    lines += [
        "",
        "## Answers per round",
        "",
        'Share of each answer; unknown = the item\'s "cannot be determined" option; agree = letter and',
        "option text name the same option, of the answers that give both; inconsistent = they differ, of all.",
        "",
        "| run | round | answers | unknown | agree | inconsistent |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in runs:
        for e in m["per_round"]:
            a = e["answers"]
            if "distribution" not in a:
                continue  # not multiple choice
            dist = ", ".join(f"{k2} {v:.2f}" for k2, v in a["distribution"].items())
            lt = a.get("letter_text") or {}
            lines.append(
                f"| {label} | {e['round']} | {dist} | {_fmt(a.get('unknown'))} | {_fmt(lt.get('agreement'))} | "
                f"{_fmt(lt.get('inconsistent'))} |"
            )
    return lines + [""]


def _accuracy_lines(runs: list[tuple[str, dict[str, Any]]], k: int) -> list[str]:
    lines = ["## Accuracy per round (95% bootstrap CI)", ""]
    lines += ["| run | n | " + " | ".join(f"round {r}" for r in range(1, k + 1)) + " |", "|---|---|" + "---|" * k]
    for label, m in runs:
        cells = [f"{v:.3f} {_ci(c)}" for v, c in zip(m["headline"]["values"], m["headline"]["ci95"])]
        lines.append(f"| {label} | {m['run']['n_examples']} | " + " | ".join(cells) + " |")
    lines.append("")
    # Unparsed answers count as wrong, so accuracy can rise only because the format improves: the rate
    # stands under the accuracy table for every task that reports it.
    if any("unparsed_rate" in m["per_round"][0]["task"] for _, m in runs):
        lines += [
            "Unparsed answers per round (they count as wrong in accuracy; a fall here is a format gain,",
            "not self-correction):",
            "",
        ]
        lines += ["| run | " + " | ".join(f"round {r}" for r in range(1, k + 1)) + " |", "|---|" + "---|" * k]
        for label, m in runs:
            lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in _series(m, ["task", "unparsed_rate"])) + " |")
        lines.append("")
    return lines


def _task_metric_lines(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The task's own columns (BBQ's bias scores, ...), round 1 -> round K; none for a task without."""
    base = runs[0][1]["run"]
    columns = base.get("report_columns", [])
    if not columns:
        return []
    lines = [
        f"## {base['task']} metrics (round 1 -> round K, 95% CI)",
        "",
        "| run | " + " | ".join(t for _, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    # Start and end of each column, with the last round's interval: the question is where the run
    # ends up from where it started.
    for label, m in runs:
        first, last = m["per_round"][0], m["per_round"][-1]
        cells = [
            f"{_fmt(first['task'].get(key))} -> {_fmt(last['task'].get(key))} {_ci(last['intervals'].get(key))}"
            for key, _ in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _convergence_lines(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    # Whether the run settled (convergence round, spread after it) beside where the answers moved from
    # round 1 to K: settling says nothing about direction. CL = P(right at K | right at 1), CS = P(right
    # at K | wrong at 1) and RSS follow Yang et al. 2024 (arXiv 2412.19513).
    lines = [
        "## Convergence and transitions (round 1 -> K)",
        "",
        "| run | convergence round | final - best | variance after convergence | wrong->right | right->wrong | flip rate | CL | CS | RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in runs:
        c, t = m["convergence"], m["transitions"]["first_to_last"]
        lines.append(
            f"| {label} | {convergence_cell(c['convergence_round'], len(m['per_round']))} | {_fmt(c['final_minus_best'])} | {_fmt(c['variance_after_convergence'], 5)} | "
            f"{_fmt(t.get('wrong_to_right_rate'))} | {_fmt(t.get('right_to_wrong_rate'))} | {_fmt(t.get('flip_rate'))} | "
            f"{_fmt(t.get('confidence_level'))} | {_fmt(t.get('critique_score'))} | {_fmt(t.get('rss'))} |"
        )
    return lines + [""]


def _uncertainty_lines(runs: list[tuple[str, dict[str, Any]]], k: int) -> list[str]:
    lines = [
        "## Uncertainty per round",
        "",
        "| run | " + " | ".join(f"round {r}" for r in range(1, k + 1)) + " |",
        "|---|" + "---|" * k,
    ]
    for label, m in runs:
        cells = []
        for e in m["per_round"]:
            u = e["uncertainty"]
            cell = f"H={_fmt(u['option_entropy'])}, NLL={_fmt(u['token_nll'])}, ECE={_fmt(u['ece'])}"
            # H and ECE skip answers without option probabilities: saying how many were read keeps a
            # mean over a few answers from passing for the whole round.
            skipped = u.get("n_without_option_probs")
            if skipped:
                cell += f" ({u['n_with_option_probs']} of {u['n_with_option_probs'] + skipped})"
            if "probe" in e:
                cell += f", probe={_fmt(e['probe']['mean_score'])}"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [
        "H: mean entropy of the option distribution (nats); NLL: mean token negative log-likelihood of the",
        "response; ECE: expected calibration error of the chosen option's probability (10 bins). H and ECE",
        "use the answers whose label token was generated; (m of n) says how many had one.",
        "",
    ]
    # The probe's own accuracy comes with it: a probe near chance reads nothing in the activations.
    probes = [(label, m["probe"]) for label, m in runs if "probe" in m]
    if probes:
        lines += ["Concept probe (P(non-stereotyped) at the last prompt token; chance accuracy is 0.5):", ""]
        for label, p in probes:
            caveat = (
                " (near chance: its activation per round says nothing about this model)" if _probe_at_chance({"probe": p}) else ""
            )
            lines.append(
                f"- {label}: layer {p['layer']}, {p['n']} statements, train accuracy {_fmt(p['train_accuracy'])}, "
                f"held-out accuracy {_fmt(p['heldout_accuracy'])}{caveat}"
            )
        lines.append("")
    return lines


def _runs_lines(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["## Runs", ""]
    for label, m in runs:
        r = m["run"]
        lines.append(
            f"- {label}: model {r.get('model')}, adapter {r.get('adapter')}, prompt set {r.get('prompt_set')}, "
            f"data {r.get('dataset')}, K={r['rounds']}, {r['n_examples']} examples, {r['n_trajectories']} trajectories"
        )
    return lines


def stopping_lines(runs: list[tuple[str, dict[str, Any]]], k: int) -> list[str]:
    """The compute section: rounds and tokens per item, accuracy at stop and the share stopped by
    each round, for runs where a conversation stopped (``stop_when``); none otherwise, so a run
    without stopping reports what it did before the rule existed.

    >>> m = {"stopping": {"n_stopped": 1, "mean_rounds": 2.5, "mean_tokens": 10.0, "accuracy_at_stop": 0.5,
    ...                   "stopped_by_round": [0.0, 0.5, 0.5]}}
    >>> stopping_lines([("base", m)], 3)[4]
    '| base | 2.50 | 10.0 | 0.500 | 0.00 | 0.50 | 0.50 |'
    """
    if not any(m.get("stopping", {}).get("n_stopped") for _, m in runs):
        return []
    head = (
        "| run | rounds / item | tokens / item | accuracy at stop | "
        + " | ".join(f"stopped by r{t + 1}" for t in range(k))
        + " |"
    )
    lines = [
        "## Stopping (compute)",
        "",
        head,
        "|" + "---|" * (4 + k),
    ]
    for label, m in runs:
        st = m.get("stopping")
        if st is None:
            continue
        tokens = "n/a" if st["mean_tokens"] is None else f"{st['mean_tokens']:.1f}"
        by = [f"{x:.2f}" for x in st["stopped_by_round"]] + [""] * (k - len(st["stopped_by_round"]))
        lines.append(f"| {label} | {st['mean_rounds']:.2f} | {tokens} | {st['accuracy_at_stop']:.3f} | " + " | ".join(by) + " |")
    lines += [
        "",
        "A stopped conversation's later rounds were not generated: they carry its last answer (marked "
        "`carried` in traces.jsonl), so the per-round accuracies and flip rates above read that answer at "
        'every later round and stay comparable with runs of K rounds (docs/metrics.md, "Stopping").',
        "",
    ]
    return lines


def write_report(runs: list[tuple[str, dict[str, Any]]], out_dir: str, title: str = "Self-correction evaluation") -> str:
    """report.md (and its plots) for one run or several; with several, the first is the baseline
    each verdict compares against. One function per section, in the order they appear."""
    os.makedirs(out_dir, exist_ok=True)
    pngs = plot_runs(runs, out_dir)
    base = runs[0] if len(runs) > 1 else None
    # Tables get a column for every round of the longest run; a shorter run's cells stay empty or n/a.
    k = max(len(m["headline"]["values"]) for _, m in runs)
    lines = [f"# {title}", ""]
    lines += ["## Verdict", ""] + [f"- {verdict(label, m, base)}" for label, m in runs] + [""]
    lines += _accuracy_lines(runs, k)
    lines += _task_metric_lines(runs)
    lines += _convergence_lines(runs)
    lines += self_correction_lines(runs, k)
    lines += stopping_lines(runs, k)
    lines += _uncertainty_lines(runs, k)
    lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in pngs] + [""]
    lines += _runs_lines(runs)
    path = os.path.join(out_dir, "report.md")
    write_atomic(path, "\n".join(lines) + "\n")
    return path
