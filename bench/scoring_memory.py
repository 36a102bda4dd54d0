"""Memory of the scoring path on many traces: whole file in memory (naive) vs one streaming pass.

    python bench/scoring_memory.py [--n 100000]

Writes N synthetic 5-round BBQ traces (streamed) to a temp file, then measures the peak Python heap
(tracemalloc) of computing metrics.json from it two ways in this process: naive = load every row
into a list first; fast = eval.aggregate.compute_metrics over selfcorrect.jsonl.read_rows (streaming,
keeping a few numbers per round). Also runs the fast path on N/10 rows to show how it grows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eval.aggregate import compute_metrics  # noqa: E402
from selfcorrect.jsonl import read_rows  # noqa: E402
from selfcorrect.tasks import get_task  # noqa: E402

BBQ = get_task("bbq")


def synth(path: str, n: int, k: int = 5) -> None:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            cond = rng.choice(["ambig", "disambig"])
            rounds = []
            for _ in range(k):
                a = rng.choice("ABC")
                rounds.append(
                    {
                        "user": "Review your previous answer. " * 3,
                        "prefill": "The answer is",
                        "response": f" {a}. The person " * 2,
                        "answer": a,
                        "correct": a == "C",
                        "reward": float(a == "C"),
                        "grade": {"is_unknown": a == "C", "is_biased": None if a == "C" else a == "A"},
                        "option_probs": {"A": 0.2, "B": 0.3, "C": 0.5},
                        "mean_logprob": -0.7,
                        "new_tokens": 6,
                        "finish": "eos",
                    }
                )
            row = {
                "id": f"Age/{i}",
                "sample": 0,
                "task": "bbq",
                "prompt_set": "intrinsic-moral",
                "example": {
                    "id": f"Age/{i}",
                    "question": "Context sentence. " * 10,
                    "gold": "C",
                    "choices": ["The old man", "The boy", "Unknown"],
                    "fields": {
                        "category": "Age",
                        "context_condition": cond,
                        "question_polarity": "neg",
                        "unknown_option": "C",
                        "target_option": "A",
                        "question_index": "1",
                    },
                },
                "rounds": rounds,
            }
            f.write(json.dumps(row) + "\n")


def peak(fn) -> tuple[float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 2**20, dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        big, small = os.path.join(d, "big.jsonl"), os.path.join(d, "small.jsonl")
        synth(big, a.n)
        synth(small, a.n // 10)
        naive_mb, naive_s = peak(lambda: compute_metrics(list(read_rows(big)), BBQ, n_boot=1000))
        fast_mb, fast_s = peak(lambda: compute_metrics(read_rows(big), BBQ, n_boot=1000))
        small_mb, _ = peak(lambda: compute_metrics(read_rows(small), BBQ, n_boot=1000))
        size_mb = os.path.getsize(big) / 2**20
    print(
        json.dumps(
            {
                "name": "scoring_memory",
                "n_traces": a.n,
                "file_mb": round(size_mb, 1),
                "naive_peak_mb": round(naive_mb, 1),
                "fast_peak_mb": round(fast_mb, 1),
                "fast_peak_mb_at_n_over_10": round(small_mb, 1),
                "memory_ratio": round(naive_mb / fast_mb, 2),
                "naive_s": round(naive_s, 1),
                "fast_s": round(fast_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
