"""The pure functions of the on-policy trainers (train/score.py, train/kround.py, through
train/online_rl.py): which prompts a step takes, an episode packed into training sequences, per-round
credit, the loss and the token log-probs. No state, no process group: each is tested on hand-made
episodes (tests/test_signals.py).

The loss, over the episodes of a step:

    loss = (1 / E) * sum over episodes e, rounds t, tokens i of y_t:
               - A[e, t] * log pi(y_t,i | x_t, y_t,<i)  +  kl[t] * k3(pi, ref)(y_t,i)

with A[e, t] = G[e, t] - mean of G[., t] over the other episodes of the same prompt (leave-one-out
baseline, per round index) and k3 = exp(ref - logp) - (ref - logp) - 1, the non-negative KL
estimator of Schulman (2020) that GRPO uses (Shao et al. 2024, arXiv 2402.03300, Eq. 4). Tokens of
the prompt, the instruction turns and padding carry no loss.

Episodes of different lengths (a conversation stopped by ``stop_when`` after c < K rounds): every
episode keeps K rewards, rounds c+1..K carrying round c's reward, verdict and answer, so G[e, t] and
the baseline at every round index are defined as for K rounds; such a round has no prompt and no
response (``Episode.prompts`` / ``responses`` hold the c rounds that ran), so it owns no token and
adds nothing to the loss. The baseline at round t > c of a running episode includes what a stopped
episode earns from round t on: the value of having stopped is what running on is compared with.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

# ---- data order --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _permutation(n_rows: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n_rows))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


def prompt_indices(step: int, per_device: int, world: int, rank: int, n_rows: int, seed: int) -> list[int]:
    """Dataset rows one process trains on at one step.

    The rows are walked in a seeded random order, reshuffled every epoch (a data_gen file is sorted
    by category and template, so file order would give each step siblings of one template). The
    order depends only on (seed, step), so a resumed run sees the same rows as an uninterrupted
    one, and the processes of a step take disjoint slices.

    >>> sorted(prompt_indices(0, 2, 2, 0, 4, seed=0) + prompt_indices(0, 2, 2, 1, 4, seed=0))
    [0, 1, 2, 3]
    """
    out = []
    for i in range(per_device):
        epoch, k = divmod((step * world + rank) * per_device + i, n_rows)
        out.append(_permutation(n_rows, seed, epoch)[k])
    return out


# ---- episodes, credit, loss --------------------------------------------------------------------


@dataclass
class Episode:
    """One sampled trajectory: per round, the prompt ids, the sampled ids and the task's reward."""

    prompts: list[list[int]]
    responses: list[list[int]]
    rewards: list[float]
    correct: list[bool] = field(default_factory=list)  # the grader's verdict per round
    answers: list[str] = field(default_factory=list)  # the parsed answer per round
    # Rounds that ran when the episode stopped before K (prompts/responses hold only these; rewards,
    # correct and answers carry the last round to K); None: every round ran.
    stop_round: int | None = None

    def rounds_run(self) -> int:
        return len(self.rewards) if self.stop_round is None else self.stop_round


def episode_of(trajectory, generations: list) -> Episode:
    """The episode of one rolled-out trajectory (``selfcorrect.trace.Trajectory``) and its generations
    per round (``generations[t]``): the ids of the rounds that ran, every round's reward, verdict and
    answer (a round after a stop carries the last one).

    >>> from selfcorrect.rollout import Generation
    >>> from selfcorrect.trace import Round, Trajectory
    >>> rnd = Round(None, None, "", "A", True, 1.0)
    >>> g = Generation("A", [5, 2], 2, "eos", 0.0, prompt_ids=[1, 4])
    >>> t = Trajectory("0", "bbq", "p", None, [rnd, rnd, rnd.carry()], stop_round=2)
    >>> ep = episode_of(t, [g, g, Generation("A", [], 0, "stopped", 0.0, prompt_ids=[])])
    >>> ep.prompts, ep.responses, ep.rewards, ep.stop_round
    ([[1, 4], [1, 4]], [[5, 2], [5, 2]], [1.0, 1.0, 1.0], 2)
    """
    ran = trajectory.rounds_run()
    return Episode(
        prompts=[generations[t].prompt_ids for t in range(ran)],
        responses=[generations[t].token_ids for t in range(ran)],
        rewards=[rnd.reward for rnd in trajectory.rounds],
        correct=[rnd.correct for rnd in trajectory.rounds],
        answers=[rnd.answer for rnd in trajectory.rounds],
        stop_round=trajectory.stop_round,
    )


