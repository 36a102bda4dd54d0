"""Online-RL generation: TRL's GRPO path (HF generate on every repeated prompt) vs selfcorrect's
rollout (each prompt encoded once per group, the cache shared by its num_generations samples).

    python bench/grpo_generation.py                       # CPU, small random model, < 1 min
    python bench/grpo_generation.py --shape qwen2.5-1.5b  # GPU, random-init Qwen2.5-1.5B shape

GRPO samples ``num_generations`` completions of each prompt; a self-correction revision prompt
holds the whole earlier conversation, so it is long next to the completion. naive = what TRL's
GRPOTrainer does without vLLM: left-pad the repeated prompts and call ``model.generate`` (sampling,
temperature 1). fast = ``HFGenerator(share_prefill=True)`` as ``train/grpo.py`` uses it. The middle
column (``HFGenerator(share_prefill=False)``) separates the decoding loop from the sharing.
Generation ignores end-of-sequence so every path produces the same token count. Last line: JSON.
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

from multi_round_generation import SHAPES, _Tok, add_bound, build, hf_generate  # noqa: E402

from selfcorrect.rollout import HFGenerator, SamplingConfig  # noqa: E402


def _sync(model) -> None:
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def trl_style(model, prompts: list[list[int]], new_tokens: int) -> float:
    """TRL's non-vLLM GRPO generation: left-padded batch of repeated prompts, model.generate."""
    _sync(model)
    t0 = time.perf_counter()
    hf_generate(model, prompts, new_tokens, sample=True)
    _sync(model)
    return len(prompts) * new_tokens / (time.perf_counter() - t0)


def ours(model, prompts: list[list[int]], new_tokens: int, share: bool) -> float:
    g = HFGenerator(
        model,
        _Tok(),
        SamplingConfig(max_new_tokens=new_tokens, temperature=1.0),
        batch_size=len(prompts),
        incremental=False,
        share_prefill=share,
    )
    g.eos_ids = []
    _sync(model)
    t0 = time.perf_counter()
    outs = g.generate_ids(prompts, seed_key="bench")
    _sync(model)
    assert all(o.new_tokens == new_tokens for o in outs)
    return len(prompts) * new_tokens / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--prompts", type=int, default=None, help="Distinct prompts per generation batch.")
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--prompt_len", type=int, default=None, help="Mean prompt length (lengths vary +-25%%).")
    p.add_argument("--new_tokens", type=int, default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--bandwidth_tb_s", type=float, default=3.0, help="Measured HBM bandwidth for the bound (H100: ~3.0).")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    n_prompts = a.prompts or (8 if cuda else 2)
    prompt_len = a.prompt_len or (1024 if cuda else 384)
    new_tokens = a.new_tokens or (128 if cuda else 16)
    model = build(a.shape, device, dtype)
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(int(prompt_len * 0.75), int(prompt_len * 1.25) + 1, (n_prompts,), generator=rng).tolist()
    distinct = [torch.randint(1, model.config.vocab_size, (n,), generator=rng).tolist() for n in lengths]
    prompts = [p for p in distinct for _ in range(a.num_generations)]
    with torch.no_grad():
        trl_style(model, prompts[:2], 2), ours(model, prompts[:2], 2, True)  # warm-up
        runs = {"naive": [], "loop": [], "fast": []}
        for _ in range(a.repeats):
            runs["naive"].append(trl_style(model, prompts, new_tokens))
            runs["loop"].append(ours(model, prompts, new_tokens, False))
            runs["fast"].append(ours(model, prompts, new_tokens, True))
    naive, loop, fast = (statistics.median(runs[k]) for k in ("naive", "loop", "fast"))
    result = {
        "name": f"grpo_generation/{a.shape}",
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "dtype": str(dtype).replace("torch.", ""),
        "prompts": n_prompts,
        "num_generations": a.num_generations,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "naive_tok_s": round(naive, 1),
        "no_sharing_tok_s": round(loop, 1),
        "fast_tok_s": round(fast, 1),
        "speedup": round(fast / naive, 2),
        "bound_ratio": None,
    }
    add_bound(result, model, len(prompts), fast, a.bandwidth_tb_s)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
