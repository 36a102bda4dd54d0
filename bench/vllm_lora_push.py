"""A LoRA adapter that changes every step, into a vLLM engine: merged weights loaded in place (what
train/rl_engine.py does) vs vLLM's own LoRA path with a new adapter id per step.

    .venv-vllm/bin/python bench/vllm_lora_push.py                                  # the tiny test model
    .venv-vllm/bin/python bench/vllm_lora_push.py --model smollm2-135m-instruct    # SmolLM2-135M-Instruct

One peft LoRA adapter (r 16, alpha 32, every linear layer: the trainers' defaults) on the model, in
float32; at every step its B matrices are drawn afresh (a stand-in for an optimizer step), and each
path gets that step's adapter into its engine and samples the same prompts (temperature 0.7, a seed
per request):

- merged: ``push_weights(llm, policy_weights(policy, lora=True))``, W + B·A of every adapted layer
  loaded in place (vLLM's layerwise ``reload_weights``), into an engine started as the trainer's.
- lora: the engine started the same way plus ``enable_lora`` (``max_lora_rank`` r); the adapter is
  written with ``save_pretrained`` to a new folder, loaded under a new id (``add_lora`` with a
  ``LoRARequest``; the previous id removed), and the prompts are sampled with that ``lora_request``.

Push = getting the step's adapter into the engine (for lora: the save, the load and the removal);
sampling = the ``generate`` call. Medians over the steps after the first (which warms caches). Each
step also checks that the engine sampled on policy: the mean |vLLM's log-prob - the peft model's|
per sampled token, at the sampling temperature (tests/test_vllm_rl.py's check), and the same gap
against the base without the adapter (how far off an engine that ignored the adapter would be).
Both paths draw with the same seeds, so where both are on policy they sample the same tokens; the
share of samples alike is printed. The ratio is merged's time over lora's (over 1: lora faster).
Last line: JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

T = 0.7


def prompts(tokenizer, n: int) -> list[list[int]]:
    """``n`` chat prompts as token ids (a user turn and the assistant's generation prompt)."""
    questions = [f"Question {i}: which of the two people was more careful, and why? Answer briefly." for i in range(n)]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def redraw(policy, step: int, std: float) -> None:
    """A new adapter: every lora_B drawn from N(0, std²), seeded by the step."""
    import torch

    g = torch.Generator().manual_seed(1000 + step)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def gaps(policy, prompt_ids, outs) -> tuple[float, float, int]:
    """Mean |vLLM's log-prob - the peft model's| per sampled token, the same against the base model
    (adapter disabled), and the number of tokens."""
    import torch

    from train.rl_functions import token_logprobs

    on, base = [], []
    for p, out in zip(prompt_ids, outs):
        c = out.outputs[0]
        ids = torch.tensor([list(p) + list(c.token_ids)])
        att = torch.ones_like(ids)
        with torch.no_grad():
            mine = token_logprobs(policy, ids, att, T)[0, len(p) - 1 :]
            with policy.disable_adapter():
                ref = token_logprobs(policy, ids, att, T)[0, len(p) - 1 :]
        theirs = [c.logprobs[k][t].logprob for k, t in enumerate(c.token_ids)]
        on += [abs(float(a) - b) for a, b in zip(mine, theirs)]
        base += [abs(float(a) - b) for a, b in zip(ref, theirs)]
    return sum(on) / len(on), sum(base) / len(base), len(on)


def engine(model: str, lora_rank: int | None):
    """An engine as ``start_engine(trainer=True)`` starts one (in this process, log-probs after
    temperature, eager, prefix cache, seed 0), with vLLM's LoRA support when ``lora_rank`` is set."""
    from vllm import LLM

    from selfcorrect.device import cuda_available
    from selfcorrect.vllm_backend import start_engine, vllm_dtype

    if lora_rank is None:
        return start_engine(model, trainer=True)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        return LLM(
            model=model,
            tokenizer=model,
            dtype=vllm_dtype("auto", cuda_available()),  # start_engine's
            enable_prefix_caching=True,
            enforce_eager=True,
            seed=0,
            logprobs_mode="processed_logprobs",
            enable_lora=True,
            max_lora_rank=lora_rank,
            max_loras=1,
        )
    finally:
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)


