"""Answers of very different lengths: finished rows kept in the batch (naive, what model.generate
does) vs dropped from it once they are a quarter of the batch (``HFGenerator(compact=True)``).

    python bench/ragged_generation.py                       # CPU, small random model, < 1 min
    python bench/ragged_generation.py --shape qwen2.5-0.5b  # GPU, random-init real shape

Chain-of-thought answers (GSM8K, the -cot prompt sets) range from a few tokens to max_new_tokens.
Here a random model samples at temperature 1 and a set of --end_share of the vocabulary ends an
answer, so lengths are geometric (mean about 1 / end_share, capped at --new_tokens). Sampling draws
one uniform per row per step whatever the batch holds, so both paths produce the same tokens
(compared below). tok/s counts real answer tokens. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from multi_round_generation import SHAPES, _Tok, add_bound, build  # noqa: E402

from selfcorrect.rollout import HFGenerator, SamplingConfig  # noqa: E402


def run(model, prompts, new_tokens, end_ids, compact):
    g = HFGenerator(
        model,
        _Tok(),
        SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, seed=1),
        batch_size=len(prompts),
        incremental=False,
        compact=compact,
    )
    g.eos_ids = end_ids
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = g.generate_ids(prompts, seed_key="bench")
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    tokens = sum(o.new_tokens for o in outs)
    return tokens / (time.perf_counter() - t0), [o.token_ids for o in outs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--end_share", type=float, default=1 / 48, help="Share of the vocabulary that ends an answer.")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bandwidth_tb_s", type=float, default=3.0)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    batch = a.batch or (64 if cuda else 16)
    model = build(a.shape, device, dtype)
    vocab = model.config.vocab_size
    end_ids = list(range(1, 1 + max(1, int(vocab * a.end_share))))
    rng = torch.Generator().manual_seed(0)
    prompts = torch.randint(1 + len(end_ids), vocab, (batch, a.prompt_len), generator=rng).tolist()
    with torch.no_grad():
        run(model, prompts[:2], 4, end_ids, True)  # warm-up
        speeds: dict[bool, list[float]] = {False: [], True: []}
        same = True
        for _ in range(a.repeats):
            (sn, on), (sf, of) = (run(model, prompts, a.new_tokens, end_ids, c) for c in (False, True))
            speeds[False].append(sn)
            speeds[True].append(sf)
            same = same and on == of
    lengths = [len(o) for o in of]
    naive, fast = statistics.median(speeds[False]), statistics.median(speeds[True])
    result = {
        "name": f"ragged_generation/{a.shape}",
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        "prompt_len": a.prompt_len,
        "max_new_tokens": a.new_tokens,
        "mean_answer_tokens": round(statistics.mean(lengths), 1),
        "max_answer_tokens": max(lengths),
        "naive_tok_s": round(naive, 1),
        "fast_tok_s": round(fast, 1),
        "speedup": round(fast / naive, 2),
        "outputs_identical": same,
        "bound_ratio": None,
    }
    add_bound(result, model, batch, fast, a.bandwidth_tb_s)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
