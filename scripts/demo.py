"""The whole selfcorrect pipeline on the embedded SmolLM2-135M-Instruct, offline, on the CPU.

    python scripts/demo.py                 # about 24 minutes on 2 CPU cores (see README)
    python scripts/demo.py --full          # larger sizes, for a GPU
    python scripts/demo.py --reduced       # a handful of items and steps (the CI test)
    python scripts/demo.py --dataset_path ../shared/data/bbq    # the real BBQ release files instead

Runs the same commands a user runs on a 7B model, driven by recipes/demo/*.yaml:
BBQ-format data from our templates -> data_gen (K=3, intrinsic-moral) -> SFT, DPO, GRPO, SCoRe and
K-round RL with LoRA -> eval (K=5, held-out templates) of the base with intrinsic and baseline
prompts and of every adapter -> eval.compare; then the base and one trained arm (K-round RL) again
with ``stop_when: stable``: rounds used per item (compare_stop/). Everything lands in one run directory; the table is printed at the end,
with the machine facts the sampled stages' numbers depend on (CPU, threads, torch's CPU kernels; also in machine.json),
see docs/reproducibility.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = (("sft", "sft.jsonl"), ("dpo", "dpo.jsonl"), ("grpo", "rl.jsonl"), ("score", "rl.jsonl"), ("kround", "rl.jsonl"))
SIZES = {
    # name: (data_gen overrides, per-trainer overrides, eval overrides, methods trained)
    # Reduced (the CI test): rationalised corrections guarantee SFT rows from 12 items; one method
    # is enough to check the stages connect (tests/test_train.py runs every method).
    "reduced": (
        ["--limit", "12", "--rounds", "2", "--sft_sources", "final_correct", "improving", "rationalised"],
        {"sft": ["--max_steps", "2"]},
        ["--limit", "6", "--rounds", "2", "--probe_max_statements", "24", "--n_boot", "100"],
        ("sft",),
    ),
    "default": ([], {}, [], tuple(m for m, _ in METHODS)),
    "full": (
        ["--temperature", "0.7", "--samples", "4", "--batch_size", "64"],
        {
            "sft": ["--num_train_epochs", "3"],
            "dpo": ["--num_train_epochs", "3"],
            "grpo": ["--max_steps", "200"],
            "score": ["--max_steps", "200", "--stage1_steps", "60"],
            "kround": ["--max_steps", "200"],
        },
        ["--batch_size", "64", "--probe_max_statements", "400"],
        tuple(m for m, _ in METHODS),
    ),
}


def machine_facts() -> dict:
    """What the numbers of the sampled stages (GRPO, SCoRe, K-round RL train at temperature 1) depend
    on besides the code and the seeds: the CPU, the thread count and the kernel set torch chose for
    it. A last-bit difference in a logit can flip a sampled token, and the runs drift apart from
    there (docs/reproducibility.md), so the table is only comparable with one made on the same facts."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:  # not Linux: platform's word is all there is
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def stage(title: str, cmd: list[str], log: str) -> None:
    print(f"\n== {title}\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        p = subprocess.run(cmd, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"stage '{title}' failed (exit {p.returncode}); re-run the same command to resume")
    print(f"== {title}: done in {time.time() - t0:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="Larger sizes for a GPU.")
    size.add_argument("--reduced", action="store_true", help="Tiny sizes (CI).")
    p.add_argument("--run_dir", default="outputs/demo", help="Everything goes here.")
    p.add_argument("--dataset_path", default=None, help="BBQ release files to use instead of the demo set.")
    p.add_argument("--model_name_or_path", default=None, help="Override the embedded model (e.g. a hub id on a GPU).")
    a = p.parse_args()
    name = "full" if a.full else "reduced" if a.reduced else "default"
    dg_extra, train_extra, eval_extra, methods = SIZES[name]
    run = os.path.abspath(a.run_dir)
    os.makedirs(run, exist_ok=True)
    log = os.path.join(run, "commands.log")
    py = sys.executable
    model = ["--model_name_or_path", a.model_name_or_path] if a.model_name_or_path else []
    import torch

    hw = "single_gpu" if torch.cuda.is_available() else "cpu"
    facts = machine_facts()
    # accelerate launch picks its own CPU thread count (physical cores, unless OMP_NUM_THREADS is
    # set) while eval runs with torch's default (which may count logical ones); the thread count
    # changes float sums and so sampled tokens, so every stage gets the one count that is printed.
    threads = ["--num_cpu_threads_per_process", str(facts["torch_threads"])] if hw == "cpu" else []
    t_start = time.time()

    data = a.dataset_path
    if data is None:
        data = os.path.join(run, "bbq_demo")
        stage("BBQ-format demo data", [py, "-m", "data_gen.demo_bbq", "--output_dir", data], log)
    stage(
        "data_gen: 3 rounds of intrinsic self-correction on the training items",
        [
            py,
            "-m",
            "data_gen",
            "--config",
            "recipes/demo/data_gen.yaml",
            "--dataset_path",
            data,
            "--output_dir",
            f"{run}/data_gen",
            *model,
            *dg_extra,
        ],
        log,
    )
    trained = []
    for method, data_file in (m for m in METHODS if m[0] in methods):
        with open(f"{run}/data_gen/{data_file}") as f:
            if not any(line.strip() for line in f):
                print(
                    f"\n== {method.upper()}: data_gen kept no {data_file} rows for this model and data; skipping it", flush=True
                )
                continue
        trained.append(method)
        stage(
            f"train {method.upper()} (LoRA)",
            [
                py,
                "-m",
                "accelerate.commands.launch",
                "--quiet",
                *threads,
                "--config_file",
                f"accelerate_configs/{hw}.yaml",
                f"train/{method}.py",
                "--config",
                f"recipes/demo/{method}.yaml",
                "--dataset_path",
                f"{run}/data_gen/{data_file}",
                "--output_dir",
                f"{run}/{method}",
                *model,
                *train_extra.get(method, []),
            ],
            log,
        )
    runs = [("base_intrinsic", []), ("base_baseline", ["--prompt_set", "baseline"])]
    runs += [(m, ["--adapter", f"{run}/{m}"]) for m in trained]
    for label, extra in runs:
        stage(
            f"eval {label}: 5 rounds on held-out items",
            [
                py,
                "-m",
                "eval",
                "--config",
                "recipes/demo/eval.yaml",
                "--dataset_path",
                data,
                "--label",
                label,
                "--output_dir",
                f"{run}/eval/{label}",
                *model,
                *extra,
                *eval_extra,
            ],
            log,
        )
    stage(
        "compare",
        [py, "-m", "eval.compare", "--runs", *[f"{run}/eval/{label}" for label, _ in runs], "--output_dir", f"{run}/compare"],
        log,
    )
    # Convergence as compute: the base and one trained arm (K-round RL when it trained) with
    # stop_when stable, so a conversation that has settled stops; rounds used per item, compared
    # with the base's fixed-K run (eval.compare: rounds and tokens saved, accuracy at stop).
    arm = "kround" if "kround" in trained else (trained[0] if trained else None)
    stop_runs = [("base_intrinsic", [])] + ([(arm, ["--adapter", f"{run}/{arm}"])] if arm else [])
    for label, extra in stop_runs:
        stage(
            f"eval {label} with stop_when stable: rounds used per item",
            [
                py,
                "-m",
                "eval",
                "--config",
                "recipes/demo/eval.yaml",
                "--dataset_path",
                data,
                "--label",
                f"{label}_stable",
                "--output_dir",
                f"{run}/eval_stop/{label}",
                "--stop_when",
                "stable",
                "--probe",
                "false",
                *model,
                *extra,
                *eval_extra,
            ],
            log,
        )
    stage(
        "compare rounds used: fixed K vs stop_when stable",
        [
            py,
            "-m",
            "eval.compare",
            "--runs",
            f"{run}/eval/base_intrinsic",
            *[f"{run}/eval_stop/{label}" for label, _ in stop_runs],
            "--labels",
            "base_intrinsic_fixedK",
            *[f"{label}_stable" for label, _ in stop_runs],
            "--output_dir",
            f"{run}/compare_stop",
        ],
        log,
    )
    print("\nRounds used per item with stop_when stable (K = 5 without it):")
    for label, _ in stop_runs:
        with open(f"{run}/eval_stop/{label}/metrics.json") as f:
            st = json.load(f)["stopping"]
        tokens = "n/a" if st["mean_tokens"] is None else f"{st['mean_tokens']:.1f}"
        print(
            f"  {label}: {st['mean_rounds']:.2f} rounds, {tokens} tokens per item, accuracy at stop {st['accuracy_at_stop']:.3f}"
        )
    with open(os.path.join(run, "machine.json"), "w") as f:
        json.dump(facts, f, indent=1)
    print(
        f"\nMachine: {facts['cpu']} ({facts['logical_cpus']} logical CPUs), {facts['torch_threads']} torch threads,"
        f" torch {facts['torch']} CPU kernels {facts['torch_cpu_capability']}"
        + (f", GPU {facts['gpu']}" if facts["gpu"] else "")
        + ". Sampled training (GRPO, SCoRe, K-round) repeats bitwise only on the same facts (docs/reproducibility.md)."
    )
    print(f"Total {time.time() - t_start:.0f} s. Run directory: {run}")
    print(
        f"Report: {run}/compare/report.md (plots beside it: accuracy.png, flip_rate.png, entropy.png, probe.png, task_metrics.png)"
    )


if __name__ == "__main__":
    main()
