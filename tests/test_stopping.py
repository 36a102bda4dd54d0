"""Stopping a conversation once its answer has settled (``stop_when``): the rollout engine decodes
nothing more for a stopped row, its later rounds carry its last answer, and the batch goes on."""

import pytest

from selfcorrect.modeling import load_model, load_tokenizer
from selfcorrect.prompts import get_prompt_set
from selfcorrect.rollout import HFGenerator, SamplingConfig, StopRule, run_rounds
from selfcorrect.tasks.base import Example, Grade, Task


class LengthTask(Task):
    """The answer is the response's length modulo 4: random tiny-model text settles on one answer in
    some rows and not in others, so rows stop at different rounds."""

    name = "length_mod_4"

    def grade(self, example, response):
        a = str(len(response) % 4)
        return Grade(answer=a, correct=a == "0", reward=float(a == "0"))


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def _run(model_and_tok, stop, temperature=0.0, incremental=True, rounds=4, samples=1):
    model, tok = model_and_tok
    g = HFGenerator(model, tok, SamplingConfig(max_new_tokens=7, temperature=temperature, seed=5), 3, incremental=incremental)
    # 40 of the 512 tokens end a turn: rows end at different steps, so answers (length parities) differ.
    g.eos_ids = g.eos_ids + list(range(100, 140))
    exs = [Example(id=str(i), question=f"question {i} " + "word " * i, gold="0") for i in range(7)]
    tokens = []
    out = run_rounds(
        g,
        LengthTask(),
        get_prompt_set("intrinsic-moral"),
        exs,
        rounds=rounds,
        samples=samples,
        stop=stop,
        on_round=lambda r, gens: tokens.append(sum(x.new_tokens for x in gens)),
    )
    return out, tokens


def test_stable_stops_rows_and_carries_their_last_answer(model_and_tok):
    never, never_tokens = _run(model_and_tok, None, rounds=5)
    stopped, tokens = _run(model_and_tok, StopRule("stable", 2), rounds=5)
    stops = [t.stop_round for t in stopped.trajectories]
    assert any(s is not None for s in stops) and any(s is None for s in stops)  # the batch went on past a stop
    for a, b in zip(never.trajectories, stopped.trajectories):
        c = b.rounds_run()
        # Greedy: the rounds a row ran are the rounds it runs without stopping, token for token.
        assert [r.response for r in a.rounds[:c]] == [r.response for r in b.rounds[:c]]
        if b.stop_round is not None:
            assert len({r.answer for r in b.rounds[c - 3 : c]}) == 1  # settled: unchanged for 2 rounds
            assert all(r.carried and r.answer == b.rounds[c - 1].answer and r.new_tokens == 0 for r in b.rounds[c:])
        else:  # never settled before K: no three equal answers in a row before the last round
            assert all(len({r.answer for r in a.rounds[t : t + 3]}) > 1 for t in range(len(a.rounds) - 3))
    # Tokens: a stopped row generates none after its stop, so the run generates exactly the tokens
    # of the rounds that ran.
    ran = sum(r.new_tokens for t in stopped.trajectories for r in t.rounds if not r.carried)
    assert sum(tokens) == ran < sum(never_tokens)
    assert all(g.new_tokens == 0 and g.token_ids == [] for gens in stopped.generations for g in gens if g.finish == "stopped")


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stopped_rows_leave_the_round_cache_without_changing_the_others(model_and_tok, temperature):
    """keep_rows moves the surviving rows' KV caches into new batches: the answers equal a run that
    re-encodes every conversation from scratch each round."""
    runs = [
        _run(model_and_tok, StopRule("stable", 1), temperature, incremental=inc, rounds=5, samples=2)[0] for inc in (False, True)
    ]
    stops = [t.stop_round for t in runs[0].trajectories]
    assert len(set(stops)) >= 2  # rows stopped at several rounds, so batches were re-formed more than once
    for a, b in zip(runs[0].trajectories, runs[1].trajectories):
        assert a.stop_round == b.stop_round
        assert [r.response for r in a.rounds] == [r.response for r in b.rounds]
        assert [r.mean_logprob for r in a.rounds] == pytest.approx([r.mean_logprob for r in b.rounds], abs=1e-4)


def test_never_writes_the_traces_of_a_run_without_the_rule(model_and_tok):
    a, _ = _run(model_and_tok, None)
    b, _ = _run(model_and_tok, StopRule("never"))
    assert [t.to_dict() for t in a.trajectories] == [t.to_dict() for t in b.trajectories]
    assert all("stop_round" not in t.to_dict() and "carried" not in t.to_dict()["rounds"][0] for t in b.trajectories)


