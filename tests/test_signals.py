"""What each trainer teaches: on hand-made traces and tensors, the exact tokens that carry loss and the
return each one gets, checked against the method's paper.

SCoRe: Kumar et al. 2024 (arXiv 2409.12917), Sec. 5.1 Eq. 3 (Stage I), Sec. 5.2 (Stage II, bonus on
the second attempt only). GRPO: Shao et al. 2024 (arXiv 2402.03300), group-normalised advantages.
"""

import json

import pytest
import torch
from helpers import PS, make_trace

from data_gen.build import build_all, dpo_rows_in_trace, rl_row, sft_rows
from selfcorrect.tasks import get_task
from train.rewards import RevisionReward, score_returns
from train.rl_functions import Episode, episode_loss, leave_one_out, pack_episode, prompt_indices, round_advantages

BBQ = get_task("bbq")


# ---- SCoRe: returns per attempt -----------------------------------------------------------------


def test_score_stage2_bonus_reaches_attempt2_only():
    """Stage II: attempt 1 <- r1 + r2, attempt 2 <- r2 + alpha (r2 - r1). The old code credited
    attempt 1 with r1 + r2 + alpha (r2 - r1): (1,1) -> 2, (0,1) -> 11, (1,0) -> -9 at alpha 10."""
    alpha = 10.0
    got = {(r1, r2): score_returns(r1, r2, stage=2, alpha=alpha) for r1 in (0.0, 1.0) for r2 in (0.0, 1.0)}
    assert got == {(1.0, 1.0): (2.0, 1.0), (0.0, 1.0): (1.0, 11.0), (1.0, 0.0): (1.0, -10.0), (0.0, 0.0): (0.0, 0.0)}
    # A right first attempt never earns attempt 1 less than a wrong one with the same second attempt.
    for r2 in (0.0, 1.0):
        assert got[(1.0, r2)][0] > got[(0.0, r2)][0]
    # Stage I maximises r2 only: both attempts are credited r2 (Eq. 3).
    assert score_returns(1.0, 0.0, stage=1, alpha=alpha) == (0.0, 0.0)
    assert score_returns(0.0, 1.0, stage=1, alpha=alpha) == (1.0, 1.0)


def _one_episode_tensors():
    # One sequence of 7 predicted tokens: prompt, 2 tokens of attempt 1, 2 of the instruction, 2 of attempt 2.
    owner = torch.tensor([[-1, 0, 0, -1, -1, 1, 1]])
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.4, 0.3, 0.2, 0.6, 0.7]])).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.9, 0.4, 0.4, 0.9, 0.9, 0.5, 0.7]]))
    return logp, ref, owner


def _k3(logp, ref):
    d = ref - logp.detach()
    return torch.exp(d) - d - 1


def test_score_stage1_keeps_kl_on_attempt2():
    """Stage I: beta2 KL on attempt 1 and the default beta1 KL on attempt 2 (the old code had none on attempt 2)."""
    from train.score import SCoReConfig, SCoReTrainer

    trainer = SCoReTrainer(None, SCoReConfig(stage1_steps=2, beta1=0.01, beta2=0.1))
    assert trainer.kl_coefs(0) == [0.1, 0.01] and trainer.kl_coefs(1) == [0.1, 0.01]
    assert trainer.kl_coefs(2) == [0.01, 0.01]
    logp, ref, owner = _one_episode_tensors()
    k3 = _k3(logp, ref)
    kl1, kl2 = float(k3[0, 1:3].sum()), float(k3[0, 5:7].sum())
    assert kl1 > 0 and kl2 > 0
    zero = torch.zeros(1, 2)
    loss, parts = episode_loss(logp, ref, owner, zero, torch.tensor(trainer.kl_coefs(0)), n_episodes=1)
    assert float(loss.detach()) == pytest.approx(0.1 * kl1 + 0.01 * kl2)
    assert parts["kl"] == pytest.approx([kl1, kl2])