def pack_episode(ep: Episode) -> list[tuple[list[int], list[int]]]:
    """Training sequences of an episode, each with the owner of every token: the round whose
    response the token is (0-based), or -1 for context (prompt, instruction turns).

    Round t+1's prompt usually continues round t's prompt and response token for token; then both
    rounds share one sequence. When the chat template re-renders the earlier turn differently (it
    trims the answer, or closes it with another end-of-turn token than the one sampled), round t+1
    starts a new sequence, so every response is scored in exactly the context it was sampled in.

    >>> pack_episode(Episode([[1, 2], [1, 2, 3, 9, 4]], [[3], [5, 6]], [0.0, 1.0]))
    [([1, 2, 3, 9, 4, 5, 6], [-1, -1, 0, -1, -1, 1, 1])]
    >>> pack_episode(Episode([[1, 2], [1, 2, 7, 4]], [[3], [5]], [0.0, 1.0]))
    [([1, 2, 3], [-1, -1, 0]), ([1, 2, 7, 4, 5], [-1, -1, -1, -1, 1])]
    """
    seqs: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    owner: list[int] = []
    for t, (x, y) in enumerate(zip(ep.prompts, ep.responses)):
        if ids and len(x) >= len(ids) and x[: len(ids)] == ids:
            owner += [-1] * (len(x) - len(ids))
            ids = list(x)
        else:
            if ids:
                seqs.append((ids, owner))
            ids, owner = list(x), [-1] * len(x)
        ids = ids + list(y)
        owner = owner + [t] * len(y)
    seqs.append((ids, owner))
    return seqs


def leave_one_out(values: list[float], group: int) -> list[float]:
    """value - mean of the other values in its group of ``group`` (no baseline when group == 1).

    >>> leave_one_out([1.0, 0.0, 2.0, 2.0], group=2)
    [1.0, -1.0, 0.0, 0.0]
    """
    out = []
    for i in range(0, len(values), group):
        g = values[i : i + group]
        s = sum(g)
        out += [v - (s - v) / (len(g) - 1) if len(g) > 1 else v for v in g]
    return out


def round_advantages(returns: list[list[float]], group: int) -> list[list[float]]:
    """Per-round leave-one-out advantages: episode e's return at round t minus the mean return at
    round t of the other episodes of the same prompt (episodes come in consecutive groups)."""
    k = len(returns[0]) if returns else 0
    cols = [leave_one_out([g[t] for g in returns], group) for t in range(k)]
    return [[cols[t][e] for t in range(k)] for e in range(len(returns))]


def episode_loss(logp, ref_logp, owner, adv, kl_coef, n_episodes: int):
    """The REINFORCE loss of the module docstring over a micro-batch of packed sequences.

    logp, ref_logp: (S, T) log-probs of each predicted token under the policy and the reference;
    owner: (S, T) round of the response each predicted token belongs to (-1: no loss);
    adv: (S, K) advantage of each round for the episode each sequence comes from; kl_coef: (K,).
    Returns the loss (summed over tokens, divided by ``n_episodes``: a step's micro-batches add up
    to the mean over its episodes) and, per round, the policy-gradient and KL parts.
    """
    import torch

    mask = owner >= 0
    idx = owner.clamp(min=0)
    a = adv.gather(1, idx) * mask
    beta = kl_coef.to(logp.dtype)[idx] * mask
    diff = (ref_logp - logp).clamp(-20, 20)
    kl_tok = (torch.exp(diff) - diff - 1) * mask
    pg_tok = -a * logp
    loss = (pg_tok + beta * kl_tok).sum() / n_episodes
    k = adv.shape[1]
    parts = {
        "pg": [float((pg_tok * (owner == t)).sum().detach()) / n_episodes for t in range(k)],
        "kl": [float((kl_tok * (owner == t)).sum().detach()) / n_episodes for t in range(k)],
    }
    return loss, parts


def token_logprobs(model, ids, att, temperature: float = 1.0):
    """log p(token t+1 | tokens <= t) under softmax(logits / temperature) for every position, shape
    (batch, len - 1). The temperature is the sampling one: the tokens were drawn from that
    distribution, so the policy gradient and the KL are taken under it (as TRL's GRPO does)."""
    from trl.trainer.utils import selective_log_softmax

    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    return selective_log_softmax(logits / temperature, ids[:, 1:])