def test_step_log_reads_self_correction_from_the_graders_verdicts(tmp_path):
    """Accuracy per round comes from ``correct``, not the reward (here rewards of 0.9 are right and
    0.2 wrong); flips count any change of answer; a stopped episode counts its carried rounds."""
    from accelerate import Accelerator

    from train.kround import KRoundConfig, KRoundTrainer
    from train.rl_functions import Episode, round_advantages

    trainer = KRoundTrainer(None, KRoundConfig(output_dir=str(tmp_path), num_generations=2, rounds=3))
    trainer.accelerator = Accelerator(cpu=True)
    trainer.last_episodes = [
        Episode([[1]], [[2]], [0.9, 0.9, 0.9], [True] * 3, ["A", "A", "A"], stop_round=2),
        Episode([[1]] * 3, [[2]] * 3, [0.2, 0.2, 0.9], [False, False, True], ["unparsed", "B", "A"]),
    ]
    rewards = [ep.rewards for ep in trainer.last_episodes]
    advantages = round_advantages([trainer.episode_returns(ep, 0) for ep in trainer.last_episodes], 2)
    log = trainer.step_log(0, rewards, advantages, {"loss": 0.0, "pg": [0.0] * 3, "kl": [0.0] * 3, "lr": 1e-3})
    assert [log[f"accuracy_r{t}"] for t in (1, 2, 3)] == [0.5, 0.5, 1.0]
    assert [log[f"unparsed_r{t}"] for t in (1, 2, 3)] == [0.5, 0.0, 0.0]
    assert log["flip_rate_1_2"] == 0.5 and log["flip_rate_2_3"] == 0.5
    assert log["stop_round_mean"] == 2.5
    assert log["wrong_to_right_2_3"] == 0.5  # the reward-based counts are still there


def test_kround_with_stopping_and_round_cost_trains_and_plots(tiny_model_dir, toy_rl_file, tmp_path):
    """One process: episodes stop by the stable rule, the step log holds the per-round metrics, the
    curves PNG lies beside the adapter and the model card carries the last values."""
    import json
    import os

    from train.kround import main

    out = str(tmp_path / "kround")
    main(
        ["--config", "recipes/demo/kround.yaml", "--model_name_or_path", tiny_model_dir, "--dataset_path", toy_rl_file,
         "--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--output_dir", out, "--max_steps", "2",
         "--per_device_prompts", "2", "--num_generations", "2", "--max_new_tokens", "5", "--rounds", "4",
         "--stop_when", "stable", "--round_cost", "0.1", "--report_to", "none", "--save_steps", "0"]
    )  # fmt: skip
    log = [json.loads(line) for line in open(os.path.join(out, "kround_log.jsonl"))]
    assert len(log) == 2 and all(1 <= h["stop_round_mean"] < 4 for h in log)  # EvenLengthTask answers settle often
    assert {"accuracy_r4", "flip_rate_3_4", "unparsed_r1"} <= set(log[0])
    assert os.path.getsize(os.path.join(out, "self_correction_curves.png")) > 1000
    card = open(os.path.join(out, "README.md")).read()
    assert "last accuracy per round" in card and "stop_when stable" in card and "0.1 in u_s" in card


def _stopped_trace(ex_id, answers, stop_round, gold="C"):
    """A BBQ trace that ran ``stop_round`` rounds (4 tokens each) and carried the last into K."""
    from helpers import make_trace

    t = make_trace(ex_id, answers[:stop_round] + [answers[stop_round - 1]] * (len(answers) - stop_round), gold=gold)
    if stop_round < len(answers):
        t.rounds[stop_round:] = [t.rounds[stop_round - 1].carry() for _ in t.rounds[stop_round:]]
        t.stop_round = stop_round
    return t


