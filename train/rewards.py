"""Reward shaping for self-correction RL. Pure functions (no torch); the task scorers give r1, r2.

Used by train/grpo.py (RL on the revision turn), train/score.py (SCoRe, two attempts) and
train/kround.py (K rounds).
"""

from __future__ import annotations

import json
from typing import Any

from selfcorrect.errors import UserError
from selfcorrect.tasks.base import Example, Task


def shaped_revision_reward(r2: float, r1: float, first_correct: bool, alpha: float = 0.0, abandon_penalty: float = 0.0) -> float:
    """Reward of a revision: its task score, plus ``alpha * (r2 - r1)`` for improving on the first
    attempt, minus ``abandon_penalty`` when a correct first answer was changed into a worse one.

    >>> shaped_revision_reward(1.0, 0.0, False, alpha=10)
    11.0
    >>> shaped_revision_reward(0.0, 1.0, True, alpha=0, abandon_penalty=0.5)
    -0.5
    """
    reward = r2 + alpha * (r2 - r1)
    if first_correct and r2 < r1:
        reward -= abandon_penalty
    return reward


def score_returns(r1: float, r2: float, stage: int, alpha: float) -> tuple[float, float]:
    """SCoRe (Kumar et al. 2024, arXiv 2409.12917): the return credited to each attempt's tokens.

    Stage I maximises r2 (attempt 1 is held near the reference by its KL term, not by reward): both
    attempts are credited r2. Stage II maximises r1 + r2 and adds the shaping bonus
    alpha * (r2 - r1) "to the second attempt" only (Sec. 5.2): attempt 1 is credited r1 + r2, the
    unshaped return from its turn on; attempt 2 its shaped reward r2 + alpha * (r2 - r1). A correct
    first attempt therefore never lowers attempt 1's return (see train/score.py for why).

    >>> score_returns(0.0, 1.0, stage=1, alpha=10)
    (1.0, 1.0)
    >>> score_returns(1.0, 1.0, stage=2, alpha=10), score_returns(0.0, 1.0, stage=2, alpha=10)
    ((2.0, 1.0), (1.0, 11.0))
    >>> score_returns(1.0, 0.0, stage=2, alpha=10)
    (1.0, -10.0)
    """
    if stage == 1:
        return r2, r2
    return r1 + r2, r2 + alpha * (r2 - r1)


REWARD_MODES = ("final", "sum", "convergence")


def kround_returns(
    rewards: list[float],
    mode: str = "convergence",
    flip_penalty: float = 1.0,
    stable_bonus: float = 0.5,
    correct: list[bool] | None = None,
    answers: list[str] | None = None,
    change_penalty: float = 0.0,
    round_cost: float = 0.0,
    rounds_run: int | None = None,
) -> list[float]:
    """K-round RL (train/kround.py, whose docstring defines the modes): the return G_t of each round
    of one episode from its per-round rewards.

    ``correct``: the grader's verdict per round (``convergence`` needs it); ``answers``: the parsed
    answer per round (``change_penalty`` needs it). An episode that stopped (``stop_when``) after
    ``rounds_run`` < K rounds gives K rewards all the same: rounds after the stop carry its last
    reward, verdict and answer. ``round_cost`` is subtracted from u_s of every round that ran
    (s <= rounds_run; every round when None), so the return of round t counts the rounds still to run.

    >>> kround_returns([0.0, 1.0, 1.0], "final")
    [1.0, 1.0, 1.0]
    >>> kround_returns([0.0, 1.0, 1.0], "sum")
    [2.0, 2.0, 1.0]
    >>> kround_returns([1.0, 0.0, 1.0], "convergence", 1.0, 0.5, correct=[True, False, True])
    [1.5, 0.5, 1.5]
    >>> kround_returns([0.0, 0.0, 0.0], "sum", answers=["A", "B", "B"], change_penalty=1.0)
    [-1.0, -1.0, 0.0]
    >>> kround_returns([0.0, 1.0, 1.0, 1.0], "sum", round_cost=0.25, rounds_run=2)
    [2.5, 2.75, 2.0, 1.0]
    """
    if mode not in REWARD_MODES:
        raise UserError(f"reward_mode must be one of {', '.join(REWARD_MODES)} (got '{mode}')")
    k = len(rewards)
    if mode == "final":
        earned = [0.0] * (k - 1) + [rewards[-1]]
    elif mode == "sum":
        earned = list(rewards)
    else:
        if correct is None or len(correct) != k:
            raise ValueError("reward_mode convergence needs the grader's correct flag of every round")
        right = [bool(c) for c in correct]
        earned = []
        for s in range(k):
            u = rewards[s]
            if s > 0 and right[s - 1] and not right[s]:
                u -= flip_penalty
            if all(right[s:]):
                u += stable_bonus
            earned.append(u)
    if change_penalty:
        if answers is None or len(answers) != k:
            raise ValueError("change_penalty needs the parsed answer of every round")
        earned = [u - change_penalty * (s > 0 and answers[s] != answers[s - 1]) for s, u in enumerate(earned)]
    if round_cost:
        ran = k if rounds_run is None else rounds_run
        earned = [u - round_cost * (s < ran) for s, u in enumerate(earned)]
    returns, acc = [0.0] * k, 0.0
    for s in range(k - 1, -1, -1):
        acc += earned[s]
        returns[s] = acc
    return returns


class RevisionReward:
    """TRL reward function ``(completions, **columns) -> list[float]`` over the rl.jsonl columns."""

    def __init__(self, task: Task, alpha: float = 0.0, abandon_penalty: float = 0.0):
        self.task, self.alpha, self.abandon_penalty = task, alpha, abandon_penalty
        self.__name__ = f"{task.name}_revision_reward"

    def __call__(
        self, completions: list[Any], example: list[str], first_reward: list[float], first_correct: list[bool], **_: Any
    ) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        examples = [Example.from_dict(json.loads(e)) for e in example]
        scores = self.task.grade_batch(examples, texts)
        return [
            shaped_revision_reward(s.reward, r1, fc, self.alpha, self.abandon_penalty)
            for s, r1, fc in zip(scores, first_reward, first_correct)
        ]
