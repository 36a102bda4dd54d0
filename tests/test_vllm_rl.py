"""On-policy RL sampled by vLLM (``generation_backend: vllm`` of train/score.py and train/kround.py):
the engine samples with the policy's weights of the current step (the `vllm` tier, .venv-vllm).

The proof is numerical: vLLM returns the log-probability of each token it sampled under the
distribution it drew from (softmax(logits / T), ``logprobs_mode processed_logprobs``), and the
trainer recomputes the same quantity with the module it trains. Both run in float32 on the CPU with
different kernels, so they differ by rounding (about 1e-6 nats per token on the tiny model); an
engine that kept an older step's weights differs by orders of magnitude more, and the same check
fails on it (shown here by skipping the push).
"""

import json
import os

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from helpers import online_trainer

from selfcorrect.rollout import HFGenerator, SamplingConfig, run_rounds

# Mean absolute difference, in nats per sampled token, between vLLM's and the trainer's log-probs.
LOGPROB_TOL = 1e-3
T = 0.7


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny model with heads of 32 dimensions (vLLM's CPU attention has no 16). Not the variant
    that ends its turns often (``end_prob``): its huge MLP bias drowns what a LoRA update on the
    attention changes, and a stale engine would pass for a current one."""
    from tiny_model import build

    return build(str(tmp_path_factory.mktemp("tiny-rl-vllm")), num_heads=2)


def _args(model_dir, data, out, method="kround", steps=3):
    args = ["--model_name_or_path", model_dir, "--dataset_path", data, "--output_dir", out]
    args += ["--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--max_steps", str(steps)]
    args += ["--per_device_prompts", "2", "--num_generations", "4", "--max_new_tokens", "6", "--micro_batch_size", "8"]
    args += ["--learning_rate", "5e-2", "--temperature", str(T), "--generation_backend", "vllm", "--report_to", "none"]
    return args + (["--stage1_steps", "1"] if method == "score" else ["--rounds", "3"])


def _recorded(trainer):
    """Every round's generations of the next sampling call, as the engine returned them."""
    rounds = []
    orig = trainer.gen.generate

    def generate(*a, **k):
        rounds.append(orig(*a, **k))
        return rounds[-1]

    trainer.gen.generate = generate
    return rounds


def _logprob_gap(trainer, gens):
    """Mean |vLLM's log-prob - the trainer's| over every sampled token of every round, and the count."""
    import torch

    from train.rl_functions import Episode, pack_episode, token_logprobs

    gaps = []
    for e in range(len(gens[0])):
        ep = Episode([g[e].prompt_ids for g in gens], [g[e].token_ids for g in gens], [0.0] * len(gens))
        for ids, owner in pack_episode(ep):
            with torch.no_grad():
                lp = token_logprobs(trainer.model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), T)[0]
            for t in range(len(gens)):
                mine = [float(lp[i - 1]) for i in range(1, len(ids)) if owner[i] == t]
                if mine:
                    theirs = gens[t][e].token_logprobs
                    assert len(theirs) == len(mine)
                    gaps += [abs(a - b) for a, b in zip(mine, theirs)]
    return sum(gaps) / len(gaps), len(gaps)


def _sample(trainer, step):
    rec = _recorded(trainer)
    episodes = trainer.sample(step)
    del trainer.gen.generate
    return episodes, rec


