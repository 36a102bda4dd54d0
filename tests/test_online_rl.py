"""The on-policy trainers (SCoRe, K-round RL) on chat templates of three families (ChatML, Llama 3,
Mistral), each with two end-of-sequence ids: round t's context is the rendered conversation exactly
as eval renders it, every recipe runs 3 steps, LoRA B moves, and a resumed run reproduces the losses."""

import json
import os

import pytest
from conftest import ROOT
from helpers import PS, online_trainer
from test_train import lora_b_changed

from selfcorrect.rollout import render_chat
from selfcorrect.tasks.base import Example

STYLE_RECIPE = {"chatml": "qwen2.5-1.5b-instruct", "llama3": "llama-3.1-8b-instruct", "mistral": "mistral-7b-instruct-v0.3"}


@pytest.fixture(scope="module", params=list(STYLE_RECIPE))
def styled_model(request, tmp_path_factory):
    from tiny_model import build

    # The model ends its turn with probability 0.3 per step, so most rounds end in an end token.
    return request.param, build(str(tmp_path_factory.mktemp(request.param)), style=request.param, two_eos=True, end_prob=0.3)


def _argv(method, style, model_dir, data, out):
    recipe = os.path.join(ROOT, "recipes", STYLE_RECIPE[style], "bbq", f"{method}.yaml")
    argv = [
        "--config",
        recipe,
        "--model_name_or_path",
        model_dir,
        "--dataset_path",
        data,
        "--output_dir",
        out,
        "--max_steps",
        "3",
        "--per_device_prompts",
        "2",
        "--num_generations",
        "2",
        "--max_new_tokens",
        "6",
        "--micro_batch_size",
        "4",
        "--learning_rate",
        "1e-2",
        "--report_to",
        "none",
        "--gradient_checkpointing",
        "false",
        "--save_steps",
        "0",
    ]
    return argv + (["--stage1_steps", "1"] if method == "score" else ["--rounds", "3"])


@pytest.mark.parametrize("method", ["score", "kround"])
def test_each_round_context_is_the_rendered_conversation(method, styled_model, rl_file, tmp_path):
    """x_t = the tokenised conversation of rounds < t plus round t's instruction and prefill, exactly
    what eval feeds the model; the old SCoRe code raised on Llama/Mistral templates and doubled the
    end-of-turn token on ChatML models with two eos ids."""
    style, model_dir = styled_model
    trainer = online_trainer(method, _argv(method, style, model_dir, rl_file, str(tmp_path)))
    trainer.setup()
    tok = trainer.tokenizer
    end = tok.eos_token_id
    assert len(trainer.gen.eos_ids) == 2 and min(trainer.gen.eos_ids) != end
    questions = {
        json.loads(line)["id"]: Example.from_dict(json.loads(json.loads(line)["example"])).question for line in open(rl_file)
    }
    first = {}
    for q in questions.values():
        text = render_chat(tok, [{"role": "user", "content": PS.first_turn(q)}], PS.first_prefill)
        first[tuple(tok.encode(text, add_special_tokens=False))] = q
    episodes = trainer.sample(0)
    k = trainer.rounds()
    assert len(episodes) == 4 and all(len(ep.prompts) == k for ep in episodes)
    n_ended = 0
    for ep in episodes:
        conv = [{"role": "user", "content": PS.first_turn(first[tuple(ep.prompts[0])])}]
        for t in range(1, k):
            y = ep.responses[t - 1]
            n_ended += y[-1] == end
            prefill = PS.first_prefill if t == 1 else PS.review_prefill
            conv += [
                {"role": "assistant", "content": prefill + tok.decode(y, skip_special_tokens=True)},
                {"role": "user", "content": PS.review_turn()},
            ]
            assert ep.prompts[t] == tok.encode(render_chat(tok, conv, PS.review_prefill), add_special_tokens=False)
            assert (end, end) not in set(zip(ep.prompts[t], ep.prompts[t][1:]))  # never a doubled end-of-turn token
    assert n_ended >= 1  # responses that end in the end-of-turn token were exercised


