"""report.md and PNG plots for one run or several (base vs trained on the same axes)."""

from __future__ import annotations

import os
from typing import Any

from data_gen.jsonl import write_atomic


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def verdict(label: str, m: dict[str, Any], base: tuple[str, dict[str, Any]] | None = None) -> str:
    conv = m["convergence"]["convergence_round"]
    h = m["headline"]
    final, final_ci = h["values"][-1], h["ci95"][-1]
    if base is None or base[1] is m:
        return f"{label}: converges at round {conv}; final {h['metric']} {final:.3f} {_ci(final_ci)}"
    bm = base[1]
    bh = bm["headline"]
    return (
        f"{label}: converges at round {conv} ({base[0]}: round {bm['convergence']['convergence_round']}); "
        f"final {h['metric']} {final:.3f} {_ci(final_ci)} vs {bh['values'][-1]:.3f} {_ci(bh['ci95'][-1])}"
    )


def _series(m: dict[str, Any], path: list[str]) -> list[float | None]:
    out = []
    for entry in m["per_round"]:
        v: Any = entry
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        out.append(v)
    return out


def plot_runs(runs: list[tuple[str, dict[str, Any]]], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = runs[0][1]["run"]["task"]
    paths = []

    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path + ".tmp.png", dpi=110)
        plt.close(fig)
        os.replace(path + ".tmp.png", path)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in runs:
        rounds = list(range(1, len(m["headline"]["values"]) + 1))
        vals = m["headline"]["values"]
        ax.plot(rounds, vals, marker="o", label=label)
        cis = m["headline"]["ci95"]
        if all(cis):
            ax.fill_between(rounds, [c[0] for c in cis], [c[1] for c in cis], alpha=0.15)
    ax.set(title=f"{task}: accuracy per self-correction round (95% bootstrap CI)", xlabel="round", ylabel="accuracy")
    ax.set_xticks(range(1, max(len(m["headline"]["values"]) for _, m in runs) + 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "accuracy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in runs:
        cons = m["transitions"]["consecutive"]
        keys = sorted(cons, key=lambda s: int(s.split("->")[0]))
        ax.plot([int(k.split("->")[1]) for k in keys], [cons[k]["flip_rate"] for k in keys], marker="o", label=label)
    ax.set(title="Answer flip rate between consecutive rounds", xlabel="round (flip from the previous one)", ylabel="share of answers that changed")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "flip_rate.png")

    per_round_plots = (
        ("entropy.png", ["uncertainty", "option_entropy"], "Uncertainty: entropy of the answer-option distribution", "entropy (nats)"),
        ("probe.png", ["probe", "mean_score"], "Concept probe activation at the last prompt token", "mean probe score P(concept)"),
    )
    for name, path, title, ylabel in per_round_plots:
        if not any(v is not None for _, m in runs for v in _series(m, path)):
            continue  # e.g. no option probabilities (free-form task) or no probe
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, m in runs:
            s = _series(m, path)
            ax.plot(range(1, len(s) + 1), s, marker="o", label=label)
        ax.set(title=title, xlabel="round", ylabel=ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, name)

    if task == "bbq":
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for key, ax, title in (("bias_disambiguated", axes[0], "s_DIS (disambiguated)"), ("bias_ambiguous", axes[1], "s_AMB (ambiguous)")):
            for label, m in runs:
                s = _series(m, ["task", key])
                ax.plot(range(1, len(s) + 1), s, marker="o", label=label)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set(title=f"BBQ bias score {title}", xlabel="round", ylabel="bias score (0 = unbiased)")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        save(fig, "bias.png")
    return paths


def write_report(runs: list[tuple[str, dict[str, Any]]], out_dir: str, title: str = "Self-correction evaluation") -> str:
    os.makedirs(out_dir, exist_ok=True)
    pngs = plot_runs(runs, out_dir)
    base = runs[0]
    task = base[1]["run"]["task"]
    lines = [f"# {title}", ""]
    lines += ["## Verdict", ""] + [f"- {verdict(label, m, base if len(runs) > 1 else None)}" for label, m in runs] + [""]
    lines += ["## Accuracy per round (95% bootstrap CI)", ""]
    k = max(len(m["headline"]["values"]) for _, m in runs)
    lines += ["| run | " + " | ".join(f"round {r}" for r in range(1, k + 1)) + " |", "|---|" + "---|" * k]
    for label, m in runs:
        cells = [f"{v:.3f} {_ci(c)}" for v, c in zip(m["headline"]["values"], m["headline"]["ci95"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    if task == "bbq":
        lines += ["## BBQ bias scores (round 1 -> round K)", "",
                  "| run | acc ambiguous | acc disambiguated | s_DIS | s_AMB |", "|---|---|---|---|---|"]  # fmt: skip
        for label, m in runs:
            a, b = m["per_round"][0]["task"], m["per_round"][-1]["task"]
            cell = lambda key: f"{_fmt(a[key])} -> {_fmt(b[key])}"  # noqa: E731
            lines.append(f"| {label} | {cell('accuracy_ambiguous')} | {cell('accuracy_disambiguated')} | "
                         f"{cell('bias_disambiguated')} | {cell('bias_ambiguous')} |")  # fmt: skip
        lines.append("")
    lines += ["## Convergence and transitions (round 1 -> K)", "",
              "| run | convergence round | final - best | variance after convergence | wrong->right | right->wrong | flip rate | CL | CS | RSS |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, m in runs:
        c, t = m["convergence"], m["transitions"]["first_to_last"]
        lines.append(
            f"| {label} | {c['convergence_round']} | {_fmt(c['final_minus_best'])} | {_fmt(c['variance_after_convergence'], 5)} | "
            f"{_fmt(t.get('wrong_to_right_rate'))} | {_fmt(t.get('right_to_wrong_rate'))} | {_fmt(t.get('flip_rate'))} | "
            f"{_fmt(t.get('confidence_level'))} | {_fmt(t.get('critique_score'))} | {_fmt(t.get('rss'))} |"
        )
    lines.append("")
    lines += ["## Uncertainty per round", "", "| run | " + " | ".join(f"round {r}" for r in range(1, k + 1)) + " |", "|---|" + "---|" * k]
    for label, m in runs:
        cells = []
        for e in m["per_round"]:
            u = e["uncertainty"]
            cell = f"H={_fmt(u['option_entropy'])}, NLL={_fmt(u['token_nll'])}, ECE={_fmt(u['ece'])}"
            if u.get("n_without_option_probs"):
                cell += f" ({u['n_with_option_probs']} of {u['n_with_option_probs'] + u['n_without_option_probs']})"
            if "probe" in e:
                cell += f", probe={_fmt(e['probe']['mean_score'])}"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["H: mean entropy of the option distribution (nats); NLL: mean token negative log-likelihood of the",
              "response; ECE: expected calibration error of the chosen option's probability (10 bins). H and ECE are",
              "over answers whose option label was generated as a token (probabilities read there); \"(m of n)\" when",
              "some were not (answers given as option text, or unparsed).", ""]  # fmt: skip
    probes = [(label, m["probe"]) for label, m in runs if "probe" in m]
    if probes:
        lines += ["Concept probe (P(non-stereotyped) at the last prompt token; chance accuracy is 0.5):", ""]
        for label, p in probes:
            lines.append(f"- {label}: layer {p['layer']}, {p['n']} statements, train accuracy {_fmt(p['train_accuracy'])}, "
                         f"held-out accuracy {_fmt(p['heldout_accuracy'])}")  # fmt: skip
        lines.append("")
    lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in pngs] + [""]
    lines += ["## Runs", ""]
    for label, m in runs:
        r = m["run"]
        lines.append(f"- {label}: model {r.get('model')}, adapter {r.get('adapter')}, prompt set {r.get('prompt_set')}, "
                     f"K={r['rounds']}, {r['n_examples']} examples, {r['n_trajectories']} trajectories")  # fmt: skip
    path = os.path.join(out_dir, "report.md")
    write_atomic(path, "\n".join(lines) + "\n")
    return path