def test_vllm_samples_with_the_policys_weights_of_every_step(model_dir, toy_rl_file, tmp_path, monkeypatch):
    """Step 0 and after 2 updates: vLLM's log-probs of its sampled tokens are the trainer's at the
    sampling temperature (mean gap under LOGPROB_TOL); the same engine without the step's weight
    push fails that check; and with greedy decoding the pushed engine's rounds are the HF engine's
    (decoding with the trained policy module) token for token."""
    from train.rl_functions import round_advantages

    trainer = online_trainer("kround", _args(model_dir, toy_rl_file, str(tmp_path / "run")))
    trainer.setup()
    trainer.policy.eval()  # LoRA dropout off in the trainer's scoring, as in sampling
    episodes, gens = _sample(trainer, 0)
    gap0, n = _logprob_gap(trainer, gens)
    assert n >= 20 and gap0 < LOGPROB_TOL, (gap0, n)
    for step in (0, 1):
        if step:
            episodes, _ = _sample(trainer, step)
        adv = round_advantages([trainer.episode_returns(ep, step) for ep in episodes], trainer.cfg.num_generations)
        trainer.update(episodes, adv, trainer.kl_coefs(step))
    trainer.policy.eval()
    # Stale: the engine keeps step 1's weights (no push before step 2's sampling).
    monkeypatch.setattr("train.online_rl.push_policy", lambda *a, **k: 0)
    _, gens = _sample(trainer, 2)
    stale, _ = _logprob_gap(trainer, gens)
    assert stale > 10 * LOGPROB_TOL, f"the check cannot tell a stale engine: gap {stale}"
    monkeypatch.undo()
    _, gens = _sample(trainer, 2)
    gap2, n = _logprob_gap(trainer, gens)
    assert n >= 20 and gap2 < LOGPROB_TOL, (gap2, stale)
    print(f"mean |log-prob gap| per token: step 0 {gap0:.2e}, step 2 {gap2:.2e}, step 2 stale {stale:.2e}")
    # Greedy: the engine's rounds (the step-2 weights are still in it) against the HF loop on the policy.
    greedy = SamplingConfig(max_new_tokens=6)
    trainer.gen.sampling = greedy
    hf = HFGenerator(trainer.policy, trainer.tokenizer, greedy, batch_size=8)
    examples = trainer.examples
    vl = run_rounds(trainer.gen, trainer.task, trainer.prompt_set, examples, 3, samples=1).generations
    ref = run_rounds(hf, trainer.task, trainer.prompt_set, examples, 3, samples=1).generations
    for r_vl, r_hf in zip(vl, ref, strict=True):
        assert [g.prompt_ids for g in r_vl] == [g.prompt_ids for g in r_hf]
        assert [g.token_ids for g in r_vl] == [g.token_ids for g in r_hf]


@pytest.mark.parametrize("method", ["kround", "score"])
def test_vllm_runs_finish_save_and_reload(method, model_dir, toy_rl_file, tmp_path):
    """`train/kround.py` (4 steps) and `train/score.py` with generation_backend vllm run to the end,
    log each step's time split, and save an adapter that loads onto the base and moved."""
    from test_train import lora_b_changed

    from selfcorrect.modeling import load_model
    from train.kround import main as kround_main
    from train.score import main as score_main

    out = str(tmp_path / method)
    {"kround": kround_main, "score": score_main}[method](
        _args(model_dir, toy_rl_file, out, method, steps=4 if method == "kround" else 3)
    )
    log = [json.loads(line) for line in open(os.path.join(out, f"{method}_log.jsonl"))]
    assert len(log) == (4 if method == "kround" else 3)
    for h in log:
        assert h["time_weight_push"] > 0 and h["time_sampling"] > 0 and h["time_policy_pass"] > 0
        assert h["tokens_sampled_per_s"] > 0 and h["tokens_trained_per_s"] > 0
    assert lora_b_changed(out)
    model = load_model(model_dir, out, device="cpu")
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert b and all(float(p.abs().sum()) > 0 for p in b)  # the trained adapter, not a fresh one


def test_vllm_resumed_run_samples_with_the_resumed_weights(model_dir, toy_rl_file, tmp_path, monkeypatch):
    """A K-round run (4 steps, a checkpoint every 2) killed right after checkpoint-2 and run again in
    its folder: the resumed run's engine samples with checkpoint-2's adapter, not the base.

    The engine is started on the base model's files, and a fresh run's policy at step 0 is the base
    too (LoRA's B starts at zero), so an engine that samples the first step without a push is on
    policy there and the step-0 check of the test above cannot tell. A resumed run is where that
    shortcut breaks: its policy is the restored adapter, so a code path that pushes only after an
    update (or restores the checkpoint after the engine's first push) samples step 3 from the base.
    So: the restored adapter is not the base (B non-zero); vLLM's log-probs of its step-3 samples
    are the trainer's, recomputed with the restored adapter (gap under LOGPROB_TOL); the same engine
    without that push fails the check; and the resumed run's steps 3-4 sample the tokens the
    uninterrupted run sampled (``samples_sha256``: vLLM draws with a seed per request). Step 4 also
    needs step 3's update to draw the LoRA dropout of the uninterrupted run: the restored random
    states must survive the engine's start, which seeds them (``rng_kept``); it failed without."""
    from helpers import left_by_a_kill_after

    from train.kround import main as kround_main
    from train.rl_engine import rng_kept

    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    kround_main([*_args(model_dir, toy_rl_file, full, steps=4), "--save_steps", "2"])
    left_by_a_kill_after(full, 2, resumed)
    trainer = online_trainer("kround", [*_args(model_dir, toy_rl_file, resumed, steps=4), "--save_steps", "2"])
    trainer.setup()
    assert trainer.start_step == 2
    b = [p for n, p in trainer.policy.named_parameters() if "lora_B" in n]
    assert b and all(float(p.detach().abs().sum()) > 0 for p in b), "the restored adapter is the base: the check proves nothing"
    # The checks sample outside the run: they keep its random streams (vLLM's sampler draws from them).
    with rng_kept():
        # Stale: the engine keeps the base weights it started with (no push before the resumed step).
        with monkeypatch.context() as m:
            m.setattr("train.online_rl.push_policy", lambda *a, **k: 0)
            _, gens = _sample(trainer, 2)
        stale, _ = _logprob_gap(trainer, gens)
        _, gens = _sample(trainer, 2)
        gap, n = _logprob_gap(trainer, gens)
    assert stale > 10 * LOGPROB_TOL, f"the check cannot tell an engine on the base: gap {stale}"
    assert n >= 20 and gap < LOGPROB_TOL, (gap, stale)
    print(f"mean |log-prob gap| per token after resume: {gap:.2e}, engine left on the base {stale:.2e}")
    trainer.run()  # steps 3-4, as the entry point runs them after its set-up
    logs = [[json.loads(line) for line in open(os.path.join(d, "kround_log.jsonl"))] for d in (full, resumed)]
    assert [h["step"] for h in logs[1]] == [3, 4]
    assert [h["samples_sha256"] for h in logs[0][2:]] == [h["samples_sha256"] for h in logs[1]]