def test_eval_metrics_count_rounds_and_tokens_of_stopped_items():
    """Three items, K = 4: stopped at 2 (right), stopped at 3 (wrong), ran all 4 (right at 4)."""
    from eval.aggregate import compute_metrics
    from selfcorrect.tasks import get_task

    traces = [_stopped_trace("a", list("CCCC"), 2), _stopped_trace("b", list("ABBB"), 3), _stopped_trace("c", list("ABAC"), 4)]
    items = []
    m = compute_metrics(traces, get_task("bbq"), n_boot=50, on_item=items.append)
    st = m["stopping"]
    assert st["mean_rounds"] == 3.0 and st["mean_tokens"] == 12.0  # (2 + 3 + 4) rounds x 4 tokens / 3
    assert st["accuracy_at_stop"] == pytest.approx(2 / 3) and st["n_stopped"] == 2
    assert st["stopped_by_round"] == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(2 / 3)]
    assert st["carried_round_share"] == pytest.approx(3 / 12)
    # Fixed-K metrics read a carried round as its answer: round 4 accuracy counts item a as right.
    assert m["headline"]["values"] == [pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert [(i["stop_round"], i["rounds_run"], i["tokens"]) for i in items] == [(2, 2, 8), (3, 3, 12), (None, 4, 16)]


def test_compare_reports_rounds_and_tokens_saved_with_the_accuracy_difference(tmp_path):
    """Reference: four items run all 4 rounds (4 tokens each round). Run: the same answers, three of
    the items stopped at round 2 (8 of 16 tokens), one ran all rounds: 1.5 rounds and 6 tokens saved
    per item, accuracy unchanged; the sign test sees 3 items with fewer rounds and none with more."""
    import json

    from helpers import run_command
    from test_compare import _write_run

    answers = [list("CCCC"), list("AACC"), list("BBBB"), list("ABCA")]
    ids = [f"Age/{i}" for i in range(4)]
    ref = _write_run(tmp_path / "ref", [_stopped_trace(i, a, 4) for i, a in zip(ids, answers)], "ref")
    stops = [2, 2, 2, 4]
    run = _write_run(
        tmp_path / "run", [_stopped_trace(i, a[:s] + [a[s - 1]] * (4 - s), s) for i, a, s in zip(ids, answers, stops)], "run"
    )
    p = run_command("eval.compare", ["--runs", ref, run, "--output_dir", str(tmp_path / "cmp")])
    assert p.returncode == 0, p.stderr
    c = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["compute"]["run"]
    assert c["rounds_reference"] == 4.0 and c["rounds_run"] == 2.5 and c["rounds_saved"]["value"] == 1.5
    assert c["tokens_saved"]["value"] == 6.0
    # Item 1 (A A then C C) is right at K in the reference but stopped on A: accuracy at stop falls by 1/4.
    assert c["accuracy_at_stop_difference"]["value"] == -0.25
    assert c["rounds_sign_test"] == {"run_fewer": 3, "run_more": 0, "p": 0.25}
    assert "rounds per item 4.00 -> 2.50" in p.stdout and "accuracy at stop -0.250" in p.stdout


def test_eval_and_data_gen_stop_settled_conversations(tiny_model_dir, tmp_path):
    """``--stop_when stable`` through both commands: traces hold stop rounds and carried rounds,
    eval's metrics and items count the rounds run, data_gen trains on the rounds that ran only."""
    import json

    from helpers import run_command

    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something number {i}."}) + "\n" for i in range(6)))
    common = ["--model_name_or_path", tiny_model_dir, "--dataset_path", str(data), "--task", "toy_task:EvenLengthTask",
              "--prompt_set", "intrinsic", "--rounds", "4", "--max_new_tokens", "5", "--stop_when", "stable"]  # fmt: skip
    p = run_command("eval.__main__", [*common, "--output_dir", str(tmp_path / "eval"), "--n_boot", "20"])
    assert p.returncode == 0, p.stderr
    traces = [json.loads(line) for line in open(tmp_path / "eval" / "traces.jsonl")]
    stopped = [t for t in traces if t.get("stop_round")]
    assert stopped  # two equal parities in a row are common
    for t in stopped:
        assert all(r.get("carried") for r in t["rounds"][t["stop_round"] :])
        assert not any(r.get("carried") for r in t["rounds"][: t["stop_round"]])
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    ran = [t.get("stop_round") or 4 for t in traces]
    assert m["stopping"]["mean_rounds"] == sum(ran) / len(ran) and m["run"]["stop_when"] == "stable"
    items = [json.loads(line) for line in open(tmp_path / "eval" / "items.jsonl")]
    assert [i["rounds_run"] for i in items] == ran
    assert "## Stopping (compute)" in (tmp_path / "eval" / "report.md").read_text()
    p = run_command("data_gen.__main__", [*common, "--output_dir", str(tmp_path / "dg"), "--sft_sources", "final_correct"])
    assert p.returncode == 0, p.stderr
    dg = {t["id"]: t for t in map(json.loads, open(tmp_path / "dg" / "traces.jsonl"))}
    for row in map(json.loads, open(tmp_path / "dg" / "sft.jsonl")):
        t = dg[row["id"]]
        assert len(row["messages"]) == 2 * (t.get("stop_round") or 4)  # no carried round is trained


def test_grpo_rollout_logs_self_correction_per_round(tiny_model_dir):
    """GRPO's on-policy two-round rollout adds accuracy per round (the grader's verdict), unparsed
    share and flip rate 1 -> 2 to TRL's metrics."""
    from collections import defaultdict
    from types import SimpleNamespace

    from accelerate import Accelerator
    from test_grpo_rollout import _cfg
    from toy_task import EvenLengthTask

    from selfcorrect.rollout import render_chat
    from train.grpo import make_rollout_func

    model, tok = load_model(tiny_model_dir, device="cpu").train(), load_tokenizer(tiny_model_dir)
    metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer = SimpleNamespace(
        model_wrapped=model, accelerator=Accelerator(cpu=True), state=SimpleNamespace(global_step=0), _metrics=metrics
    )
    ps = get_prompt_set("intrinsic")
    examples = {
        render_chat(tok, [{"role": "user", "content": ps.first_turn(f"Q{i}?")}], ps.first_prefill): Example(
            id=str(i), question=f"Q{i}?", gold="even"
        )
        for i in range(2)
    }
    out = make_rollout_func(tok, _cfg(), EvenLengthTask(), ps, examples)([p for p in examples for _ in range(4)], trainer)
    acc1 = sum(out["first_correct"]) / 8
    logged = metrics["train"]
    assert logged["self_correction/accuracy_r1"] == [acc1]
    assert {"self_correction/accuracy_r2", "self_correction/flip_rate_1_2", "self_correction/unparsed_r2"} <= set(logged)
    # EvenLengthTask answers "even" or "odd": a flip is a change of parity, i.e. of correctness.
    assert logged["self_correction/flip_rate_1_2"][0] >= abs(logged["self_correction/accuracy_r2"][0] - acc1)
