"""Traces -> metrics.json (pure: trajectories in, nested dict out; no torch).

Layout (documented in the README):
  run:         what was evaluated (model, adapter, task, prompt set, K, n, the task's report columns)
  headline:    {"metric": "accuracy", "values": [per round], "ci95": [[lo, hi] per round]}
  per_round:   [{"round": r, "task": {the task's metrics}, "intervals": {metric: [lo, hi]},
                 "uncertainty": {...}, "probe": {...}}]
  breakdown:   {name: {subgroup: [the task's metrics per round]}}   (BBQ: by_category)
  transitions: {"consecutive": {"1->2": {...}}, "first_to_last": {...}, "delta_from_round1": [...]}
  convergence: {"convergence_round": r, ...}
  stable_after: [share of trajectories whose answer never changes after round r]

The task's own metrics come from the task (``Task.record`` / ``Task.metrics``); everything else
here is the same for every task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eval import metrics as M
from selfcorrect.stats import ratio
from selfcorrect.tasks.base import Task
from selfcorrect.trace import Round, Trajectory


class _RoundStats:
    """What the task-agnostic metrics of one round need: sums of uncertainty and probe values."""

    def __init__(self) -> None:
        self.n = 0
        self.entropy, self.nll = [0.0, 0], [0.0, 0]
        self.bins = [[0, 0.0, 0] for _ in range(10)]
        self.probe, self.cosine = [0.0, 0], [0.0, 0]

    def add(self, rnd: Round) -> None:
        self.n += 1
        ent, conf = M.option_summary(rnd.option_probs, rnd.answer)
        for value, acc in ((ent, self.entropy), (rnd.probe_score, self.probe), (rnd.probe_cosine, self.cosine)):
            if value is not None:
                acc[0] += value
                acc[1] += 1
        if rnd.mean_logprob is not None:
            self.nll[0] -= rnd.mean_logprob
            self.nll[1] += 1
        if conf is not None:
            b = self.bins[M.ece_bin(conf)]
            b[0], b[1], b[2] = b[0] + 1, b[1] + conf, b[2] + int(rnd.correct)


_TRANSITION_KEYS = ("n", "right_to_right", "wrong_to_right", "right_to_wrong", "wrong_to_wrong", "flips")


def _add_transition(t: dict[str, int], a: Round, b: Round) -> None:
    t["n"] += 1
    t[f"{'right' if a.correct else 'wrong'}_to_{'right' if b.correct else 'wrong'}"] += 1
    t["flips"] += a.answer != b.answer


def compute_metrics(
    rows: Iterable[Trajectory | dict[str, Any]],
    task: Task,
    run_info: dict[str, Any] | None = None,
    epsilon: float = 0.01,
    delta: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """One streaming pass over trajectories (typed or their dicts). Every metric is a function of
    per-round counts and sums; the task's metrics receive one example's trajectories at a time, so
    an example's rows must be consecutive (run_rounds writes them so, sample 0 first) and only the
    example being read is held in memory."""
    k, task_stats, stats, trans, first_last, stable = 0, [], [], [], None, []
    n_traj = n_examples = 0
    chance_sum, chance_n = 0.0, 0  # accuracy of a uniform guess over each item's options
    open_id: str | None = None
    open_records: list[list[dict[str, Any]]] = []

    def close_example() -> None:
        for t, records in enumerate(open_records):
            task_stats[t].add(records)

    for row in rows:
        traj = row if isinstance(row, Trajectory) else Trajectory.from_dict(row)
        if not k:
            k = len(traj.rounds)
            task_stats = [task.metrics() for _ in range(k)]
            stats = [_RoundStats() for _ in range(k)]
            trans = [dict.fromkeys(_TRANSITION_KEYS, 0) for _ in range(k - 1)]
            first_last = dict.fromkeys(_TRANSITION_KEYS, 0)
            stable = [0] * k
        if len(traj.rounds) != k:
            raise ValueError(f"trajectory {traj.id} has {len(traj.rounds)} rounds, earlier ones have {k}")
        if traj.id != open_id:
            if open_id is not None:
                close_example()
            if traj.sample != 0:
                # Its earlier samples were elsewhere in the file (or missing): resampling it as two
                # examples would make its intervals too narrow.
                raise ValueError(
                    f"trajectories of example {traj.id} are not consecutive (a run of its rows starts at "
                    f"sample {traj.sample}): keep each example's samples together, sample 0 first"
                )
            open_id, open_records = traj.id, [[] for _ in range(k)]
            n_examples += 1
        for t, rnd in enumerate(traj.rounds):
            stats[t].add(rnd)
            open_records[t].append(task.record(traj.example, rnd))
            if t:
                _add_transition(trans[t - 1], traj.rounds[t - 1], rnd)
        _add_transition(first_last, traj.rounds[0], traj.rounds[-1])
        for t, flag in enumerate(M.stable_flags([rnd.answer for rnd in traj.rounds])):
            stable[t] += flag
        n_traj += 1
        if traj.example.choices:
            chance_sum += 1 / len(traj.example.choices)
            chance_n += 1
    if not n_traj:
        raise ValueError("no traces to measure")
    close_example()
    acc = [ts.n_correct / ts.n for ts in task_stats]
    per_round, cis = [], []
    for t, (ts, s) in enumerate(zip(task_stats, stats)):
        intervals = ts.intervals(n_boot=n_boot, seed=seed + t)
        entry = {
            "round": t + 1,
            "task": ts.result(),
            "intervals": intervals,
            "uncertainty": M.uncertainty_from_sums(s.entropy[0], s.entropy[1], s.nll[0], s.nll[1], s.bins, s.n),
        }
        if s.probe[1]:
            entry["probe"] = {"mean_score": s.probe[0] / s.probe[1], "mean_cosine": ratio(s.cosine[0], s.cosine[1])}
        cis.append(intervals["accuracy"])
        per_round.append(entry)
    consecutive = {f"{t}->{t + 1}": M.transition_from_counts(c) for t, c in enumerate(trans, start=1)}
    flips = [c["flip_rate"] for c in consecutive.values()]
    breakdown: dict[str, dict[str, list]] = {}
    for t, ts in enumerate(task_stats):
        for name, groups in ts.breakdown().items():
            for group, result in groups.items():
                breakdown.setdefault(name, {}).setdefault(group, [None] * k)[t] = result
    return {
        "run": {
            **(run_info or {}),
            "task": task.name,
            "rounds": k,
            "n_trajectories": n_traj,
            "n_examples": n_examples,
            "report_columns": [list(c) for c in task.report_columns],
            "chance_accuracy": chance_sum / chance_n if chance_n == n_traj else None,
        },
        "headline": {"metric": "accuracy", "values": acc, "ci95": cis},
        "per_round": per_round,
        "breakdown": breakdown,
        "transitions": {
            "consecutive": consecutive,
            "first_to_last": M.transition_from_counts(first_last),
            "delta_from_round1": [a - acc[0] for a in acc],
        },
        "convergence": M.convergence(acc, flips, epsilon, delta),
        "stable_after": [c / n_traj for c in stable],
    }