def test_trl_colocate_sync_reaches_the_cpu_engine(model_dir, monkeypatch):
    """GRPO's vLLM route (train/grpo.py, generation_backend trl, use_vllm, vllm_mode colocate) samples
    from TRL's own engine, which TRL 1.16 updates with ``model.load_weights`` (VLLMGeneration.sync_weights),
    not the layerwise reload of ``push_weights``. Built as TRL builds it (no dtype: vLLM's CPU platform
    picks bfloat16 for this float32 checkpoint) and with a LoRA policy as in the GRPO recipes, the engine's
    prompt log-probs follow the policy after an update and TRL's sync; the same engine before the sync
    is the stale control. It works on the CPU build only because oneDNN cannot build a bfloat16 matmul
    on a CPU without AVX-512 and vLLM falls back to torch's linear, which keeps the weights that
    ``load_weights`` writes: where oneDNN takes them (float32 here; bfloat16 with AVX-512 BF16 or AMX)
    the linear weights are freed after loading and TRL's sync raises "AttributeError: 'Parameter'
    object has no attribute 'weight_loader'" (measured with float32 forced, docs/vllm.md)."""
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.generation.vllm_generation import VLLMGeneration
    from vllm import SamplingParams

    accelerator = Accelerator(cpu=True)  # before the variables below, which would make it start a process group
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # TRL sets them: restored after
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    gen = VLLMGeneration(
        model=model, accelerator=accelerator, processing_class=tok, mode="colocate",
        gpu_memory_utilization=0.3, max_model_length=128, max_num_seqs=4, max_completion_length=8,
    )  # fmt: skip
    prompts = ["Review your previous answer. If you are very confident about your answer, maintain it.", "0 1 2 3 yes no"]
    ids = [tok(p)["input_ids"] for p in prompts]

    def engine():
        outs = gen.llm.generate([{"prompt_token_ids": i} for i in ids], SamplingParams(max_tokens=1, prompt_logprobs=0))
        return [o.prompt_logprobs[t][i[t]].logprob for o, i in zip(outs, ids) for t in range(1, len(i))]

    def policy():
        with torch.no_grad():
            lps = [model(torch.tensor([i])).logits[0].log_softmax(-1) for i in ids]
        return [float(lp[t - 1, i[t]]) for lp, i in zip(lps, ids) for t in range(1, len(i))]

    def gap(a, b):
        return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)

    try:
        gen.sync_weights()  # TRL's first sync (global_step 0), before any update
        start = gap(engine(), policy())
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.add_(0.5 * torch.randn_like(p, generator=torch.Generator().manual_seed(len(name))))
        stale = gap(engine(), policy())
        gen.sync_weights()
        synced = gap(engine(), policy())
    finally:
        gen.llm.llm_engine.engine_core.shutdown()
    print(f"TRL colocate, mean |log-prob gap| per token: start {start:.2e}, after sync {synced:.2e}, unsynced {stale:.2e}")
    assert stale > 0.05, f"the update does not move the policy enough to tell a stale engine: {stale}"
    assert start < 1e-2 and synced < 1e-2 and synced < stale / 10, (start, synced, stale)
