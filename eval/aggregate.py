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
  self_correction: the field's metrics (Kumar et al. 2024: Acc@t1, Acc@tK, Delta(t1,tK),
               Delta_i->c, Delta_c->i), flip rates and the edit-distance ratio, under the grader's
               reading and the strict one, each with an item and a group (template) bootstrap interval
  per_round[r]["answers"]: the answer distribution and, for multiple choice, letter/text agreement

The task's own metrics come from the task (``Task.record`` / ``Task.metrics``); everything else
here is the same for every task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from eval import metrics as M
from selfcorrect.stats import bootstrap_ratio_cis, ratio
from selfcorrect.tasks.base import INCONSISTENT, UNPARSED, Task, strict_answer
from selfcorrect.trace import Round, Trajectory


class _RoundStats:
    """What the task-agnostic metrics of one round need: sums of uncertainty and probe values."""

    def __init__(self) -> None:
        # [sum, count] pairs rather than lists of values: the pass streams, so memory stays the same
        # however many trajectories go through, and each count is the denominator of its own mean.
        self.n = 0
        self.entropy, self.nll = [0.0, 0], [0.0, 0]
        # ECE's 10 equal-width bins of the chosen option's probability (Guo et al. 2017, arXiv
        # 1706.04599), each [count, sum of confidence, number correct]: all ECE needs at the end.
        self.bins = [[0, 0.0, 0] for _ in range(10)]
        self.probe, self.cosine = [0.0, 0], [0.0, 0]

    def add(self, rnd: Round) -> None:
        self.n += 1
        # None for an answer whose label token was never generated (option text, unparsed): such a
        # round is left out of entropy and ECE rather than counted as zero, and self.n - count says
        # how many were left out.
        ent, conf = M.option_summary(rnd.option_probs, rnd.answer)
        for value, acc in ((ent, self.entropy), (rnd.probe_score, self.probe), (rnd.probe_cosine, self.cosine)):
            if value is not None:
                acc[0] += value
                acc[1] += 1
        if rnd.mean_logprob is not None:  # under the model's raw logits, not the sampling distribution
            self.nll[0] -= rnd.mean_logprob
            self.nll[1] += 1
        if conf is not None:
            b = self.bins[M.ece_bin(conf)]
            b[0], b[1], b[2] = b[0] + 1, b[1] + conf, b[2] + int(rnd.correct)


class _Readings:
    """Per round, for multiple-choice answers: how they are distributed (each option, unparsed), the
    share naming the item's "unknown" option, and whether letter and option text name the same option."""

    def __init__(self) -> None:
        self.n = 0
        self.answers: dict[str, int] = {}
        self.unknown = self.has_unknown = 0
        self.letter_text = dict.fromkeys(("both", "agree", "letter_only", "text_only", "neither"), 0)
        self.multiple_choice = 0

    def add(self, answer: str, unknown: str | None, readings: tuple[str | None, str | None] | None) -> None:
        self.n += 1
        if readings is not None:  # options only: a maths or toxicity "answer" takes too many values to list
            self.answers[answer] = self.answers.get(answer, 0) + 1
        # The unknown option's share is over the items that have one (BBQ), not over every answer.
        if unknown is not None:
            self.has_unknown += 1
            self.unknown += answer == unknown
        # The grader takes whichever of letter and option text comes first; counting both shows
        # whether a changed letter is a changed answer (docs/metrics.md, "Two readings").
        if readings is not None:
            self.multiple_choice += 1
            letter, text = readings
            key = "both" if letter and text else "letter_only" if letter else "text_only" if text else "neither"
            self.letter_text[key] += 1
            self.letter_text["agree"] += bool(letter and text and letter == text)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unknown": ratio(self.unknown, self.has_unknown)}
        if self.multiple_choice:
            # Options in order, unparsed last. Agreement is over the answers that give both readings;
            # inconsistent is over all, so it is the share the strict reading marks wrong.
            order = sorted(self.answers, key=lambda a: (a == UNPARSED, a))
            out["distribution"] = {a: self.answers[a] / self.multiple_choice for a in order}
            lt = self.letter_text
            out["letter_text"] = {
                **{f"n_{k}": v for k, v in lt.items()},
                "agreement": ratio(lt["agree"], lt["both"]),
                "inconsistent": (lt["both"] - lt["agree"]) / self.multiple_choice,
            }
        return out


