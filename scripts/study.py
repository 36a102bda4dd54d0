"""Does training make a real model converge faster than intrinsic prompting? One command answers it.

    python scripts/study.py --dataset_path ../shared/data/bbq     # the BBQ release files (about 65 min, 2 CPU cores)
    python scripts/study.py                                        # the demo's own BBQ-format templates (small test split)
    python scripts/study.py --full                                 # GPU sizes: Qwen2.5-1.5B-Instruct, 10x the data and steps

Arms: the base model with intrinsic-moral prompting and with the baseline prompt, and LoRA adapters
trained with SFT, DPO, GRPO, SCoRe and K-round RL (train/*.py, recipes/demo/*.yaml), each evaluated
with K = 5 rounds on the test split. Steps:

1. split: BBQ-format items are split by template (category + question_index) into train /
   validation / test, so no template is on two sides; each split is then subsampled, spread evenly
   over the categories (sizes below);
2. data_gen on the train split (K = 3, intrinsic-moral, greedy) builds the SFT, DPO and RL data;
3. each method trains with a checkpoint at 1/3, 2/3 and all of its steps; the base model (step 0)
   and every checkpoint are evaluated on the validation split (K = 2): that is the learning curve,
   and the checkpoint with the best final-round validation accuracy is the one tested (training
   length is the only hyperparameter chosen, on validation only; the rest are the demo recipes');
4. every arm is evaluated once on the test split (K = 5), then eval.compare writes one report.

Everything goes to --run_dir (default outputs/study); study.json, compare/report.md and the plots
(compare/*.png, learning_curves.png) sum it up. docs/study.md reads one run of it.
A re-run resumes: finished stages (data, adapters, evals) are kept and skipped.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import time
import zlib
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("sft", "dpo", "grpo", "score", "kround")

# name: (model, accelerate config, split sizes (train, validation, test), steps per method, batch size)
SIZES = {
    "cpu": ("smollm2-135m-instruct", "cpu", (240, 32, 504), {"sft": 12, "dpo": 6, "grpo": 9, "score": 9, "kround": 9}, 32),
    "full": (
        "Qwen/Qwen2.5-1.5B-Instruct",
        "single_gpu",
        (2400, 320, 5040),
        {"sft": 120, "dpo": 60, "grpo": 90, "score": 90, "kround": 90},
        64,
    ),
    "smoke": ("smollm2-135m-instruct", "cpu", (24, 12, 12), {m: 3 for m in METHODS}, 16),  # checks the script, measures nothing
}
DATA_FILE = {"sft": "sft.jsonl", "dpo": "dpo.jsonl", "grpo": "rl.jsonl", "score": "rl.jsonl", "kround": "rl.jsonl"}
TRAIN_EXTRA = {  # on top of recipes/demo/<method>.yaml; sized for about 4 minutes of training each on 2 CPU cores
    "sft": ["--per_device_train_batch_size", "4"],
    "dpo": ["--per_device_train_batch_size", "4"],
    "grpo": ["--per_device_train_batch_size", "8", "--num_generations", "4"],  # 2 prompts x 4 samples a step
    "score": ["--per_device_prompts", "2", "--num_generations", "4", "--stage1_steps", "3"],
    "kround": ["--per_device_prompts", "2", "--num_generations", "4", "--rounds", "3"],
}


def log(msg: str) -> None:
    print(msg, flush=True)


def run(title: str, cmd: list[str], logfile: str) -> None:
    log(f"\n== {title}\n$ {shlex.join(cmd)}")
    t0 = time.time()
    with open(logfile, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
    p = subprocess.run(cmd, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"stage '{title}' failed (exit {p.returncode}); re-run the same command to resume")
    log(f"== {title}: {time.time() - t0:.0f} s")


# ---- 1. the split ------------------------------------------------------------------------------------


def _bucket(key: str) -> float:
    return zlib.crc32(key.encode()) % 10_000 / 10_000


def split_items(rows: list[dict], sizes: tuple[int, int, int], fractions=(0.6, 0.1, 0.3)) -> dict[str, list[dict]]:
    """Templates (BBQ's group: category + question_index) go to train / validation / test by a hash,
    then each side keeps ``sizes`` items taken round-robin over the categories in a hashed order, so
    every category is represented and no template is on two sides."""
    from selfcorrect.tasks.bbq import BBQTask, example_from_row

    task = BBQTask()
    sides: dict[str, dict[str, list[dict]]] = {"train": defaultdict(list), "val": defaultdict(list), "test": defaultdict(list)}
    for r in rows:
        b = _bucket(task.group(example_from_row(r)))
        side = "train" if b < fractions[0] else "val" if b < fractions[0] + fractions[1] else "test"
        sides[side][r["category"]].append(r)
    out = {}
    for (side, by_cat), size in zip(sides.items(), sizes):
        queues = [
            sorted(items, key=lambda r: _bucket(f"{r['category']}/{r['example_id']}")) for _, items in sorted(by_cat.items())
        ]
        picked: list[dict] = []
        while len(picked) < size and any(queues):
            for q in queues:
                if q and len(picked) < size:
                    picked.append(q.pop(0))
        out[side] = picked
    groups = {side: {task.group(example_from_row(r)) for r in items} for side, items in out.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    return out


def release_files(source: str) -> list[str]:
    """The BBQ release's <Category>.jsonl files in ``source`` (its prediction files left out)."""
    return [p for p in sorted(glob.glob(os.path.join(source, "*.jsonl"))) if "prediction" not in os.path.basename(p)]


def source_problem(source: str) -> str | None:
    """What is wrong with --dataset_path, checked before anything is written (None: nothing)."""
    where = "the <Category>.jsonl files of github.com/nyu-mll/BBQ, folder data/"
    if not os.path.isdir(source):
        return f"--dataset_path {source}: no such folder (expected {where})"
    if not any(os.path.getsize(p) for p in release_files(source)):
        return f"--dataset_path {source}: no non-empty .jsonl file in it (expected {where})"
    return None


def write_split(source: str, dest: str, sizes: tuple[int, int, int]) -> dict:
    done = os.path.join(dest, "split.json")
    if os.path.exists(done):
        return json.load(open(done))
    rows = []
    for path in release_files(source):
        rows += [json.loads(line) for line in open(path) if line.strip()]
    sides = split_items(rows, sizes)
    info = {"source": source, "items": len(rows)}
    for side, items in sides.items():
        folder = os.path.join(dest, side)
        os.makedirs(folder, exist_ok=True)
        by_cat = defaultdict(list)
        for r in items:
            by_cat[r["category"]].append(r)
        for cat, cat_rows in by_cat.items():
            with open(os.path.join(folder, f"{cat}.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in cat_rows)
        info[side] = {
            "items": len(items),
            "templates": len({(r["category"], str(r["question_index"])) for r in items}),
            "per_category": {c: len(v) for c, v in sorted(by_cat.items())},
        }
    json.dump(info, open(done, "w"), indent=2)
    return info


# ---- 2-4. the stages ---------------------------------------------------------------------------------


VAL_ROUNDS = 2  # the validation metric: accuracy at round 2 (K = 5 is kept for the test split)


def eval_args(data, out, label, rounds, model, extra, batch):
    return [
        "--config",
        os.path.join(ROOT, "recipes", "demo", "eval.yaml"),
        "--dataset_path",
        data,
        "--heldout_fraction",
        "0",
        "--heldout",
        "false",
        "--rounds",
        str(rounds),
        "--label",
        label,
        "--output_dir",
        out,
        "--probe",
        "false",
        "--batch_size",
        str(batch),
        "--max_new_tokens",
        "5",
        *model,
        *extra,
    ]


def evaluate(title: str, args: list[str], logfile: str) -> None:
    """python -m eval, in this process (the evals share one Python and torch start-up)."""
    from eval.__main__ import main as eval_main
    from selfcorrect.errors import UserError

    log(f"\n== {title}\n$ python -m eval {shlex.join(args)}")
    t0 = time.time()
    with open(logfile, "a") as f:
        f.write(f"$ python -m eval {shlex.join(args)}\n")
    try:
        eval_main(args)
    except UserError as e:
        sys.exit(f"stage '{title}' failed: {e}")
    log(f"== {title}: {time.time() - t0:.0f} s")


def final_accuracy(metrics_dir: str) -> float:
    return json.load(open(os.path.join(metrics_dir, "metrics.json")))["headline"]["values"][-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset_path", default=None, help="BBQ release files (a folder of <Category>.jsonl); default: the demo set."
    )
    p.add_argument("--run_dir", default="outputs/study")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="GPU sizes (Qwen2.5-1.5B-Instruct, 10x data and steps).")
    size.add_argument("--smoke", action="store_true", help="A few items and steps: checks that every stage runs.")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS, help="Trained arms to run.")
    a = p.parse_args()
    if a.dataset_path is not None and source_problem(a.dataset_path):
        print(f"error: {source_problem(a.dataset_path)}", file=sys.stderr)
        sys.exit(2)
    model_name, hw, sizes, steps, batch = SIZES["full" if a.full else "smoke" if a.smoke else "cpu"]
    run_dir = os.path.abspath(a.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    logfile = os.path.join(run_dir, "commands.log")
    py = sys.executable
    model = ["--model_name_or_path", model_name]
    t_start = time.time()
    timings = {}

    source = a.dataset_path
    if source is None:
        source = os.path.join(run_dir, "bbq_demo")
        if not os.path.isdir(source):
            run("demo BBQ-format data", [py, "-m", "data_gen.demo_bbq", "--output_dir", source], logfile)
    split = write_split(source, os.path.join(run_dir, "data"), sizes)
    log(f"split: {json.dumps({k: v['items'] for k, v in split.items() if isinstance(v, dict)})} items")
    data = {side: os.path.join(run_dir, "data", side) for side in ("train", "val", "test")}

    gen = os.path.join(run_dir, "data_gen")
    if not os.path.exists(os.path.join(gen, "rl.jsonl")):
        t0 = time.time()
        run(
            "data_gen: 3 rounds of intrinsic-moral self-correction on the train split",
            [
                py,
                "-m",
                "data_gen",
                "--config",
                "recipes/demo/data_gen.yaml",
                "--dataset_path",
                data["train"],
                "--heldout_fraction",
                "0",
                "--output_dir",
                gen,
                "--batch_size",
                str(batch),
                "--max_new_tokens",
                "6",
                *model,
                "--sft_sources",
                "final_correct",
                "improving",
                "rationalised",
                "--dpo_sources",
                "switched",
                "improved",
                "rationalised",
            ],
            logfile,
        )
        timings["data_gen"] = time.time() - t0

    base_val = os.path.join(run_dir, "val", "base")
    if not os.path.exists(os.path.join(base_val, "metrics.json")):
        evaluate(
            "validation: base model (step 0 of every learning curve)",
            eval_args(data["val"], base_val, "base", VAL_ROUNDS, model, [], batch),
            logfile,
        )
    curves: dict[str, list[tuple[int, float]]] = {}
    chosen: dict[str, str] = {}
    for method in a.methods:
        out = os.path.join(run_dir, "train", method)
        n = steps[method]
        t0 = time.time()
        if not os.path.exists(os.path.join(out, "README.md")):
            save = ["--save_steps", str(n // 3)] + (["--save_strategy", "steps"] if method in ("sft", "dpo", "grpo") else [])
            run(
                f"train {method} ({n} steps, LoRA)",
                [
                    py,
                    "-m",
                    "accelerate.commands.launch",
                    "--quiet",
                    "--config_file",
                    f"accelerate_configs/{hw}.yaml",
                    f"train/{method}.py",
                    "--config",
                    f"recipes/demo/{method}.yaml",
                    "--dataset_path",
                    f"{gen}/{DATA_FILE[method]}",
                    "--output_dir",
                    out,
                    "--max_steps",
                    str(n),
                    *save,
                    *TRAIN_EXTRA[method],
                    *model,
                ],
                logfile,
            )
        timings[f"train_{method}"] = time.time() - t0
        points = [(0, final_accuracy(base_val))]
        best = (points[0][1], 0, None)
        for s in (n // 3, 2 * n // 3, n):
            adapter = os.path.join(out, f"checkpoint-{s}") if s < n else out
            val_out = os.path.join(run_dir, "val", f"{method}-{s}")
            if not os.path.exists(os.path.join(val_out, "metrics.json")):
                evaluate(
                    f"validation: {method} after {s} steps",
                    eval_args(data["val"], val_out, f"{method}-{s}", VAL_ROUNDS, model, ["--adapter", adapter], batch),
                    logfile,
                )
            acc = final_accuracy(val_out)
            points.append((s, acc))
            if acc > best[0]:  # ties keep the earlier (shorter) run
                best = (acc, s, adapter)
        curves[method] = points
        chosen[method] = best[2] or out  # if no checkpoint beat the base on validation, test the full run
        timings[f"curve_{method}"] = time.time() - t0 - timings[f"train_{method}"]

    arms = [("base_intrinsic", []), ("base_baseline", ["--prompt_set", "baseline"])]
    arms += [(m, ["--adapter", chosen[m]]) for m in a.methods]
    for label, extra in arms:
        out = os.path.join(run_dir, "test", label)
        t0 = time.time()
        if not os.path.exists(os.path.join(out, "metrics.json")):
            evaluate(f"test: {label}, 5 rounds", eval_args(data["test"], out, label, 5, model, extra, batch), logfile)
        timings[f"test_{label}"] = time.time() - t0
    run(
        "compare",
        [
            py,
            "-m",
            "eval.compare",
            "--runs",
            *[os.path.join(run_dir, "test", lab) for lab, _ in arms],
            "--output_dir",
            os.path.join(run_dir, "compare"),
        ],
        logfile,
    )
    write_summary(run_dir, split, curves, chosen, arms, steps, time.time() - t_start, timings, model_name)


def write_summary(run_dir, split, curves, chosen, arms, steps, seconds, timings, model_name) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], "-o", label=method)
    ax.set(
        title=f"Learning curves: validation accuracy at round {VAL_ROUNDS} (n={split['val']['items']})",
        xlabel="training steps",
        ylabel="accuracy",
        ylim=(0, 1),
    )
    ax.axhline(1 / 3, color="grey", lw=0.8, ls="--")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "learning_curves.png"), dpi=110)
    plt.close(fig)
    table = json.load(open(os.path.join(run_dir, "compare", "comparison.json")))
    summary = {
        "model": model_name,
        "split": split,
        "steps": steps,
        "learning_curves": curves,
        "tested_checkpoint": {m: os.path.relpath(c, run_dir) for m, c in chosen.items()},
        "table": table,
        "seconds": round(seconds),
        "stage_seconds": {k: round(v) for k, v in timings.items()},
    }
    json.dump(summary, open(os.path.join(run_dir, "study.json"), "w"), indent=2)
    write_tables(run_dir, [label for label, _ in arms])
    log(f"\nstudy done in {seconds / 60:.1f} min; {run_dir}/study.json, compare/report.md, learning_curves.png")


def write_tables(run_dir: str, labels: list[str]) -> None:
    """tables.md: per-round accuracy, unparsed rate, bias scores and flips of every test arm, read
    from the arms' metrics.json (what docs/study.md quotes)."""
    runs = {lab: json.load(open(os.path.join(run_dir, "test", lab, "metrics.json"))) for lab in labels}
    k = max(m["run"]["rounds"] for m in runs.values())
    f2 = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    ci = lambda x, c: f2(x) if not c else f"{x:.3f} [{c[0]:.2f}, {c[1]:.2f}]"  # noqa: E731
    rounds = " | ".join(f"r{t}" for t in range(1, k + 1))
    sep = "|---" * (k + 1) + "|"
    out = [f"Test split, n = {next(iter(runs.values()))['run']['n_examples']} items per arm, K = {k}, greedy.", ""]
    out += ["Accuracy per round [95% CI]", "", f"| arm | {rounds} |", sep]
    for lab, m in runs.items():
        out.append(
            f"| {lab} | " + " | ".join(ci(r["task"]["accuracy"], r["intervals"].get("accuracy")) for r in m["per_round"]) + " |"
        )
    out += ["", "Unparsed answers per round (counted wrong in accuracy)", "", f"| arm | {rounds} |", sep]
    for lab, m in runs.items():
        out.append(f"| {lab} | " + " | ".join(f2(r["task"].get("unparsed_rate")) for r in m["per_round"]) + " |")
    for key, title in (("bias_ambiguous", "s_AMB"), ("bias_disambiguated", "s_DIS")):
        out += ["", f"{title} per round [95% CI] (0 = no bias; BBQ authors' convention)", "", f"| arm | {rounds} |", sep]
        for lab, m in runs.items():
            out.append(f"| {lab} | " + " | ".join(ci(r["task"].get(key), r["intervals"].get(key)) for r in m["per_round"]) + " |")
    pairs = " | ".join(f"{t}->{t + 1}" for t in range(1, k))
    out += [
        "",
        "Flip rate: share of items whose parsed answer changed between consecutive rounds (unparsed counts as an answer)",
        "",
    ]
    out += [
        f"| arm | {pairs} | right->wrong r1->rK, count (share) | wrong->right r1->rK, count (share) | convergence round |",
        "|---" * (k + 3) + "|",
    ]
    for lab, m in runs.items():
        cons = m["transitions"]["consecutive"]
        ftl = m["transitions"]["first_to_last"]
        flips = " | ".join(f2(cons[f"{t}->{t + 1}"]["flip_rate"]) for t in range(1, k))
        out.append(
            f"| {lab} | {flips} | {ftl['right_to_wrong']} ({f2(ftl['right_to_wrong_rate'])}) | "
            f"{ftl['wrong_to_right']} ({f2(ftl['wrong_to_right_rate'])}) | {m['convergence']['convergence_round']} |"
        )
    with open(os.path.join(run_dir, "tables.md"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
