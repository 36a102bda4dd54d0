"""The rollout engine on the tiny model: K rounds, growing conversations, option probabilities."""

import math

import pytest
import torch

from selfcorrect.modeling import load_model, load_tokenizer
from selfcorrect.prompts import get_prompt_set
from selfcorrect.rollout import HFGenerator, SamplingConfig, run_rounds
from selfcorrect.tasks import get_task
from selfcorrect.trace import conversation


def _broad_labels(g):
    """Count a third of the vocabulary as each option's label tokens: the random tiny model then
    generates label tokens at most steps, so the per-step option records get compared."""
    spans = {"A": range(3, 170), "B": range(170, 340), "C": range(340, 512)}
    g.label_token_ids = lambda label: list(spans[label])


def _assert_same_probs(a, b):
    assert (a is None) == (b is None)
    if a is not None:
        assert set(a) == set(b) and all(a[k] == pytest.approx(b[k], abs=1e-4) for k in a)


def _assert_same_option_steps(a, b):
    """``a``, ``b``: per round, per generation, the list of OptionStep."""
    n = 0
    for ra, rb in zip(a, b, strict=True):
        for ga, gb in zip(ra, rb, strict=True):
            assert [(o.step, o.label) for o in ga] == [(o.step, o.label) for o in gb]
            for oa, ob in zip(ga, gb):
                _assert_same_probs(oa.probs, ob.probs)
                assert oa.mass == pytest.approx(ob.mass, abs=1e-4)
                n += 1
    assert n > 10  # the comparison saw label positions


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    return HFGenerator(model, tok, SamplingConfig(max_new_tokens=6), batch_size=4)


@pytest.fixture(scope="module")
def bbq_examples(bbq_dir):
    task = get_task("bbq")
    exs = []
    for ex in task.load(bbq_dir):
        exs.append(ex)
        if len(exs) == 5:
            break
    return task, exs


def test_rounds_and_growing_conversation(gen, bbq_examples):
    task, exs = bbq_examples
    ps = get_prompt_set("intrinsic-moral")
    rendered = []
    orig = gen.render
    gen.render = lambda msgs, prefill=None: rendered.append((msgs, prefill)) or orig(msgs, prefill)
    try:
        rows = run_rounds(gen, task, ps, exs, rounds=3).trajectories
    finally:
        gen.render = orig
    assert [r.id for r in rows] == [e.id for e in exs]
    for row in rows:
        assert len(row.rounds) == 3
        r1, r2, r3 = row.rounds
        assert r1.user.endswith(ps.first_instruction) and r1.prefill == ps.first_prefill
        assert r2.user == r3.user == ps.review_turn() and r2.prefill == ps.review_prefill
        for rec in row.rounds:
            assert rec.finish in ("eos", "length") and 1 <= rec.new_tokens <= 6
            assert math.isfinite(rec.mean_logprob) and rec.mean_logprob <= 0
            if rec.option_probs is not None:  # only where the answer's label token was generated
                assert set(rec.option_probs) == {"A", "B", "C"} and rec.option_step is not None
                assert abs(sum(rec.option_probs.values()) - 1) < 1e-6 and 0 < rec.option_mass <= 1
    # Round r of example i sees 2r-1 messages: every earlier turn plus round r's instruction.
    per_round = [rendered[i * 5 : (i + 1) * 5] for i in range(3)]
    for r, calls in enumerate(per_round):
        for (msgs, _prefill), row in zip(calls, rows):
            assert len(msgs) == 2 * r + 1
            assert msgs[:-1] == conversation(row.rounds, r)
            assert msgs[-1]["content"] == row.rounds[r].user


def test_greedy_matches_hf_generate(gen, bbq_examples):
    """Our decoding loop gives the same greedy tokens as transformers' generate (fp32)."""
    _, exs = bbq_examples
    prompts = [gen.render([{"role": "user", "content": e.question}]) for e in exs[:3]]
    ours = gen.generate(prompts)
    tok = gen.tokenizer
    for p, g in zip(prompts, ours):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        ref = gen.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        ref_ids = ref[0, enc["input_ids"].shape[1] :].tolist()
        assert g.token_ids == ref_ids[: len(g.token_ids)]


def test_mean_logprob_matches_a_teacher_forced_pass(gen, bbq_examples):
    _, exs = bbq_examples
    prompt = gen.render([{"role": "user", "content": exs[0].question}])
    (g,) = gen.generate([prompt])
    ids = gen.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    full = torch.cat([ids, torch.tensor([g.token_ids])], 1)
    with torch.no_grad():
        logp = gen.model(full).logits.log_softmax(-1)[0, ids.shape[1] - 1 : -1]
    want = logp.gather(-1, torch.tensor(g.token_ids)[:, None]).mean().item()
    assert abs(g.mean_logprob - want) < 1e-4


