"""Multi-round generation: full re-encoding every round (naive) vs round-incremental KV-cache reuse.

    python bench/multi_round_generation.py                       # CPU, small random model, < 1 min
    python bench/multi_round_generation.py --shape qwen2.5-0.5b  # GPU, random-init Qwen2.5-0.5B shape

Each round appends the previous answer and a fixed-length instruction to every conversation, as a
self-correction rollout does; generation ignores end-of-sequence so both paths produce the same
token count. naive = a loop over HF ``model.generate`` on the whole conversation each round;
no_cache = our decoding loop re-encoding every round (``HFGenerator(incremental=False)``); fast =
``HFGenerator(incremental=True)``. All run in this process on the same model; the last line is JSON.
bound_ratio (GPU only) is fast tokens/s over the weight-read bound batch / (weight bytes / bandwidth).
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

from selfcorrect.rollout import HFGenerator, SamplingConfig  # noqa: E402

SHAPES = {
    # Published Qwen2.5 architecture values (config.json of the released models).
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=8192,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=False,
    ),
}


class _Tok:
    """The generator needs only pad/eos ids and decode when fed token ids."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return ""


def build(shape: str, device: str, dtype, attn: str = "sdpa"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096)
    cfg._attn_implementation = attn
    return Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def add_bound(result: dict, model, rows: int, fast_tok_s: float, bandwidth_tb_s: float) -> None:
    """On CUDA: the weight-read bound rows / (weight bytes / bandwidth) and fast's share of it."""
    if next(model.parameters()).device.type != "cuda":
        return
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound = rows / (weight_bytes / (bandwidth_tb_s * 1e12))
    result["bound_tok_s"] = round(bound)
    result["bound_ratio"] = round(fast_tok_s / bound, 4)


def hf_generate(model, prompts: list[list[int]], new_tokens: int, sample: bool) -> list[list[int]]:
    """One left-padded ``model.generate`` call (fixed length: end-of-sequence ignored)."""
    dev = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    sampling = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0) if sample else dict(do_sample=False)
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0, **sampling
    )
    return out[:, width:].tolist()


def run(model, batch, prompt_len, rounds, new_tokens, instr_len, mode, seed=0):
    """mode: 'hf' (model.generate every round), 'no_cache' or 'fast' (our loop without/with the cache)."""
    g = HFGenerator(model, _Tok(), SamplingConfig(max_new_tokens=new_tokens), batch_size=batch, incremental=mode == "fast")
    g.eos_ids = []  # fixed-length generation
    vocab = model.config.vocab_size
    rng = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, vocab, (batch, prompt_len), generator=rng).tolist()
    session: dict = {}
    generated = 0
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(rounds):
        if mode == "hf":
            outs = hf_generate(model, prompts, new_tokens, sample=False)
        else:
            outs = [o.token_ids for o in g.generate_ids(prompts, session=session)]
        generated += sum(len(o) for o in outs)
        instr = torch.randint(1, vocab, (instr_len,), generator=rng).tolist()
        prompts = [p + o + instr for p, o in zip(prompts, outs)]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return generated / (time.perf_counter() - t0), outs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--prompt_len", type=int, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new_tokens", type=int, default=None)
    p.add_argument("--instr_len", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--bandwidth_tb_s", type=float, default=3.0, help="Measured HBM bandwidth for the bound (H100: ~3.0).")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    batch = a.batch or (64 if cuda else 8)
    prompt_len = a.prompt_len or (256 if cuda else 128)
    new_tokens = a.new_tokens or (64 if cuda else 16)
    model = build(a.shape, device, dtype)
    with torch.no_grad():
        for mode in ("hf", "fast"):
            run(model, batch, 16, 2, 2, 4, mode)  # warm-up
        speeds: dict[str, list[float]] = {"hf": [], "no_cache": [], "fast": []}
        same = True
        for rep in range(a.repeats):
            outs = {}
            for mode in speeds:
                tok_s, outs[mode] = run(model, batch, prompt_len, a.rounds, new_tokens, a.instr_len, mode, seed=rep)
                speeds[mode].append(tok_s)
            same = same and outs["hf"] == outs["no_cache"] == outs["fast"]
    naive, no_cache, fast = (statistics.median(speeds[m]) for m in ("hf", "no_cache", "fast"))
    result = {
        "name": f"multi_round_generation/{a.shape}",
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        "prompt_len": prompt_len,
        "rounds": a.rounds,
        "new_tokens": new_tokens,
        "instr_len": a.instr_len,
        "naive_tok_s": round(naive, 1),
        "no_cache_tok_s": round(no_cache, 1),
        "fast_tok_s": round(fast, 1),
        "speedup": round(fast / naive, 2),
        "greedy_outputs_identical": same,
        "bound_ratio": None,
    }
    add_bound(result, model, batch, fast, a.bandwidth_tb_s)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