# The field's names for the first-to-last comparison (Kumar et al. 2024, arXiv 2409.12917, Tables 1-4,
# with t2 = the last round K): both Delta_i->c and Delta_c->i are fractions of ALL problems, so
# Delta(t1,tK) = Delta_i->c - Delta_c->i (their Table 2, MATH, SCoRe: 5.8 - 1.4 = 4.4).
FIELD_METRICS = ("Acc@t1", "Acc@tK", "Delta(t1,tK)", "Delta_i->c(t1,tK)", "Delta_c->i(t1,tK)")


def _item_values(answers: list[str], correct: list[bool]) -> dict[str, int]:
    """Per trajectory, by name: correct at each round, a flip at each consecutive pair, then the
    field's first-to-last values (``FIELD_METRICS``); a metric is the mean of these over trajectories.

    >>> _item_values(["A", "B"], [False, True])
    {'accuracy 1': 0, 'accuracy 2': 1, 'flip 1->2': 1, 'Acc@t1': 0, 'Acc@tK': 1, 'Delta(t1,tK)': 1, 'Delta_i->c(t1,tK)': 1, 'Delta_c->i(t1,tK)': 0}
    """
    # Integers, so every metric is a sum over a count: one bootstrap draw (bootstrap_ratio_cis) then
    # gives every metric its interval at once. last - first is -1, 0 or 1, so Delta is a mean.
    k = len(answers)
    first, last = int(correct[0]), int(correct[-1])
    field_values = (first, last, last - first, int(not first and last), int(first and not last))
    return {
        **{f"accuracy {t + 1}": int(c) for t, c in enumerate(correct)},
        **{f"flip {t + 1}->{t + 2}": int(answers[t] != answers[t + 1]) for t in range(k - 1)},
        **dict(zip(FIELD_METRICS, field_values)),
    }


def generated_tokens(traj: Trajectory) -> int | None:
    """Tokens the model generated for a trajectory: every round that ran (carried rounds generated
    none); None when a round does not record its count (predictions scored from outside)."""
    counts = [r.new_tokens for r in traj.rounds[: traj.rounds_run()]]
    return None if any(c is None for c in counts) else sum(counts)


def item_outcome(traj: Trajectory, task: Task, strict: list[str]) -> dict[str, Any]:
    """One example's outcome per round under both readings (``strict``: its strict answers), with what
    a paired comparison and the trivial baselines need: its group, gold answer, unknown option and
    number of options; and what a comparison of compute needs: its stop round (None: it ran every
    round), the rounds it ran and the tokens it generated."""
    return {
        "id": traj.id,
        "group": task.group(traj.example),
        "gold": traj.example.gold,
        "unknown": task.unknown_answer(traj.example),
        "n_choices": len(traj.example.choices) if traj.example.choices else None,
        "answers": [r.answer for r in traj.rounds],
        "correct": [bool(r.correct) for r in traj.rounds],
        "strict": strict,
        "stop_round": traj.stop_round,
        "rounds_run": traj.rounds_run(),
        "tokens": generated_tokens(traj),
    }


READINGS = ("grader", "strict")