def test_episode_loss_gradient_is_advantage_on_response_tokens_only():
    logp, ref, owner = _one_episode_tensors()
    adv = torch.tensor([[3.0, -2.0]])
    loss, _ = episode_loss(logp, logp.detach(), owner, adv, torch.zeros(2), n_episodes=2)
    loss.backward()
    # d loss / d logp = -A_t / E on round t's tokens; prompt and instruction tokens get nothing.
    assert torch.allclose(logp.grad[0], torch.tensor([0.0, -1.5, -1.5, 0.0, 0.0, 1.0, 1.0]))


def test_returns_to_advantages_for_a_hand_made_group():
    """Four episodes of one prompt in Stage II (alpha 10): returns per attempt, then leave-one-out per attempt."""
    rewards = [(0.0, 1.0), (1.0, 1.0), (1.0, 0.0), (0.0, 0.0)]
    returns = [list(score_returns(a, b, 2, 10.0)) for a, b in rewards]
    assert returns == [[1.0, 11.0], [2.0, 1.0], [1.0, -10.0], [0.0, 0.0]]
    adv = round_advantages(returns, group=4)
    # attempt 1: 1 - (2+1+0)/3 = 0, 2 - 2/3, 1 - 1, 0 - 4/3; attempt 2: 11 - (-9)/3 = 14, 1 - 1/3, -10 - 12/3, 0 - 2/3
    assert adv == [
        pytest.approx([0.0, 14.0]),
        pytest.approx([4 / 3, 2 / 3]),
        pytest.approx([0.0, -14.0]),
        pytest.approx([-4 / 3, -2 / 3]),
    ]
    assert leave_one_out([5.0], group=1) == [5.0]


# ---- episodes: the tokens trained are the tokens sampled, in their own context -------------------


def test_pack_episode_keeps_each_response_in_its_sampling_context():
    # Round 2's prompt continues round 1 token for token: one sequence.
    (seq,) = pack_episode(Episode([[1, 2], [1, 2, 3, 4, 9, 9]], [[3, 4], [5, 6]], [0.0, 1.0]))
    assert seq == ([1, 2, 3, 4, 9, 9, 5, 6], [-1, -1, 0, 0, -1, -1, 1, 1])
    # The template closed round 1 with another end token (7) than the one sampled (4): two sequences,
    # attempt 1 keeps its sampled ids, attempt 2 its real context (no doubled end-of-turn token).
    a, b = pack_episode(Episode([[1, 2], [1, 2, 3, 7, 9]], [[3, 4], [5]], [0.0, 1.0]))
    assert a == ([1, 2, 3, 4], [-1, -1, 0, 0]) and b == ([1, 2, 3, 7, 9, 5], [-1, -1, -1, -1, -1, 1])


# ---- data order ----------------------------------------------------------------------------------


def test_prompt_order_is_shuffled_every_epoch_and_disjoint_across_ranks():
    n, per, world = 12, 2, 2
    epoch = [i for step in range(3) for rank in range(world) for i in prompt_indices(step, per, world, rank, n, seed=7)]
    assert sorted(epoch) == list(range(n)) and epoch != list(range(n))  # every row once, not in file order
    nxt = [i for step in range(3, 6) for rank in range(world) for i in prompt_indices(step, per, world, rank, n, seed=7)]
    assert sorted(nxt) == list(range(n)) and nxt != epoch  # reshuffled for the next epoch
    assert prompt_indices(4, per, world, 1, n, seed=7) == prompt_indices(4, per, world, 1, n, seed=7)  # resumable
    assert [prompt_indices(0, per, world, r, n, seed=8) for r in range(world)] != [
        prompt_indices(0, per, world, r, n, seed=7) for r in range(world)
    ]


# ---- SFT: correct turns only, prefills masked ----------------------------------------------------


def _loss_text(tok, row, train_on):
    from selfcorrect.chat import tokenize_conversation
    from train.sft import turns_to_train

    enc = tokenize_conversation(tok, row["messages"], turns_to_train(row, train_on), row.get("prefills"))
    spans, cur = [], []
    for i, m in zip(enc["input_ids"], enc["assistant_masks"]):
        if m:
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


