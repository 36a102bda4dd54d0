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