class _SelfCorrection:
    """The field's metrics, flip rates and the edit-distance ratio under the grader's reading and the
    strict one, with intervals that resample items and that resample the task's groups. Holds counts
    of kinds of item and one vector of sums per group (memory grows with the groups, not the items).
    The vector's entries are named (``names``: (reading, metric)); a metric is read back by name."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.names: list[tuple[str, str]] = []
        self.items: dict[tuple[tuple[int, ...], int], int] = {}
        self.groups: dict[str, list] = {}
        self.edit = [[0.0, 0] for _ in range(k - 1)]
        self.open: tuple[list[int], int] | None = None

    def add(self, traj: Trajectory, task: Task, strict: list[str]) -> None:
        answers = [r.answer for r in traj.rounds]
        # Both readings: the grader's, and the strict one (an inconsistent answer is never right and is
        # an answer of its own in flips).
        named = {
            **{("grader", n): v for n, v in _item_values(answers, [r.correct for r in traj.rounds]).items()},
            **{
                ("strict", n): v
                for n, v in _item_values(strict, [r.correct and s != INCONSISTENT for r, s in zip(traj.rounds, strict)]).items()
            },
        }
        if not self.names:
            self.names = list(named)
        values = [named[n] for n in self.names]
        # Cluster bootstrap over groups: items of one template share wording, people and answer, so
        # they are not independent evidence; resampling whole templates keeps that in the interval
        # (docs/metrics.md, "Intervals over groups").
        g = self.groups.setdefault(task.group(traj.example), [[0] * len(values), 0])
        g[0] = [a + b for a, b in zip(g[0], values)]
        g[1] += 1
        # The item unit is an example with all its samples: samples of one example are correlated,
        # and resampling them one by one made the intervals too narrow (docs/metrics.md, "Intervals").
        if self.open is None:
            self.open = (values, 1)
        else:
            self.open = ([a + b for a, b in zip(self.open[0], values)], self.open[1] + 1)
        # Kumar et al.'s check for collapse to "no edit" between attempts: a mean, with no interval.
        for t in range(self.k - 1):
            self.edit[t][0] += M.edit_distance_ratio(traj.rounds[t].response, traj.rounds[t + 1].response)
            self.edit[t][1] += 1

    def close_example(self) -> None:
        if self.open is not None:
            # Examples with equal sums and sample count are one kind with a count: the bootstrap draws
            # kinds by one multinomial, so memory grows with the kinds, not with the items.
            key = (tuple(self.open[0]), self.open[1])
            self.items[key] = self.items.get(key, 0) + 1
            self.open = None

    def result(self, n_boot: int, seed: int) -> dict[str, Any]:
        # Groups collapse into kinds the same way, for the same exact draw.
        by_group: dict[tuple[tuple[int, ...], int], int] = {}
        for sums, n in self.groups.values():
            key = (tuple(sums), n)
            by_group[key] = by_group.get(key, 0) + 1
        n_traj = sum(n * m for (_, n), m in self.items.items())
        totals = [sum(v[j] * m for (v, _), m in self.items.items()) for j in range(len(self.names))]
        ci_item = bootstrap_ratio_cis(self.items, n_boot, seed)
        ci_group = bootstrap_ratio_cis(by_group, n_boot, seed)
        index = {name: j for j, name in enumerate(self.names)}
        k = self.k

        def cell(reading: str, name: str) -> dict[str, Any]:
            j = index[(reading, name)]
            return {"value": totals[j] / n_traj, "ci95_item": ci_item[j], "ci95_group": ci_group[j]}

        def reading(r: str) -> dict[str, Any]:
            return {
                "accuracy": [cell(r, f"accuracy {t + 1}") for t in range(k)],
                "flip_rate": {f"{t + 1}->{t + 2}": cell(r, f"flip {t + 1}->{t + 2}") for t in range(k - 1)},
                **{name: cell(r, name) for name in FIELD_METRICS},
            }

        return {
            "n_groups": len(self.groups),
            **{r: reading(r) for r in READINGS},
            "edit_distance_ratio": {f"{t + 1}->{t + 2}": ratio(s, n) for t, (s, n) in enumerate(self.edit)},
        }


class _Stopping:
    """Compute per trajectory (docs/metrics.md, "Stopping"): rounds run, tokens generated, the answer
    where it stopped, the round it stopped at. A run without a stopping rule runs K rounds for every
    trajectory, so its numbers are the fixed-K cost a stopped run is compared with."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.n = self.rounds = self.right_at_stop = self.carried = 0
        self.tokens = [0, 0]  # sum, trajectories that record their counts
        self.stopped_at = [0] * k

    def add(self, traj: Trajectory) -> None:
        ran = traj.rounds_run()
        self.n += 1
        self.rounds += ran
        self.carried += len(traj.rounds) - ran
        self.right_at_stop += bool(traj.rounds[ran - 1].correct)
        if (tokens := generated_tokens(traj)) is not None:
            self.tokens[0] += tokens
            self.tokens[1] += 1
        if traj.stop_round is not None:
            self.stopped_at[traj.stop_round - 1] += 1

    def result(self) -> dict[str, Any]:
        by_round, total = [], 0
        for c in self.stopped_at:
            total += c
            by_round.append(total / self.n)
        return {
            "mean_rounds": self.rounds / self.n,
            "mean_tokens": ratio(self.tokens[0], self.tokens[1]),
            "accuracy_at_stop": self.right_at_stop / self.n,
            "stopped_by_round": by_round,
            "n_stopped": total,
            "carried_round_share": self.carried / (self.n * self.k),
            "note": "rounds after a trajectory's stop carry its last answer (marked carried in the traces): "
            "the per-round and fixed-K metrics read them as that answer",
        }