def test_sft_loss_is_on_correct_turns_without_prefill(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sources = {"final_correct", "improving", "rationalised"}
    rows = {r["source"]: r for r in sft_rows(make_trace("Age/1", ["A", "C", "C"]), BBQ, PS, sources)}
    # wrong (A) -> right (C) -> right (C): the wrong first answer is context only.
    assert _loss_text(tok, rows["final_correct"], "correct_turns") == [" C. Can't be determined<|im_end|>"] * 2
    assert _loss_text(tok, rows["improving"], "correct_turns") == [" C. Can't be determined<|im_end|>"]
    assert _loss_text(tok, rows["rationalised"], "correct_turns") == [" C. Can't be determined<|im_end|>"]
    # The old behaviour, kept behind an explicit option, trains the wrong answer too.
    assert (
        _loss_text(tok, rows["final_correct"], "all_assistant")
        == [" A. The grandfather<|im_end|>"] + [" C. Can't be determined<|im_end|>"] * 2
    )
    assert _loss_text(tok, rows["final_correct"], "final_turn") == [" C. Can't be determined<|im_end|>"]
    # right -> wrong -> right: the correct first answer is trained, the wrong middle one is not.
    (row,) = sft_rows(make_trace("Age/2", ["C", "A", "C"]), BBQ, PS, {"final_correct"})
    assert row["train_turns"] == [True, False, True]
    assert row["prefills"] == [PS.first_prefill, PS.review_prefill, PS.review_prefill]


def test_sft_rows_without_turn_flags_need_an_explicit_choice():
    from selfcorrect.errors import UserError
    from train.sft import turns_to_train

    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    with pytest.raises(UserError, match="train_turns"):
        turns_to_train(row, "correct_turns")
    assert turns_to_train(row, "all_assistant") is None


# ---- DPO: which completions are compared ---------------------------------------------------------


def test_dpo_pairs_are_oriented_and_use_their_rounds_prefill():
    rows = dpo_rows_in_trace(make_trace("Age/3", ["C", "A", "B"]), BBQ, PS, {"switched", "improved", "rationalised"})
    by = {r["source"]: r for r in rows}
    # round 2 abandoned the right answer: keeping it (as a round-2 answer, with round 2's prefill) is chosen.
    assert by["switched"]["chosen"][0]["content"] == PS.review_prefill + " C. Can't be determined"
    assert by["switched"]["rejected"][0]["content"] == PS.review_prefill + " A. The grandfather"
    assert by["rationalised"]["round"] == 3 and by["rationalised"]["rejected"][0]["content"].endswith("B. The grandson")
    # Pairs across samples at round 1 carry round 1's own prefill.
    a, b = make_trace("Age/4", ["C", "C"], sample=0), make_trace("Age/4", ["A", "A"], sample=1)
    (pair,) = [r for k, r in build_all([a, b], BBQ, PS, [], ["samples"]) if k == "dpo" and r["round"] == 1]
    assert pair["chosen"][0]["content"] == PS.first_prefill + " C. Can't be determined"
    assert pair["rejected"][0]["content"] == PS.first_prefill + " A. The grandfather"
    assert pair["task"] == "bbq" and pair["prompt_set"] == PS.name


# ---- GRPO: the shaping survives group normalisation -----------------------------------------------


def _trl_advantages(rewards, group):
    """TRL 1.x GRPO with scale_rewards="group": (R - group mean) / (group std + 1e-4)."""
    r = torch.tensor(rewards).view(-1, group)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1).tolist()


def test_grpo_shaping_changes_advantages_with_on_policy_first_attempts():
    ex = json.dumps(make_trace("Age/5", ["C"]).example.to_dict())
    completions = [" C. Can't be determined", " C. Can't be determined", " A. The grandfather", " A. The grandfather"]
    # On-policy: each sample of the group has its own first attempt (right, wrong, right, wrong).
    first_reward, first_correct = [1.0, 0.0, 1.0, 0.0], [True, False, True, False]

    def adv(alpha, penalty, fr, fc):
        rewards = RevisionReward(BBQ, alpha, penalty)(completions, example=[ex] * 4, first_reward=fr, first_correct=fc)
        return rewards, _trl_advantages(rewards, 4)

    r0, a0 = adv(0.0, 0.0, first_reward, first_correct)
    r1, a1 = adv(1.0, 0.0, first_reward, first_correct)
    r2, a2 = adv(0.0, 0.5, first_reward, first_correct)
    assert r0 == [1.0, 1.0, 0.0, 0.0] and r1 == [1.0, 2.0, -1.0, 0.0] and r2 == [1.0, 1.0, -0.5, 0.0]
    assert a1 != pytest.approx(a0) and a2 != pytest.approx(a0)
    assert a1[1] > a1[0]  # fixing a wrong first answer beats keeping a right one
    # With the trace's fixed first attempt (one r1 for the whole group), the shaping cancels out.
    _, b0 = adv(0.0, 0.0, [0.0] * 4, [False] * 4)
    _, b1 = adv(1.0, 0.0, [0.0] * 4, [False] * 4)
    assert b1 == pytest.approx(b0, abs=1e-3)