def run_path(path: str, model: str, policy, prompt_ids, a, tmp: str) -> dict:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from selfcorrect.vllm_backend import close_engine, push_weights
    from train.rl_engine import policy_weights

    t0 = time.perf_counter()
    llm = engine(model, a.lora_r if path == "lora" else None)
    start_s = time.perf_counter() - t0
    rows, sampled = [], []
    try:
        for step in range(a.steps):
            redraw(policy, step, a.b_std)
            params = [
                SamplingParams(max_tokens=a.max_new_tokens, temperature=T, seed=step * 1000 + i, logprobs=0, detokenize=False)
                for i in range(len(prompt_ids))
            ]
            request = None
            t0 = time.perf_counter()
            if path == "merged":
                import torch

                with torch.no_grad():
                    push_weights(llm, policy_weights(policy, lora=True))
            else:
                folder = os.path.join(tmp, f"adapter-{step}")
                policy.save_pretrained(folder)
                request = LoRARequest(f"step{step}", step + 1, folder)
                llm.llm_engine.add_lora(request)
                if step:
                    llm.llm_engine.remove_lora(step)
            t1 = time.perf_counter()
            outs = llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False, lora_request=request
            )
            t2 = time.perf_counter()
            gap, base_gap, n = gaps(policy, prompt_ids, outs)
            rows.append({"push_s": t1 - t0, "sampling_s": t2 - t1, "gap": gap, "base_gap": base_gap, "tokens": n})
            print(f"{path} step {step}: {rows[-1]}", file=sys.stderr, flush=True)
            sampled.append([list(o.outputs[0].token_ids) for o in outs])
    finally:
        if path == "merged":
            close_engine(llm)
        else:
            llm.llm_engine.engine_core.shutdown()
    later = rows[1:] or rows
    return {
        "engine_start_s": start_s,
        "push_s": statistics.median(r["push_s"] for r in later),
        "sampling_s": statistics.median(r["sampling_s"] for r in later),
        "tokens": statistics.median(r["tokens"] for r in later),
        "gap_max": max(r["gap"] for r in rows),
        "base_gap_min": min(r["base_gap"] for r in rows),
        "sampled": sampled,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="'tiny' (tests/tiny_model.py, heads of 32) or a model name or path")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="adapters per path; medians over all but the first")
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--b_std", type=float, default=0.05, help="std of each step's lora_B entries")
    a = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from selfcorrect.modeling import load_tokenizer, resolve_model_path
    from selfcorrect.vllm_backend import vllm_version

    tmp = tempfile.mkdtemp(prefix="bench-vllm-lora-")
    try:
        if a.model == "tiny":
            from tiny_model import build

            model = build(os.path.join(tmp, "tiny"), num_heads=2)
        else:
            model = resolve_model_path(a.model)
        tokenizer = load_tokenizer(model)
        prompt_ids = prompts(tokenizer, a.prompts)
        base = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
        lora = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0, target_modules="all-linear")
        policy = get_peft_model(base, lora).eval()
        res = {}
        for path in ("merged", "lora"):
            try:
                res[path] = run_path(path, model, policy, prompt_ids, a, tmp)
            except Exception as e:  # noqa: BLE001 - a path vLLM refuses is reported, with its error line
                res[path] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
                print(f"{path} failed: {res[path]['error']}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "sampled" in res["merged"] and "sampled" in res["lora"]:
        # Same seeds, same distribution up to rounding: the same tokens, unless a draw sits on a boundary.
        pairs = [(x, y) for a_, b_ in zip(res["merged"]["sampled"], res["lora"]["sampled"]) for x, y in zip(a_, b_)]
        same = sum(x == y for x, y in pairs) / len(pairs)
    else:
        same = None
    for q in res:
        res[q].pop("sampled", None)
    keys = ["engine_start_s", "push_s", "sampling_s", "tokens", "gap_max", "base_gap_min"]
    print(f"{'':16s}{'merged':>12s}{'lora':>12s}")
    for k in keys:
        print(f"{k:16s}" + "".join(f"{res[q][k]:12.4g}" if k in res[q] else f"{'-':>12s}" for q in ("merged", "lora")))
    result = {
        "name": "vllm_lora_push",
        "date": datetime.date.today().isoformat(),
        "model": a.model,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads",
        "vllm": vllm_version(),
        "prompts": a.prompts,
        "max_new_tokens": a.max_new_tokens,
        "steps": a.steps,
        "lora_r": a.lora_r,
        "same_samples": same,
        **{f"{q}_{k}": v for q in res for k, v in res[q].items()},
    }
    if same is not None:
        print(f"samples the two paths drew alike: {same:.0%}")
    if "push_s" in res["merged"] and "push_s" in res["lora"]:
        for k in ("push_s", "sampling_s"):
            result[f"{k}_merged_over_lora"] = round(res["merged"][k] / res["lora"][k], 2)
        step = {q: res[q]["push_s"] + res[q]["sampling_s"] for q in res}
        result["push_plus_sampling_merged_over_lora"] = round(step["merged"] / step["lora"], 2)
        print(f"push + sampling, merged / lora: {result['push_plus_sampling_merged_over_lora']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