def test_sampling_is_seeded(tiny_model_dir, bbq_examples):
    task, exs = bbq_examples
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    ps = get_prompt_set("baseline")

    def sample(seed):
        g = HFGenerator(model, tok, SamplingConfig(max_new_tokens=5, temperature=1.0, seed=seed), batch_size=4)
        return [[r.response for r in t.rounds] for t in run_rounds(g, task, ps, exs[:2], rounds=2, samples=2).trajectories]

    a, b, c = sample(1), sample(1), sample(2)
    assert a == b and a != c
    assert a[0] != a[1]  # two samples of the same example differ


def test_probe_hook_captures_last_prompt_token(gen, bbq_examples):
    _, exs = bbq_examples
    g2 = HFGenerator(gen.model, gen.tokenizer, SamplingConfig(max_new_tokens=2), batch_size=2, probe_layer=0)
    prompts = [g2.render([{"role": "user", "content": e.question}]) for e in exs[:2]]
    outs = g2.generate(prompts)
    enc = gen.tokenizer(prompts[1], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hs = gen.model(**enc, output_hidden_states=True).hidden_states[1][
            0, -1
        ]  # output of layer 0 (the last entry is post-norm)
    assert torch.allclose(torch.tensor(outs[1].hidden), hs, atol=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_round_incremental_cache_matches_full_reencoding(tiny_model_dir, bbq_examples, temperature):
    """Reusing each batch's KV cache across rounds gives the same tokens as re-encoding (fp32)."""
    task, exs = bbq_examples
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    ps = get_prompt_set("intrinsic-moral")
    outs, option_steps = [], []
    for incremental in (False, True):
        # max_new_tokens 7 with batch 3: rows finish at different steps (some hit eos early in sampling).
        sampling = SamplingConfig(max_new_tokens=7, temperature=temperature, seed=3)
        g = HFGenerator(model, tok, sampling, batch_size=3, incremental=incremental)
        # Make 40 of the 512 tokens end a turn, so rows stop at different steps and the cache must
        # mask each row's padding after its end (the random tiny model seldom says <|im_end|>).
        g.eos_ids = g.eos_ids + list(range(100, 140))
        _broad_labels(g)
        steps = []
        outs.append(
            run_rounds(
                g,
                task,
                ps,
                exs,
                rounds=4,
                samples=2 if temperature else 1,
                on_round=lambda r, gens, steps=steps: steps.append([x.option_steps for x in gens]),
            ).trajectories
        )
        option_steps.append(steps)
    finishes = {r.finish for t in outs[0] for r in t.rounds}
    lengths = {r.new_tokens for t in outs[0] for r in t.rounds}
    assert "eos" in finishes
    if temperature:  # sampled rows end at different steps (greedy rows of the random model all agree)
        assert len(lengths) > 2
    for a, b in zip(*outs):
        for ra, rb in zip(a.rounds, b.rounds):
            assert ra.response == rb.response
            assert ra.mean_logprob == pytest.approx(rb.mean_logprob, abs=1e-4)
            _assert_same_probs(ra.option_probs, rb.option_probs)
    _assert_same_option_steps(option_steps[0], option_steps[1])


def test_external_feedback_rounds_are_marked(gen, bbq_examples):
    task, exs = bbq_examples
    ps = get_prompt_set("external-feedback")
    rows = run_rounds(gen, task, ps, exs[:2], rounds=2).trajectories
    for row in rows:
        r1, r2 = row.rounds
        assert r1.external is False and r2.external is True
        verdict = "correct" if r1.correct else "incorrect"
        assert r2.user.startswith(f"Your previous answer is {verdict}.")


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefill_matches_encoding_every_copy(gen, bbq_examples, temperature):
    """Groups of identical prompts (online RL) are encoded once; tokens and log-probs are unchanged."""
    _, exs = bbq_examples
    a, b, c = (gen.render([{"role": "user", "content": e.question}]) for e in exs[:3])
    prompts = [a, a, a, b, b, c]
    outs = []
    for share in (False, True):
        g = HFGenerator(
            gen.model,
            gen.tokenizer,
            SamplingConfig(max_new_tokens=6, temperature=temperature, seed=5),
            batch_size=6,
            share_prefill=share,
            probe_layer=0,
        )
        _broad_labels(g)
        outs.append(g.generate(prompts, [["A", "B", "C"]] * len(prompts)))
    for x, y in zip(*outs):
        assert x.token_ids == y.token_ids
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-5)
        assert x.hidden == pytest.approx(y.hidden, abs=1e-5)
        _assert_same_probs(x.option_probs, y.option_probs)
    _assert_same_option_steps([[x.option_steps for x in outs[0]]], [[y.option_steps for y in outs[1]]])
    if temperature:  # the copies of one prompt are separate samples
        assert len({tuple(g.token_ids) for g in outs[1][:3]}) > 1


def test_token_logprobs_follow_the_sampling_temperature(gen, bbq_examples):
    _, exs = bbq_examples
    prompt = gen.render([{"role": "user", "content": exs[0].question}])
    g = HFGenerator(gen.model, gen.tokenizer, SamplingConfig(max_new_tokens=5, temperature=0.7, seed=1))
    (out,) = g.generate([prompt])
    ids = gen.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    full = torch.cat([ids, torch.tensor([out.token_ids])], 1)
    with torch.no_grad():
        logits = gen.model(full).logits[0, ids.shape[1] - 1 : -1]
    picked = torch.tensor(out.token_ids)[:, None]
    assert out.token_logprobs == pytest.approx((logits / 0.7).log_softmax(-1).gather(-1, picked)[:, 0].tolist(), abs=1e-4)
    assert out.mean_logprob == pytest.approx(logits.log_softmax(-1).gather(-1, picked).mean().item(), abs=1e-4)


def test_finished_rows_leave_the_batch_without_changing_outputs(gen, bbq_examples):
    """Compaction (finished rows dropped mid-decode, their cache parked and restored for the next
    round) changes no token: sampled rows draw the same uniforms whether or not others have left."""
    task, exs = bbq_examples
    ps = get_prompt_set("intrinsic-moral")
    outs, option_steps = [], []
    for compact in (False, True):
        sampling = SamplingConfig(max_new_tokens=12, temperature=1.0, seed=4)
        g = HFGenerator(gen.model, gen.tokenizer, sampling, batch_size=5, compact=compact)
        g.eos_ids = g.eos_ids + list(range(100, 140))  # rows end at different steps
        _broad_labels(g)
        steps = []
        outs.append(
            run_rounds(
                g,
                task,
                ps,
                exs,
                rounds=3,
                samples=2,  # rounds 2-3 reuse the restored cache
                on_round=lambda r, gens, steps=steps: steps.append([x.option_steps for x in gens]),
            ).trajectories
        )
        option_steps.append(steps)
    first = [t.rounds[0].new_tokens for t in outs[1][:5]]
    assert sum(n < max(first) for n in first) >= 2  # enough early finishers in a batch to compact
    for a, b in zip(*outs):
        for ra, rb in zip(a.rounds, b.rounds):
            assert ra.response == rb.response and ra.new_tokens == rb.new_tokens
            assert ra.mean_logprob == pytest.approx(rb.mean_logprob, abs=1e-4)
            _assert_same_probs(ra.option_probs, rb.option_probs)
    _assert_same_option_steps(option_steps[0], option_steps[1])


@pytest.mark.parametrize("samples", [1, 2])
def test_sampled_trajectories_do_not_depend_on_batching(tiny_model_dir, bbq_examples, samples):
    """Each trajectory draws from its own stream, keyed by the seed, its example, its sample index
    and the round: another batch size, a subset of the examples (a shard, the rest of a resumed run)
    or another order samples the same tokens for the same (example, sample). On the tiny model in
    fp32 on the CPU the equality is token for token, although each batch pads its rows differently."""
    task, exs = bbq_examples
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    ps = get_prompt_set("intrinsic-moral")

    def sample(examples, batch_size):
        g = HFGenerator(model, tok, SamplingConfig(max_new_tokens=8, temperature=1.0, seed=7), batch_size=batch_size)
        g.eos_ids = g.eos_ids + list(range(100, 140))  # rows end at different steps (see above)
        trajs = run_rounds(g, task, ps, examples, rounds=3, samples=samples).trajectories
        return {(t.id, t.sample): [r.response for r in t.rounds] for t in trajs}

    whole = sample(exs, 10)
    assert len({tuple(v) for v in whole.values()}) == len(whole)  # every trajectory sampled its own tokens
    assert sample(exs, 1) == whole
    assert sample(exs, 3) == whole
    shards = {**sample(exs[0::2], 2), **sample(exs[1::2], 4)}
    assert shards == whole
    assert sample(exs[::-1], 3) == whole


def test_an_example_given_twice_samples_twice(gen, bbq_examples):
    """GRPO hands over each prompt once per group member: the copies of one example in a call draw
    from streams of their own (their trajectories differ), the first copy's stream being the
    example's own."""
    task, exs = bbq_examples
    ps = get_prompt_set("intrinsic-moral")
    g = HFGenerator(gen.model, gen.tokenizer, SamplingConfig(max_new_tokens=8, temperature=1.0, seed=2), batch_size=4)
    once = run_rounds(g, task, ps, exs[:1], rounds=1).trajectories
    twice = run_rounds(g, task, ps, [exs[0], exs[0], exs[0]], rounds=1).trajectories
    responses = [t.rounds[0].response for t in twice]
    assert responses[0] == once[0].rounds[0].response
    assert len(set(responses)) == 3