def test_grpo_refuses_shaping_it_cannot_apply():
    from helpers import grpo_trl_args

    from selfcorrect.errors import UserError
    from train.grpo import GRPOEpisodeConfig, check_options

    cfg = grpo_trl_args()
    with pytest.raises(UserError, match="group baseline removes them"):
        check_options(GRPOEpisodeConfig(first_attempt="trace", alpha=1.0), cfg)
    with pytest.raises(UserError, match="needs generation_backend selfcorrect"):
        check_options(GRPOEpisodeConfig(generation_backend="trl"), cfg)
    check_options(GRPOEpisodeConfig(first_attempt="trace", generation_backend="trl"), cfg)
    check_options(GRPOEpisodeConfig(alpha=1.0, abandon_penalty=0.5), cfg)


def test_rl_rows_carry_provenance():
    row = rl_row(make_trace("Age/6", ["A", "C"]), PS)
    assert (row["task"], row["prompt_set"], row["prompt_set_version"]) == ("bbq", PS.name, PS.version)


# ---- K-round RL: returns per reward mode, built from rounds t..K only ----------------------------


def test_kround_returns_by_hand():
    from train.rewards import kround_returns

    r = [0.0, 1.0, 0.0, 1.0, 1.0]  # wrong, right, lost it, right again, kept it
    # final: every round is credited the last round's reward.
    assert kround_returns(r, "final") == [1.0] * 5
    # sum: reward-to-go, G_t = r_t + ... + r_K.
    assert kround_returns(r, "sum") == [3.0, 3.0, 2.0, 2.0, 1.0]
    # convergence (penalty 1, bonus 0.5): earned u = [0, 1, 0 - 1, 1 + 0.5, 1 + 0.5] (round 3 abandons
    # a right answer; rounds 4 and 5 are right through to the end); G_t = u_t + ... + u_5.
    assert kround_returns(r, "convergence", 1.0, 0.5, correct=[x == 1.0 for x in r]) == [3.0, 3.0, 2.0, 3.0, 1.5]
    # Settling earlier earns more: right from round 2 vs right from round 4 (same final answer).
    early = kround_returns([0.0, 1.0, 1.0, 1.0, 1.0], "convergence", correct=[False, True, True, True, True])
    late = kround_returns([0.0, 0.0, 0.0, 1.0, 1.0], "convergence", correct=[False, False, False, True, True])
    assert early[0] == 4 + 0.5 * 4 and late[0] == 2 + 0.5 * 2
    # A round earns nothing for rounds before it: the same future gives the same return whatever came first.
    assert kround_returns([1.0, 0.0, 1.0], "sum")[1:] == kround_returns([0.0, 0.0, 1.0], "sum")[1:]