@pytest.mark.parametrize("method", ["score", "kround"])
def test_recipe_runs_three_steps_and_moves_lora(method, styled_model, toy_rl_file, tmp_path):
    from train.kround import main as kround_main
    from train.score import main as score_main

    style, model_dir = styled_model
    out = str(tmp_path / method)
    {"score": score_main, "kround": kround_main}[method](
        _argv(method, style, model_dir, toy_rl_file, out) + ["--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic"]
    )
    log = [json.loads(line) for line in open(os.path.join(out, f"{method}_log.jsonl"))]
    assert len(log) == 3 and all(abs(h["loss"]) < 1e4 for h in log)
    if method == "score":
        assert [h["stage"] for h in log] == [1, 2, 2]
    else:
        assert {f"reward_r{t}" for t in (1, 2, 3)} <= set(log[0]) and "right_to_wrong_2_3" in log[0]
    assert lora_b_changed(out)
    card = open(os.path.join(out, "README.md")).read()
    assert "never moved" not in card


def test_kround_resume_reproduces_the_uninterrupted_run(tiny_model_dir, toy_rl_file, tmp_path):
    from safetensors.torch import load_file

    from train.kround import main

    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        toy_rl_file,
        "--task",
        "toy_task:EvenLengthTask",
        "--prompt_set",
        "intrinsic",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--per_device_prompts",
        "2",
        "--num_generations",
        "2",
        "--rounds",
        "3",
        "--max_new_tokens",
        "6",
        "--learning_rate",
        "5e-3",
    ]
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    main([*args, "--output_dir", full])
    main([*args, "--output_dir", resumed, "--resume_from_checkpoint", f"{full}/checkpoint-2"])
    log_full = [json.loads(line) for line in open(os.path.join(full, "kround_log.jsonl"))]
    log_resumed = [json.loads(line) for line in open(os.path.join(resumed, "kround_log.jsonl"))]
    assert [h["step"] for h in log_resumed] == [3, 4]
    for a, b in zip(log_full[2:], log_resumed):
        assert [a[f"reward_r{t}"] for t in (1, 2, 3)] == [b[f"reward_r{t}"] for t in (1, 2, 3)]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    wa, wb = (
        load_file(os.path.join(full, "adapter_model.safetensors")),
        load_file(os.path.join(resumed, "adapter_model.safetensors")),
    )
    assert wa.keys() == wb.keys() and all(float((wa[k] - wb[k]).abs().max()) < 1e-5 for k in wa)


def test_a_run_whose_weights_never_moved_says_so(tiny_model_dir, rl_file, tmp_path, capsys):
    """BBQ on the random tiny model: every answer is wrong, every advantage 0, so nothing moves."""
    from train.kround import main

    out = str(tmp_path / "still")
    main(
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            rl_file,
            "--max_steps",
            "2",
            "--per_device_prompts",
            "2",
            "--num_generations",
            "2",
            "--rounds",
            "2",
            "--max_new_tokens",
            "4",
            "--output_dir",
            out,
        ]
    )
    log = [json.loads(line) for line in open(os.path.join(out, "kround_log.jsonl"))]
    assert all(h["reward_r1"] == 0 and h["reward_r2"] == 0 for h in log)
    assert "never moved" in open(os.path.join(out, "README.md")).read()
    assert "never moved" in capsys.readouterr().err


