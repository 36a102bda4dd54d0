"""Statistics every metric shares: ratios with empty denominators, percentile bootstrap intervals
(plain and resampling whole examples), Pearson's r. Pure: numbers in, numbers out (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def ratio(a: float, b: float) -> float | None:
    """a / b, or None for an empty denominator (a rate over nothing is unknown, not 0)."""
    return a / b if b else None


def bootstrap_share_ci(k: int, n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the share k/n. Resampling n booleans with replacement gives a
    Binomial(n, k/n) count, so the bootstrap distribution is drawn directly (exact, O(n_boot))."""
    if n == 0:
        return None
    p = k / n
    draws = np.random.default_rng(seed).binomial(n, p, size=n_boot) / n
    return [float(np.quantile(draws, (1 - level) / 2)), float(np.quantile(draws, (1 + level) / 2))]


def bootstrap_cluster_share_ci(
    clusters: dict[tuple[int, int], int], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of a share over trajectories, resampling examples (a cluster
    bootstrap): the trajectories of one example (``samples > 1``) are correlated, so they are drawn
    together. ``clusters[(n_trajectories, n_correct)]`` = number of examples with that outcome; a
    resample draws as many examples as there are, and its share is correct over drawn trajectories.

    Examples with the same (n, k) are interchangeable, so the number drawn of each kind is one
    multinomial draw over the kinds (exact). With one trajectory per example this is the binomial
    draw of ``bootstrap_share_ci``, which is used then (same numbers as a trajectory bootstrap)."""
    if all(n == 1 for n, _ in clusters):
        return bootstrap_share_ci(sum(k * m for (_, k), m in clusters.items()), sum(clusters.values()), n_boot, seed, level)
    kinds = [c for c, m in clusters.items() if m]
    if not kinds:
        return None
    draws = cluster_draws([clusters[c] for c in kinds], n_boot, seed)
    n = draws @ np.array([c[0] for c in kinds])
    shares = (draws @ np.array([c[1] for c in kinds])) / np.maximum(n, 1)
    return [float(np.quantile(shares, (1 - level) / 2)), float(np.quantile(shares, (1 + level) / 2))]


def cluster_draws(sizes: Sequence[int], n_boot: int, seed: int):
    """How many examples of each kind a bootstrap resample draws: with E examples, of which
    ``sizes[j]`` are of kind j, resampling E examples with replacement draws Multinomial(E, sizes/E).
    Returns an (n_boot, kinds) array; memory n_boot x kinds, and kinds <= examples."""
    e = sum(sizes)
    return np.random.default_rng(seed).multinomial(e, [m / e for m in sizes], size=n_boot)


def bootstrap_ratio_cis(
    units: dict[tuple[tuple[float, ...], int], int], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[list[float] | None]:
    """Percentile bootstrap intervals of several shares at once, resampling units (items, or the
    task's groups: templates) with replacement.

    ``units[(sums, n)]`` = how many units have per-metric numerators ``sums`` over ``n`` trajectories;
    a resample draws as many units as there are, and metric j's value is the sum of its numerators
    over the sum of n. A numerator may be negative (a paired difference, accuracy at K minus at 1),
    so the share is a mean. Units alike are one kind and drawn together by one multinomial draw
    (``cluster_draws``; exact), so memory grows with the kinds, not with the resamples.
    Returns one [lo, hi] per metric (None where every resample is empty)."""
    kinds = [u for u, m in units.items() if m]
    if not kinds:
        return []
    draws = cluster_draws([units[u] for u in kinds], n_boot, seed)
    num = draws @ np.array([u[0] for u in kinds], dtype=float)
    den = draws @ np.array([u[1] for u in kinds], dtype=float)
    shares = num / np.maximum(den, 1)[:, None]
    lo, hi = np.quantile(shares, (1 - level) / 2, axis=0), np.quantile(shares, (1 + level) / 2, axis=0)
    return [[float(a), float(b)] for a, b in zip(lo, hi)]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test of paired binary outcomes: ``b`` and ``c`` are the discordant
    pairs (yes/no and no/yes); under the null each discordant pair is a fair coin, so the p-value
    is 2 P(Binomial(b + c, 1/2) <= min(b, c)), capped at 1 (McNemar 1947; the exact form as in
    Fagerland et al. 2013, BMC Med Res Methodol 13:91). 1.0 when there is no discordant pair.

    >>> mcnemar_exact(0, 6), mcnemar_exact(3, 3), round(mcnemar_exact(1, 9), 4)
    (0.03125, 1.0, 0.0215)
    """
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None