def _add_transition(t: dict[str, int], a: Round, b: Round) -> None:
    M.count_transition(t, a.correct, b.correct, a.answer != b.answer)


class _Metrics:
    """Every sum of one streaming pass over the trajectories of a run with K rounds, each in a named
    field; ``add`` takes a trajectory, ``result`` gives metrics.json. A new metric is a field, a line
    in ``add`` and a line in ``result``."""

    def __init__(self, k: int, task: Task) -> None:
        self.k, self.task = k, task
        self.task_stats = [task.metrics() for _ in range(k)]  # the task's own metrics per round
        self.rounds = [_RoundStats() for _ in range(k)]  # uncertainty and probe sums per round
        self.readings = [_Readings() for _ in range(k)]  # answer distribution per round
        self.transitions = [dict.fromkeys(M.TRANSITION_KEYS, 0) for _ in range(k - 1)]  # round t -> t+1
        self.first_last = dict.fromkeys(M.TRANSITION_KEYS, 0)  # round 1 -> K
        self.stable = [0] * k  # trajectories whose answer never changes after round t
        self.self_correction = _SelfCorrection(k)
        self.stopping = _Stopping(k)
        self.n_traj = self.n_examples = 0
        self.chance = [0.0, 0]  # sum of 1/options, trajectories with options
        # The task's metrics take an example's records together (samples of one example are one unit
        # of its intervals), so records wait here until the next example's first row arrives.
        self.open_id: str | None = None
        self.open_records: list[list[dict[str, Any]]] = []

    def add(self, traj: Trajectory, on_item: Callable[[dict[str, Any]], None] | None) -> None:
        k, task = self.k, self.task
        if len(traj.rounds) != k:
            raise ValueError(f"trajectory {traj.id} has {len(traj.rounds)} rounds, earlier ones have {k}")
        if traj.id != self.open_id:
            if self.open_id is not None:
                self.close_example()
            if traj.sample != 0:
                # Its earlier samples were elsewhere in the file (or missing): resampling it as two
                # examples would make its intervals too narrow.
                raise ValueError(
                    f"trajectories of example {traj.id} are not consecutive (a run of its rows starts at "
                    f"sample {traj.sample}): keep each example's samples together, sample 0 first"
                )
            self.open_id, self.open_records = traj.id, [[] for _ in range(k)]
            self.n_examples += 1
        # Both readings of each round: the strict answer marks a letter and a text that disagree.
        letter_text = [task.readings(traj.example, rnd.response) for rnd in traj.rounds]
        strict = [strict_answer(rnd.answer, lt) for rnd, lt in zip(traj.rounds, letter_text)]
        self.self_correction.add(traj, task, strict)
        self.stopping.add(traj)
        # One outcome per example (sample 0): eval.compare pairs two runs item by item.
        if on_item is not None and traj.sample == 0:
            on_item(item_outcome(traj, task, strict))
        unknown = task.unknown_answer(traj.example)
        for t, rnd in enumerate(traj.rounds):
            self.readings[t].add(rnd.answer, unknown, letter_text[t])
            self.rounds[t].add(rnd)
            self.open_records[t].append(task.record(traj.example, rnd))
            if t:
                _add_transition(self.transitions[t - 1], traj.rounds[t - 1], rnd)
        # Consecutive pairs give CL, CS and RSS per step (Yang et al. 2024, arXiv 2412.19513); round 1
        # -> K is the field's t1 -> tK comparison.
        _add_transition(self.first_last, traj.rounds[0], traj.rounds[-1])
        for t, flag in enumerate(M.stable_flags([rnd.answer for rnd in traj.rounds])):
            self.stable[t] += flag
        self.n_traj += 1
        if traj.example.choices:
            self.chance[0] += 1 / len(traj.example.choices)
            self.chance[1] += 1

    def close_example(self) -> None:
        for t, records in enumerate(self.open_records):
            self.task_stats[t].add(records)
        self.self_correction.close_example()

    def result(self, run_info: dict[str, Any] | None, epsilon: float, delta: float, n_boot: int, seed: int) -> dict[str, Any]:
        k, task = self.k, self.task
        acc = [ts.n_correct / ts.n for ts in self.task_stats]
        per_round, cis = [], []
        for t, (ts, s) in enumerate(zip(self.task_stats, self.rounds)):
            intervals = ts.intervals(n_boot=n_boot, seed=seed + t)
            entry = {
                "round": t + 1,
                "task": ts.result(),
                "intervals": intervals,
                "uncertainty": M.uncertainty_from_sums(s.entropy[0], s.entropy[1], s.nll[0], s.nll[1], s.bins, s.n),
                "answers": self.readings[t].result(),
            }
            if s.probe[1]:
                entry["probe"] = {"mean_score": s.probe[0] / s.probe[1], "mean_cosine": ratio(s.cosine[0], s.cosine[1])}
            cis.append(intervals["accuracy"])
            per_round.append(entry)
        # The convergence round needs both: accuracy within epsilon of its final value and every later
        # flip rate at most delta; it measures stability, not improvement (docs/metrics.md, "Transitions").
        consecutive = {f"{t}->{t + 1}": M.transition_from_counts(c) for t, c in enumerate(self.transitions, start=1)}
        flips = [c["flip_rate"] for c in consecutive.values()]
        # The task gives its breakdown per round; turned into subgroup -> [per round] so a row reads across rounds.
        breakdown: dict[str, dict[str, list]] = {}
        for t, ts in enumerate(self.task_stats):
            for name, groups in ts.breakdown().items():
                for group, result in groups.items():
                    breakdown.setdefault(name, {}).setdefault(group, [None] * k)[t] = result
        return {
            "run": {
                **(run_info or {}),
                "task": task.name,
                "rounds": k,
                "n_trajectories": self.n_traj,
                "n_examples": self.n_examples,
                "report_columns": [list(c) for c in task.report_columns],
                # Only when every trajectory has options: a mean of 1/options over part of the rows is
                # no baseline for the whole run.
                "chance_accuracy": self.chance[0] / self.chance[1] if self.chance[1] == self.n_traj else None,
            },
            "headline": {"metric": "accuracy", "values": acc, "ci95": cis},
            "per_round": per_round,
            "breakdown": breakdown,
            "transitions": {
                "consecutive": consecutive,
                "first_to_last": M.transition_from_counts(self.first_last),
                "delta_from_round1": [a - acc[0] for a in acc],
            },
            "convergence": M.convergence(acc, flips, epsilon, delta),
            "stable_after": [c / self.n_traj for c in self.stable],
            "self_correction": {
                "reading": "grader",
                "group": "the task's group (Task.group; BBQ: the template)",
                **self.self_correction.result(n_boot, seed),
            },
            "stopping": self.stopping.result(),
        }


def compute_metrics(
    rows: Iterable[Trajectory | dict[str, Any]],
    task: Task,
    run_info: dict[str, Any] | None = None,
    epsilon: float = 0.01,
    delta: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    on_item: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One streaming pass over trajectories (typed or their dicts). Every metric is a function of
    per-round counts and sums (``_Metrics``); the task's metrics receive one example's trajectories at
    a time, so an example's rows must be consecutive (run_rounds writes them so, sample 0 first) and
    only the example being read is held in memory. ``on_item`` receives each example's first
    trajectory as ``item_outcome`` gives it (eval writes them to items.jsonl for eval.compare's
    paired tests)."""
    acc: _Metrics | None = None
    for row in rows:
        traj = row if isinstance(row, Trajectory) else Trajectory.from_dict(row)
        # K is known only once the first trajectory is read: every per-round sum is sized then.
        if acc is None:
            acc = _Metrics(len(traj.rounds), task)
        acc.add(traj, on_item)
    if acc is None:
        raise ValueError("no traces to measure")
    acc.close_example()  # the last example has no next id to close it
    return acc.result(run_info, epsilon, delta, n_boot, seed)
