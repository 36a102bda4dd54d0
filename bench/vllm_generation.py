"""K-round generation through vLLM vs the project's engine vs a naive ``model.generate`` loop.

    .venv-vllm/bin/python bench/vllm_generation.py            # SmolLM2-135M-Instruct, 64 BBQ items, K = 3
    .venv-vllm/bin/python bench/vllm_generation.py --model Qwen/Qwen2.5-1.5B-Instruct   # on a GPU

All three run ``run_rounds`` (the rollout data_gen and eval use) on the same items with the same
prompts, greedy, in this process: naive = every round, each batch of rendered conversations goes
through HF ``model.generate`` (left-padded, no cache kept between rounds); ours = ``HFGenerator``
(round-incremental KV cache); vllm = ``VLLMGenerator`` (the whole round in one call, prefix cache).
The vLLM engine's start is timed apart from generation. Throughput counts the tokens each path
generated (answers end at the end-of-turn token, so the counts differ where the answers do); the
share of rounds whose answers agree with ours is printed too. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from selfcorrect.rollout import HFGenerator, RolloutBackend, SamplingConfig, run_rounds  # noqa: E402


class NaiveGenerator(RolloutBackend):
    """The plain-transformers baseline: ``model.generate`` on whole conversations, batch by batch."""

    def __init__(self, model, tokenizer, sampling, batch_size):
        super().__init__(tokenizer, sampling, model.generation_config)
        self.model, self.batch_size = model, batch_size

    def generate_ids(self, prompt_ids, option_labels=None, seed_key="", session=None):
        import torch

        out = []
        dev = next(self.model.parameters()).device
        for i in range(0, len(prompt_ids), self.batch_size):
            part = prompt_ids[i : i + self.batch_size]
            width = max(len(p) for p in part)
            ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in part], device=dev)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in part], device=dev)
            res = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=self.sampling.max_new_tokens,
                do_sample=False,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
            logp = torch.stack(res.logits, 1).float().log_softmax(-1)
            new = res.sequences[:, width:]
            chosen = logp.gather(-1, new[..., None])[..., 0]
            for b in range(len(part)):
                out.append(self._generation(new[b].tolist(), lambda n, row=chosen[b]: float(row[:n].mean()), None, None))
        return out


def timed(generator, task, prompt_set, examples, rounds):
    t0 = time.perf_counter()
    trajs = run_rounds(generator, task, prompt_set, examples, rounds).trajectories
    dt = time.perf_counter() - t0
    tokens = sum(r.new_tokens for t in trajs for r in t.rounds)
    return trajs, dt, tokens


def agreement(a, b) -> float:
    pairs = [(x.answer, y.answer) for s, t in zip(a, b) for x, y in zip(s.rounds, t.rounds)]
    return sum(x == y for x, y in pairs) / len(pairs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dataset_path", default=None, help="BBQ release folder (default: tests/fixtures/bbq).")
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=16, help="Batch of the two HF paths (vLLM takes each round whole).")
    p.add_argument("--dtype", default="auto")
    a = p.parse_args()

    import torch

    from selfcorrect.modeling import load_model, load_tokenizer, resolve_model_path
    from selfcorrect.prompts import get_prompt_set
    from selfcorrect.tasks import get_task
    from selfcorrect.vllm_backend import VLLMGenerator, start_engine, vllm_version

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    task, ps = get_task("bbq"), get_prompt_set("intrinsic-moral")
    examples = []
    for ex in task.load(a.dataset_path or os.path.join(root, "tests", "fixtures", "bbq"), "test"):
        examples.append(ex)
        if len(examples) == a.conversations:
            break
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    path = resolve_model_path(a.model)
    tok = load_tokenizer(a.model)
    sampling = SamplingConfig(max_new_tokens=a.max_new_tokens)

    def done(name, dt, tokens):
        print(f"{name}: {dt:.1f} s, {tokens} tokens, {tokens / dt:.1f} tok/s", file=sys.stderr, flush=True)

    with torch.no_grad():
        model = load_model(a.model, dtype=a.dtype, device=device)
        ours, t_ours, n_ours = timed(HFGenerator(model, tok, sampling, a.batch_size), task, ps, examples, a.rounds)
        done("ours", t_ours, n_ours)
        t0 = time.perf_counter()
        llm = start_engine(path, a.dtype)
        t_start = time.perf_counter() - t0
        vl, t_vllm, n_vllm = timed(VLLMGenerator(path, tok, sampling, llm=llm), task, ps, examples, a.rounds)
        done(f"vllm (engine start {t_start:.1f} s)", t_vllm, n_vllm)
        naive, t_naive, n_naive = timed(NaiveGenerator(model, tok, sampling, a.batch_size), task, ps, examples, a.rounds)
        done("naive", t_naive, n_naive)
    result = {
        "name": "vllm_generation",
        "model": a.model,
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "vllm": vllm_version(),
        "conversations": len(examples),
        "rounds": a.rounds,
        "max_new_tokens": a.max_new_tokens,
        "batch_size": a.batch_size,
        "naive_s": round(t_naive, 1),
        "ours_s": round(t_ours, 1),
        "vllm_s": round(t_vllm, 1),
        "vllm_start_s": round(t_start, 1),
        "naive_tok_s": round(n_naive / t_naive, 1),
        "ours_tok_s": round(n_ours / t_ours, 1),
        "vllm_tok_s": round(n_vllm / t_vllm, 1),
        "vllm_over_ours": round((n_vllm / t_vllm) / (n_ours / t_ours), 2),
        "vllm_over_naive": round((n_vllm / t_vllm) / (n_naive / t_naive), 2),
        "ours_over_naive": round((n_ours / t_ours) / (n_naive / t_naive), 2),
        "answers_agree_vllm_ours": round(agreement(vl, ours), 3),
        "answers_agree_naive_ours": round(agreement(naive, ours), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