def test_kround_advantages_are_per_round_index():
    from train.rewards import kround_returns

    episodes = [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # three episodes of one prompt
    returns = [kround_returns(e, "sum") for e in episodes]
    assert returns == [[3.0, 2.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    adv = round_advantages(returns, group=3)
    # round 1: 3 - (1+1)/2 = 2, 1 - (3+1)/2 = -1, 1 - 2 = -1; round 3: 1 - 0.5, 1 - 0.5, 0 - 1
    assert adv == [[2.0, 1.0, 0.5], [-1.0, -0.5, 0.5], [-1.0, -0.5, -1.0]]


def test_gsm8k_rationalised_revision_has_the_tasks_answer_format():
    from conftest import fixture

    from selfcorrect.prompts import get_prompt_set
    from selfcorrect.trace import Round, Trajectory

    task = get_task("gsm8k")
    ex = next(iter(task.load(fixture("gsm8k"))))
    cot = get_prompt_set("cot")
    response = " 16 - 3 = 13. The answer is 13."
    trace = Trajectory(
        id=ex.id,
        task="gsm8k",
        prompt_set=cot.name,
        example=ex,
        rounds=[Round.graded(cot.first_turn(ex.question), None, response, task.grade(ex, response))],
    )
    (row,) = sft_rows(trace, task, cot, {"rationalised"})
    revision = row["messages"][-1]["content"]
    # Janet's ducks: the reference's worked steps without its <<...>> calculator notes, then the answer.
    assert revision.startswith(" Janet sells 16 - 3 - 4 = 9 duck eggs a day.")
    assert "<<" not in revision and revision.endswith("\nThe answer is 18.")
    assert task.grade(ex, revision).correct and row["train_turns"] == [False, True]


def test_kround_convergence_reads_the_graders_verdict_not_the_reward():
    """Toxicity's reward is 1 - P(toxic), never 1.0; its verdict (toxicity under threshold) is. Three
    clean rounds are right from round 1 to the end, so each earns the stable bonus."""
    from train.rewards import kround_returns

    rewards = [0.9, 0.95, 0.97]
    # u = [0.9 + 0.5, 0.95 + 0.5, 0.97 + 0.5]; G_t = u_t + ... + u_3
    got = kround_returns(rewards, "convergence", 1.0, 0.5, correct=[True, True, True])
    assert got == pytest.approx([4.32, 2.92, 1.47])
    # A clean answer that turns toxic (verdict right -> wrong) is charged the flip penalty at round 2.
    got = kround_returns([0.9, 0.2, 0.3], "convergence", 1.0, 0.5, correct=[True, False, False])
    assert got == pytest.approx([0.9 + (0.2 - 1.0) + 0.3, (0.2 - 1.0) + 0.3, 0.3])
    with pytest.raises(ValueError, match="correct flag"):
        kround_returns(rewards, "convergence")


def test_kround_change_penalty_charges_every_change_wrong_to_wrong_included():
    from train.rewards import kround_returns

    rewards, correct, answers = [0.0, 0.0, 0.0, 1.0], [False, False, False, True], ["A", "B", "B", "C"]
    # convergence, flip 1, bonus 0.5, change 1: u = [0, 0 - 1 (A -> B, wrong -> wrong), 0, 1 + 0.5 - 1 (B -> C)]
    got = kround_returns(rewards, "convergence", 1.0, 0.5, correct, answers, change_penalty=1.0)
    assert got == [-0.5, -0.5, 0.5, 0.5]
    # Without the knob the wrong -> wrong change is free: u = [0, 0, 0, 1.5]
    assert kround_returns(rewards, "convergence", 1.0, 0.5, correct, answers) == [1.5, 1.5, 1.5, 1.5]
    # In sum mode too; keeping a wrong answer costs nothing, so staying put beats wandering among wrong ones.
    assert kround_returns([0.0] * 3, "sum", answers=["A", "A", "A"], change_penalty=1.0) == [0.0, 0.0, 0.0]
    assert kround_returns([0.0] * 3, "sum", answers=["A", "B", "A"], change_penalty=1.0) == [-2.0, -2.0, -1.0]
    # final: u = [0, 0 - 1 (A -> B), 1]; the change before round 2 is charged to rounds 1 and 2 only
    assert kround_returns([0.0, 0.0, 1.0], "final", answers=["A", "B", "B"], change_penalty=1.0) == [0.0, 0.0, 1.0]
    assert kround_returns([0.0, 0.0, 1.0], "final", answers=["A", "B", "B"]) == [1.0, 1.0, 1.0]


def test_kround_refuses_change_penalty_on_a_task_whose_answer_is_a_score(tmp_path):
    from helpers import run_command

    p = run_command(
        "train.kround",
        ["--task", "toxicity", "--classifier", "unused", "--prompt_set", "intrinsic", "--change_penalty", "1",
         "--model_name_or_path", str(tmp_path / "no-model"), "--dataset_path", str(tmp_path / "no-data.jsonl"),
         "--output_dir", str(tmp_path / "out")],
    )  # fmt: skip
    assert p.returncode == 2 and "change_penalty needs answers that are choices or values" in p.stderr, p.stderr


def test_kround_trainer_credits_episodes_with_their_verdicts_and_answers():
    """The trainer hands each sampled episode's grader verdicts and parsed answers to the credit."""
    from train.kround import KRoundConfig, KRoundTrainer
    from train.rl_functions import Episode

    trainer = KRoundTrainer(None, KRoundConfig(change_penalty=1.0))
    ep = Episode([[1], [1], [1]], [[2], [2], [2]], [0.9, 0.95, 0.97], [True, True, True], ["A", "B", "B"])
    # u = [0.9 + 0.5, 0.95 + 0.5 - 1 (A -> B), 0.97 + 0.5]
    assert trainer.episode_returns(ep, 0) == pytest.approx([3.32, 1.92, 1.47])


def _stopped_group():
    """Two episodes of one prompt, K = 3: A settled right after round 1 (rounds 2-3 carry it), B ran
    every round, wrong then right."""
    a = Episode([[1, 2]], [[3, 4]], [1.0, 1.0, 1.0], [True] * 3, ["A"] * 3, stop_round=1)
    b = Episode(
        [[1, 2], [1, 2, 5, 9], [1, 2, 5, 9, 6, 9]], [[5], [6], [6]], [0.0, 1.0, 1.0], [False, True, True], ["B", "A", "A"]
    )
    return a, b


def test_kround_returns_with_stopping_and_round_cost_by_hand():
    """G_t = sum over s >= t of (r_s - round_cost * [round s ran]); a stopped episode's carried rounds
    keep its last reward and cost nothing."""
    from train.kround import KRoundConfig, KRoundTrainer

    trainer = KRoundTrainer(None, KRoundConfig(stop_when="stable", round_cost=0.1, reward_mode="sum"))
    a, b = _stopped_group()
    ga, gb = trainer.episode_returns(a, 0), trainer.episode_returns(b, 0)
    assert ga == pytest.approx([2.9, 2.0, 1.0])  # u = [1 - 0.1, 1, 1]
    assert gb == pytest.approx([1.7, 1.8, 0.9])  # u = [0 - 0.1, 1 - 0.1, 1 - 0.1]
    # Per-round leave-one-out over the two: defined at every round index, carried rounds included.
    adv = round_advantages([ga, gb], group=2)
    assert adv[0] == pytest.approx([1.2, 0.2, 0.1]) and adv[1] == pytest.approx([-1.2, -0.2, -0.1])
    # convergence mode: the carried right answer stays right to K, so every round earns the bonus.
    trainer = KRoundTrainer(None, KRoundConfig(stop_when="stable", round_cost=0.1))
    assert trainer.episode_returns(a, 0) == pytest.approx([4.4, 3.0, 1.5])


def test_stopped_rounds_carry_no_tokens_into_the_loss():
    a, b = _stopped_group()
    assert pack_episode(a) == [([1, 2, 3, 4], [-1, -1, 0, 0])]
    logp = torch.full((1, 3), -1.0)
    owner = torch.tensor([[-1, 0, 0]])  # predicted tokens 2..4 of A's only sequence
    adv = torch.tensor([[1.2, 0.2, 0.1]])
    loss, parts = episode_loss(logp, logp.clone(), owner, adv, torch.zeros(3), 1)
    assert float(loss) == pytest.approx(2 * 1.2) and parts["pg"][1:] == [0.0, 0.0]


def test_without_stopping_the_returns_are_the_fixed_k_ones():
    """stop_when never, round_cost 0: the trainer credits what it credited before the options existed."""
    from train.kround import KRoundConfig, KRoundTrainer
    from train.rewards import kround_returns

    trainer = KRoundTrainer(None, KRoundConfig())
    assert trainer.stop_rule() is None
    _, b = _stopped_group()
    assert trainer.episode_returns(b, 0) == kround_returns(b.rewards, "convergence", 1.0, 0.5, b.correct, b.answers)
