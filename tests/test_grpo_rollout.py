"""train/grpo.py's rollout_func (the fast generation path GRPO hands to TRL) and its option checks."""

from types import SimpleNamespace

import pytest
import torch
from helpers import grpo_trl_args

from selfcorrect.errors import UserError
from selfcorrect.modeling import load_model, load_tokenizer
from train.grpo import GRPOEpisodeConfig, check_options, make_rollout_func

_cfg = grpo_trl_args


def test_rollout_func_returns_one_sample_per_repeated_prompt(tiny_model_dir):
    from accelerate import Accelerator

    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu").train()
    trainer = SimpleNamespace(model_wrapped=model, accelerator=Accelerator(cpu=True), state=SimpleNamespace(global_step=0))
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("Is the sky blue?", "Who was late?")
        for _ in range(4)
    ]
    rollout = make_rollout_func(tok, _cfg())
    out = rollout(prompts, trainer)
    assert model.training  # sampled in eval mode, training mode restored
    assert out["prompt_ids"] == [tok.encode(p, add_special_tokens=False) for p in prompts]
    assert len(out["completion_ids"]) == len(out["logprobs"]) == 8
    for ids, lps in zip(out["completion_ids"], out["logprobs"]):
        assert 1 <= len(ids) == len(lps) <= 6 and all(lp <= 0 for lp in lps)
    assert len({tuple(c) for c in out["completion_ids"][:4]}) > 1  # a group holds distinct samples
    # The next call (a later step) draws new samples.
    assert rollout(prompts, trainer)["completion_ids"] != out["completion_ids"]
    # The log-probs are the policy's at the sampling temperature (what TRL recomputes for the loss).
    full = torch.tensor([out["prompt_ids"][0] + out["completion_ids"][0]])
    n = len(out["completion_ids"][0])
    with torch.no_grad():
        logp = model.eval()(full).logits[0, -n - 1 : -1].log_softmax(-1)
    want = logp.gather(-1, torch.tensor(out["completion_ids"][0])[:, None])[:, 0]
    assert out["logprobs"][0] == pytest.approx(want.tolist(), abs=1e-4)


@pytest.mark.parametrize(
    "args, cfg, message",
    [
        (
            GRPOEpisodeConfig(generation_backend="vllm"),
            _cfg(),
            "must be selfcorrect or trl .got 'vllm'. .GRPO reaches vLLM through TRL",
        ),
        (GRPOEpisodeConfig(), _cfg(use_vllm=True, top_k=50), "does not support use_vllm, top_k"),
        (GRPOEpisodeConfig(first_attempt="trace", abandon_penalty=0.5), _cfg(), "group baseline removes them"),
        (GRPOEpisodeConfig(), _cfg(temperature=0.0), "temperature > 0"),
    ],
)
def test_backend_options_are_checked(args, cfg, message):
    with pytest.raises(UserError, match=message):
        check_options(args, cfg)
    check_options(
        GRPOEpisodeConfig(generation_backend="trl", first_attempt="trace"), _cfg(use_vllm=True)
    )  # TRL's own path takes them


def test_on_policy_rollout_trains_the_revision_in_its_rendered_context(tiny_model_dir):
    """Two-round episodes: the completion TRL trains (and takes log-probs of) is y2 only; its prompt is
    the conversation eval renders, y1 included; r1 comes from each sample's own first attempt."""
    from accelerate import Accelerator
    from toy_task import EvenLengthTask

    from selfcorrect.prompts import get_prompt_set
    from selfcorrect.rollout import render_chat
    from selfcorrect.tasks.base import Example

    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu").train()
    trainer = SimpleNamespace(model_wrapped=model, accelerator=Accelerator(cpu=True), state=SimpleNamespace(global_step=0))
    task, ps = EvenLengthTask(), get_prompt_set("intrinsic")
    examples = {}
    for i, q in enumerate(("Is the sky blue?", "Who was late?")):
        first = render_chat(tok, [{"role": "user", "content": ps.first_turn(q)}], ps.first_prefill)
        examples[first] = Example(id=str(i), question=q, gold="even")
    prompts = [p for p in examples for _ in range(4)]
    out = make_rollout_func(tok, _cfg(), task, ps, examples)(prompts, trainer)
    assert len(out["completion_ids"]) == len(out["prompt_ids"]) == len(out["first_reward"]) == 8
    review = render_chat(tok, [{"role": "user", "content": ps.review_turn()}], ps.review_prefill)
    review = review[review.index(ps.review_turn()) :]  # the review turn as the template closes it
    for prompt, x2, y2, lps in zip(prompts, out["prompt_ids"], out["completion_ids"], out["logprobs"]):
        first = tok.encode(prompt, add_special_tokens=False)
        assert len(y2) == len(lps) >= 1 and x2[: len(first)] == first and len(x2) > len(first)
        assert tok.decode(x2).endswith(review)  # x2 = first turn + y1 + review turn; y2 is only the completion
    # Each sample's first reward is its own y1's grade: the two prompts' groups are not constant.
    assert set(out["first_reward"]) == {0.0, 1.0}
    assert out["first_correct"] == [r == 1.0 for r in out["first_reward"]]


def test_a_resumed_rollout_draws_the_uninterrupted_runs_samples(tiny_model_dir):
    """The sampling streams follow the training step, not the calls since the process started: a
    rollout_func made afresh (a run resumed from its step-2 checkpoint) samples at step 2 what the
    uninterrupted run's sampled there after steps 0 and 1."""
    from accelerate import Accelerator

    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu").train()
    state = SimpleNamespace(global_step=0)
    trainer = SimpleNamespace(model_wrapped=model, accelerator=Accelerator(cpu=True), state=state)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Who was late?"}], tokenize=False, add_generation_prompt=True)
    uninterrupted = make_rollout_func(tok, _cfg())
    for state.global_step in (0, 1, 2):
        want = uninterrupted([prompt] * 4, trainer)["completion_ids"]
    resumed = make_rollout_func(tok, _cfg())
    assert resumed([prompt] * 4, trainer)["completion_ids"] == want