def test_trainer_logprobs_are_the_samplers_at_temperature(tiny_model_dir, rl_file, tmp_path):
    """At T = 0.7 the tokens were drawn from softmax(logits / 0.7): the trainer must score them under
    that distribution (the old trainer used the raw logits: 0.19 nats off on this model), with the adapter on."""
    import torch

    from selfcorrect.rollout import run_rounds
    from train.rl_functions import Episode, pack_episode, token_logprobs

    trainer = online_trainer(
        "kround", _argv("kround", "chatml", tiny_model_dir, rl_file, str(tmp_path)) + ["--temperature", "0.7"]
    )
    trainer.setup()
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so sampling and scoring must both use it
        for n, p in trainer.policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    trainer.policy.eval()  # LoRA dropout off, in sampling and in scoring
    gens = run_rounds(trainer.gen, trainer.task, trainer.prompt_set, trainer.examples, 3, samples=2).generations
    worst, n_tokens = 0.0, 0
    for e in range(len(gens[0])):
        ep = Episode([g[e].prompt_ids for g in gens], [g[e].token_ids for g in gens], [0.0] * 3)
        for ids, owner in pack_episode(ep):
            with torch.no_grad():
                lp = token_logprobs(trainer.model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), 0.7)[0]
            for t in range(3):
                mine = [float(lp[i - 1]) for i in range(1, len(ids)) if owner[i] == t]
                if mine:
                    ref = gens[t][e].token_logprobs
                    assert len(mine) == len(ref)
                    worst = max(worst, max(abs(a - b) for a, b in zip(mine, ref)))
                    n_tokens += len(mine)
    assert n_tokens >= 20 and worst < 1e-4, (n_tokens, worst)


def test_step_log_counts_groups_without_signal_and_warns_once(tmp_path, capsys):
    """Three prompt groups of two episodes: two groups with identical returns carry all-zero
    advantages (frac 2/3, TRL's frac_reward_zero_std), the third +-1 at each round; the logged lr is
    the one the step used; after 3 such steps in a row, one warning line."""
    from accelerate import Accelerator

    from train.kround import KRoundConfig, KRoundTrainer
    from train.rl_functions import Episode, round_advantages

    trainer = KRoundTrainer(None, KRoundConfig(output_dir=str(tmp_path), num_generations=2, rounds=2))
    trainer.accelerator = Accelerator(cpu=True)
    rewards = [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    episodes = [Episode([[]] * 2, [[]] * 2, r, [x == 1.0 for x in r], ["A" if x == 1.0 else "B" for x in r]) for r in rewards]
    advantages = round_advantages([trainer.episode_returns(ep, 0) for ep in episodes], 2)
    parts = {"loss": 0.5, "pg": [0.25, 0.125], "kl": [0.01, 0.02], "lr": 3e-4}
    logs = [trainer.step_log(s, rewards, advantages, parts) for s in range(4)]
    log = logs[0]
    assert log["frac_zero_advantage"] == pytest.approx(2 / 3)
    assert log["adv_abs_mean"] == pytest.approx(sum(abs(a) for row in advantages for a in row) / 12)
    assert sum(abs(a) for row in advantages[:4] for a in row) == 0
    assert log["kl"] == pytest.approx(0.03) and log["lr"] == 3e-4
    assert log["reward_r1"] == pytest.approx(0.5) and log["right_to_wrong_1_2"] == pytest.approx(1 / 6)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "steps 1-3" in warnings[0] and "frac_zero_advantage 0.67" in warnings[0]


def test_two_processes_sample_the_episodes_of_one(tiny_model_dir, toy_rl_file, tmp_path):
    """An episode's random stream is keyed by the step, its prompt's place in the step's batch and its
    sample index: processes 0 and 1 of 2, with 2 prompts each, sample the episodes that one process
    with 4 prompts samples (same weights), token for token on the tiny model in fp32."""
    from types import SimpleNamespace

    argv = [
        *("--model_name_or_path", tiny_model_dir, "--dataset_path", toy_rl_file, "--output_dir", str(tmp_path / "o")),
        *("--task", "toy_task:EvenLengthTask", "--prompt_set", "intrinsic", "--rounds", "2", "--temperature", "1.0"),
        *("--per_device_prompts", "4", "--num_generations", "2", "--max_new_tokens", "6", "--report_to", "none"),
    ]
    trainer = online_trainer("kround", argv)
    trainer.setup()
    one = [[ep.responses for ep in trainer.sample(step)] for step in (0, 1)]
    assert len({json.dumps(r) for step in one for r in step}) > 4  # the episodes differ from each other
    trainer.cfg.per_device_prompts, trainer.gen.batch_size = 2, 4
    two = []
    for step in (0, 1):
        episodes = []
        for rank in (0, 1):
            trainer.accelerator = SimpleNamespace(num_processes=2, process_index=rank)
            episodes += [ep.responses for ep in trainer.sample(step)]
        two.append(episodes)
    assert two == one
