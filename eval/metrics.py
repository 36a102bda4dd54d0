"""Task-agnostic metrics over multi-round traces: transitions between rounds, convergence,
stability, uncertainty. Pure functions: lists and dicts in, numbers out (no torch). Each task's own
metrics (BBQ bias scores, Winogender correlation, ...) live in its file under selfcorrect/tasks/.

Conventions: ``correct[i][r]`` is whether trajectory i was right at round r (0-based);
``answers[i][r]`` is its parsed answer. Rates with an empty denominator are None (not 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from selfcorrect.stats import ratio


def per_round_accuracy(correct: Sequence[Sequence[bool]]) -> list[float]:
    """Share of items right at each round; ``correct`` holds one row of per-round verdicts per item.

    >>> per_round_accuracy([[False, True], [True, True]])
    [0.5, 1.0]
    """
    k = len(correct[0]) if correct else 0
    return [sum(bool(c[r]) for c in correct) / len(correct) for r in range(k)]


TRANSITION_KEYS = ("n", "right_to_right", "wrong_to_right", "right_to_wrong", "wrong_to_wrong", "flips")


def count_transition(counts: dict[str, int], right_before: bool, right_after: bool, changed: bool) -> None:
    """Add one item's move between two rounds to ``counts`` (the TRANSITION_KEYS); ``changed``:
    the parsed answer changed, whether or not its correctness did.

    >>> counts = dict.fromkeys(TRANSITION_KEYS, 0)
    >>> count_transition(counts, False, True, True); count_transition(counts, True, True, False)
    >>> counts
    {'n': 2, 'right_to_right': 1, 'wrong_to_right': 1, 'right_to_wrong': 0, 'wrong_to_wrong': 0, 'flips': 1}
    """
    counts["n"] += 1
    counts[f"{'right' if right_before else 'wrong'}_to_{'right' if right_after else 'wrong'}"] += 1
    counts["flips"] += bool(changed)


def rss(acc1: float, acc2: float) -> float | None:
    """RSS = (Acc2 - Acc1^2) / (2 Acc1 (1 - Acc1)) (Yang et al., "Confidence v.s. Critique",
    arXiv 2412.19513). None when Acc1 is 0 or 1."""
    denom = 2 * acc1 * (1 - acc1)
    return (acc2 - acc1**2) / denom if denom > 0 else None


def transition_from_counts(t: dict[str, int]) -> dict[str, Any]:
    """``t``: n, right_to_right, wrong_to_right, right_to_wrong, wrong_to_wrong, flips."""
    n = t["n"]
    n_right, n_wrong = t["right_to_right"] + t["right_to_wrong"], t["wrong_to_right"] + t["wrong_to_wrong"]
    acc_a = ratio(n_right, n) or 0.0
    acc_b = ratio(t["right_to_right"] + t["wrong_to_right"], n) or 0.0
    return {
        **{k: v for k, v in t.items() if k != "flips"},
        "delta": acc_b - acc_a,
        "wrong_to_right_rate": ratio(t["wrong_to_right"], n),
        "right_to_wrong_rate": ratio(t["right_to_wrong"], n),
        "flip_rate": ratio(t["flips"], n),
        "confidence_level": ratio(t["right_to_right"], n_right),  # CL = P(right at b | right at a)
        "critique_score": ratio(t["wrong_to_right"], n_wrong),  # CS = P(right at b | wrong at a)
        "rss": rss(acc_a, acc_b),
    }


def convergence(
    metric: Sequence[float], flip_rates: Sequence[float | None], epsilon: float = 0.01, delta: float = 0.05
) -> dict[str, Any]:
    """When a per-round metric settles.

    ``convergence_round`` (1-based) is the first round r such that the metric stays within
    ``epsilon`` of its final value from r on and every flip rate from r on (r -> r+1, ...) is at most
    ``delta``. The final round always qualifies trivially, so K means "did not settle before the end".
    """
    k = len(metric)
    if k == 0:
        return {"convergence_round": None}
    final = metric[-1]
    conv = k
    for r in range(k - 1, -1, -1):
        within = abs(metric[r] - final) <= epsilon + 1e-12
        flips_ok = all(f is None or f <= delta + 1e-12 for f in flip_rates[r:])
        if within and flips_ok:
            conv = r + 1
        else:
            break
    rest = metric[conv - 1 :]
    m = sum(rest) / len(rest)
    return {
        "convergence_round": conv,
        "converged_before_last": conv < k,
        "final_minus_best": final - max(metric),
        "variance_after_convergence": sum((x - m) ** 2 for x in rest) / len(rest),
        "epsilon": epsilon,
        "delta": delta,
    }


def stable_flags(answers: Sequence[Any]) -> list[bool]:
    """For one trajectory: does its answer never change after round r (r = 1..K)?"""
    return [all(answers[t] == answers[r] for t in range(r, len(answers))) for r in range(len(answers))]


def stable_after(answers: Sequence[Sequence[Any]]) -> list[float]:
    """Share of trajectories whose answer never changes after round r, for r = 1..K."""
    if not answers:
        return []
    flags = [stable_flags(a) for a in answers]
    return [sum(f[r] for f in flags) / len(flags) for r in range(len(answers[0]))]


def edit_distance_ratio(a: str, b: str, max_words: int = 128) -> float:
    """Word-level Levenshtein distance between two responses over the longer one's word count: 0 for
    an unchanged response, 1 for one that shares nothing in place. Kumar et al. (2024, arXiv
    2409.12917, Sec. 4) plot the edit distance ratio between attempts to show collapse to "no
    edit"; they do not state the unit, so words (not characters) are used here, which keeps a
    long chain of thought cheap to compare. Only the first ``max_words`` words of each are compared
    (the dynamic programme is quadratic in pure Python), after dropping the words both share at the
    start and at the end, which cost nothing.

    >>> edit_distance_ratio("B. The grandson", "B. The grandson"), edit_distance_ratio("A. x y", "B. x y")
    (0.0, 0.3333333333333333)
    >>> edit_distance_ratio("", "")
    0.0
    """
    x, y = a.split()[:max_words], b.split()[:max_words]
    if not x and not y:
        return 0.0
    longer = max(len(x), len(y))
    while x and y and x[0] == y[0]:
        x, y = x[1:], y[1:]
    while x and y and x[-1] == y[-1]:
        x, y = x[:-1], y[:-1]
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        cur = [i] + [0] * len(y)
        for j, wy in enumerate(y, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy))
        prev = cur
    return prev[-1] / longer


def entropy(probs: dict[str, float] | None) -> float | None:
    """Entropy in nats of an option distribution."""
    if not probs:
        return None
    return -sum(p * math.log(p) for p in probs.values() if p > 0)


def ece_bin(confidence: float, bins: int = 10) -> int:
    return min(max(int(confidence * bins), 0), bins - 1)


def ece_from_bins(bins: Sequence[Sequence[float]]) -> float | None:
    """ECE from per-bin [count, sum of confidence, number correct]."""
    n = sum(b[0] for b in bins)
    if not n:
        return None
    return sum(b[0] / n * abs(b[1] / b[0] - b[2] / b[0]) for b in bins if b[0])


def option_summary(option_probs: dict[str, float] | None, answer: str) -> tuple[float | None, float | None]:
    """(entropy of the option distribution, probability of the chosen option) of one response."""
    if not option_probs:
        return None, None
    return entropy(option_probs), option_probs.get(answer)


def uncertainty_from_sums(
    entropy_sum: float, n_entropy: int, nll_sum: float, n_nll: int, bins: Sequence[Sequence[float]], n: int | None = None
) -> dict[str, Any]:
    """Mean option entropy (nats), mean token NLL of the response, ECE of the chosen option's
    probability from ``ece_from_bins``'s per-bin sums. Entropy and ECE are over the answers that have
    option probabilities (read where the answer's label token was generated); the others, of ``n``
    answers in all (given as text, unparsed, or scored from outside), are counted as skipped."""
    out = {
        "option_entropy": ratio(entropy_sum, n_entropy),
        "token_nll": ratio(nll_sum, n_nll),
        "ece": ece_from_bins(bins),
        "n_with_option_probs": n_entropy,
    }
    if n is not None:
        out["n_without_option_probs"] = n - n_entropy
    return out
