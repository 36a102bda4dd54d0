"""What every task provides, and the multiple-choice answer parser most tasks share.

A task owns everything about itself: loading its data, the first turn, grading a response, the
unit a held-out split keeps whole, and its metrics (what one answer contributes, how a round's
answers add up, which columns reports show, the statements eval's concept probe is fitted on).
Grading and metrics are pure Python (strings in, numbers out), never import torch and never raise
on odd model output: anything a grader cannot read is the answer "unparsed", graded as wrong.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from selfcorrect.errors import UserError
from selfcorrect.stats import bootstrap_cluster_share_ci, ratio

UNPARSED = "unparsed"
# The strict reading's answer for a response whose letter names one option and whose text another
# (" A. The grandson" where A is the grandfather): neither is taken, and it is never right.
INCONSISTENT = "inconsistent"
LETTERS = "ABCDEFGHIJ"


@dataclass
class Example:
    """One item of a task. ``fields`` holds whatever the scorer and the metrics need."""

    id: str
    question: str  # the first user turn, before any prompt-set instruction
    gold: str  # option letter for multiple choice, else the normalised reference answer
    choices: list[str] | None = None  # option texts, labelled A, B, C, ... in the prompt
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        return cls(**{k: d[k] for k in ("id", "question", "gold", "choices", "fields") if k in d})


@dataclass
class Grade:
    """Grade of one response. ``reward`` is the task's scalar reward in [0, 1] (RL uses it)."""

    answer: str  # the parsed answer, or "unparsed"
    correct: bool
    reward: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TaskMetrics:
    """A task's metrics at one round, folded in one example at a time.

    ``add`` takes the records (``Task.record``) of one example's trajectories at this round; they are
    kept as counts of kinds of example, so memory does not grow with the number of examples.
    Intervals resample examples with all their trajectories (a cluster bootstrap: the samples of
    one example are correlated). This base reports accuracy; tasks extend it with their own.
    """

    def __init__(self) -> None:
        self.n = self.n_correct = 0
        self.clusters: dict[tuple[int, int], int] = defaultdict(int)  # (trajectories, correct) -> examples

    def add(self, records: list[dict[str, Any]]) -> None:
        k = sum(bool(r["correct"]) for r in records)
        self.n += len(records)
        self.n_correct += k
        self.clusters[(len(records), k)] += 1

    def result(self) -> dict[str, Any]:
        return {"accuracy": ratio(self.n_correct, self.n), "n": self.n}

    def intervals(self, n_boot: int = 1000, seed: int = 0) -> dict[str, list[float] | None]:
        """95% percentile bootstrap intervals of the metrics that have one."""
        return {"accuracy": bootstrap_cluster_share_ci(self.clusters, n_boot=n_boot, seed=seed)}

    def breakdown(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Results per subgroup, e.g. {"by_category": {"Age": {...}}}; none by default."""
        return {}


def check_text_fields(row: dict[str, Any], keys: Any, where: str) -> None:
    """Fields that are rendered into a prompt must be text: None, a number or a list would reach the
    model as "None", "12345" or "['a', 'b']". One line naming the file, line and field."""
    for key in keys:
        value = row.get(key)
        if not isinstance(value, str):
            kind = "missing" if key not in row else f"{type(value).__name__.replace('NoneType', 'null')} {value!r:.60}"
            raise UserError(f"{where}: field '{key}' must be text (got {kind})")


class Task:
    """Base class. Subclasses set ``name`` and implement ``load`` and ``grade``."""

    name = "task"
    hub_id: str | None = None  # the community's dataset id, used when online and no path is given
    multiple_choice = False  # answers are option letters (prompt sets that name answer choices need it)
    discrete_answers = True  # a Grade's answer is a choice or a value that two rounds can share (not a score)
    # Metrics (keys of TaskMetrics.result) that reports and eval.compare show beside accuracy, with
    # their column titles; each has an interval in TaskMetrics.intervals.
    report_columns: tuple[tuple[str, str], ...] = ()

    def load(self, dataset_path: str | None, split: str = "test") -> Iterator[Example]:
        raise NotImplementedError

    def reads_split(self, dataset_path: str | None) -> bool:
        """Whether ``load`` reads the split it is given from this data (most tasks' data is one set,
        and ``--split`` would be ignored, so a value other than the default is refused)."""
        return False

    def settings(self) -> dict[str, Any]:
        """What besides ``name`` changes this task's grades (a classifier, a threshold, a spec); part
        of a trace run's identity, so a re-run with another grader does not resume into old grades."""
        return {}

    def grade(self, example: Example, response: str) -> Grade:
        raise NotImplementedError

    def grade_batch(self, examples: list[Example], responses: list[str]) -> list[Grade]:
        """Batched scoring; model-based scorers (toxicity) override this."""
        return [self.grade(e, r) for e, r in zip(examples, responses)]

    def group(self, example: Example) -> str:
        """The unit a held-out split must keep whole. Items that share it share wording, people or an
        answer, so putting some in training and others in evaluation leaks. Here each example stands
        alone; tasks built from templates override this."""
        return example.id

    def answer_label_span(self, example: Example, response: str) -> tuple[int, int] | None:
        """Where the parsed answer's option label stands in ``response`` (characters): the rollout
        reads the option probabilities at the label token generated there, or records none for
        None. This default is the whole response (the first label token of the answer); multiple
        choice tasks say exactly where, and None for an answer given as option text."""
        return (0, len(response))

    def option_labels(self, example: Example) -> list[str] | None:
        """Labels whose next-token probabilities the rollout records (multiple choice only)."""
        return list(LETTERS[: len(example.choices)]) if example.choices else None

    def gold_response(self, example: Example) -> str:
        """A response that states the gold answer (for rationalised corrections)."""
        if example.choices:
            i = LETTERS.index(example.gold)
            return f" {example.gold}. {example.choices[i]}"
        return f" The answer is {example.gold}."

    def record(self, example: Example, rnd: Any) -> dict[str, Any]:
        """What one answer (a ``selfcorrect.trace.Round``) contributes to this task's metrics: a few
        fields, never the text."""
        return {"correct": bool(rnd.correct)}

    def metrics(self) -> TaskMetrics:
        """A fresh accumulator for one round."""
        return TaskMetrics()

    def probe_statements(self, examples: list[Example]) -> list[list[tuple[str, int]]] | None:
        """Statements labelled 0/1 that eval's concept probe can be fitted on, in groups that must
        stay on one side of the probe's train/held-out split; None when the task has none."""
        return None

    def readings(self, example: Example, response: str) -> tuple[str | None, str | None] | None:
        """(option named by letter, option named by text) of a response, each None when absent; None
        for a task whose answers are not options (eval's letter/text agreement skips it)."""
        return None

    def unknown_answer(self, example: Example) -> str | None:
        """The option meaning "cannot be determined", when the task has one (BBQ); reports show its share."""
        return None

    def feedback(self, example: Example, previous: Any) -> str:
        """The verdict the external-feedback prompt set shows the model about its ``previous``
        round (a ``selfcorrect.trace.Round``: ``correct``, ``answer`` and the ``grade`` fields)."""
        return "Your previous answer is correct." if previous.correct else "Your previous answer is incorrect."


def format_choices(question: str, choices: list[str]) -> str:
    lines = [question, ""] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def _fold(text: str) -> str:
    """Compatibility forms folded (NFKC), lowercase, curly quotes and backticks made straight."""
    text = unicodedata.normalize("NFKC", text).lower()
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")


def normalise(text: str) -> str:
    """Lowercase, straight quotes, punctuation to spaces, single spaces.

    >>> normalise("The  Grandson\u2019s (maybe)!")
    "the grandson's maybe"
    """
    text = re.sub(r"[^\w' ]+", " ", _fold(text))
    return re.sub(r"\s+", " ", text).strip()


def _letter_patterns(n: int) -> re.Pattern[str]:
    upper = LETTERS[:n]
    lower = upper.lower()
    # "(A)", "(a)", "A.", "A)", "A:", "A" at the end, "option A", "answer is A"; a bare capital that
    # begins a sentence ("A man ...") is not a choice, so a bare letter must be followed by
    # punctuation or the end of the text.
    return re.compile(
        rf"\(([{upper}{lower}])\)"
        rf"|(?<![A-Za-z])([{upper}])(?:[.):,]|\s*$|\s+-|\n)"
        rf"|(?i:option|answer|choice)(?: is)?[: ]+([{upper}])\b"
    )


_PATTERN_CACHE: dict[int, re.Pattern[str]] = {}

# Words as ``normalise`` splits them, plus the punctuation that ends a clause: a negation reaches no
# further than its clause ("I'm not sure, but the grandfather" keeps the grandfather).
_TOKEN = re.compile(r"[\w']+|[.,;:!?\n]")
_ARTICLES = r"(?: (?:the|a|an|option|choice|answer))*"
# "not X", "it's not X", "it can't be X", "neither X nor Y", "rather than X", "instead of X": rejected.
_NEG_BEFORE = re.compile(
    r"(?:^| )(?:not|never|neither|nor|rather than|instead of|other than|except|except for|isn't|wasn't|aren't"
    r"|weren't|(?:cannot|can't|couldn't|wouldn't) be)" + _ARTICLES + "$"
)
# "X is not the one", "X isn't the answer", "X is wrong": a rejection whatever the question was.
_NEG_AFTER_IDENTITY = re.compile(
    r"^(?:(?:is|was|are|were)(?: also)? (?:not|never)|isn't|wasn't|aren't|weren't)"
    r" (?:the |a )?(?:one|answer|correct|right|person|culprit|option|choice|it|to blame)\b"
    r"|^(?:is|was|are|were)(?: also)? (?:incorrect|wrong)\b"
)
# "X was not ...", "X didn't ...": rejects X, unless the question itself is negated ("Who did not ...?"),
# when the same words echo the question and name X as the answer.
_NEG_AFTER_PREDICATE = re.compile(
    r"^(?:(?:is|was|are|were|do|does|did|would|could|should|will|can|has|have|had)(?: also)? (?:not|never)"
    r"|never|cannot|(?:is|was|are|were|do|does|did|would|could|should|wo|ca|has|have|had)n't)\b"
)
_NEGATED_QUESTION = re.compile(r"\b(?:not|never|no one|nobody)\b|n't\b")


def _words(text: str) -> tuple[list[str], list[int]]:
    """The words of ``text`` as ``normalise`` gives them, and the clause each belongs to."""
    text = _fold(text)
    words: list[str] = []
    clauses: list[int] = []
    clause = 0
    for tok in _TOKEN.findall(text):
        if tok[0] in ".,;:!?\n":
            clause += 1
        elif tok := tok.strip("'"):  # a quote mark around a word is not part of it
            words.append(tok)
            clauses.append(clause)
    return words, clauses


def _phrase_words(phrase: str) -> tuple[str, ...]:
    return tuple(w.strip("'") for w in normalise(phrase).split() if w.strip("'"))


def choice_mentions(
    response: str,
    choices: list[str],
    synonyms: dict[int, list[str]] | None = None,
    max_chars: int = 4000,
    question: str | None = None,
) -> tuple[tuple[int, int, tuple[int, int]] | None, tuple[int, int] | None]:
    """The first option a response names by letter and the first it names by text, read apart.

    Returns ((word position, option index, character span of the letter) | None, (word position,
    option index) | None). A letter is "B", "(b)", "B.", "option B"; a text mention is an option's
    text or one of the ``synonyms`` of an option (BBQ's list of ways to say "unknown"). A mention
    that rejects the option ("not the grandfather", "the grandfather is not the one", "it isn't B",
    "rather than ...") does not count; "X was not ..." / "X didn't ..." counts as a rejection unless
    ``question`` is itself negated, when it echoes the question. Only the first ``max_chars``
    characters are read, so a runaway generation costs nothing.

    >>> choice_mentions(" A. The grandson", ["The grandfather", "The grandson", "Unknown"])
    ((0, 0, (1, 2)), (1, 1))
    """
    if not isinstance(response, str) or not response or not choices:
        return None, None
    text = response[:max_chars]
    n = min(len(choices), len(LETTERS))
    pat = _PATTERN_CACHE.setdefault(n, _letter_patterns(n))
    words, clauses = _words(text)
    echo = question is not None and _NEGATED_QUESTION.search(question.lower()) is not None

    def rejected(start: int, end: int) -> bool:
        before = " ".join(
            w for w, c in zip(words[max(0, start - 6) : start], clauses[max(0, start - 6) : start]) if c == clauses[start]
        )
        if _NEG_BEFORE.search(before):
            return True
        after = " ".join(w for w, c in zip(words[end : end + 6], clauses[end : end + 6]) if c == clauses[end - 1])
        return bool(_NEG_AFTER_IDENTITY.search(after) or (not echo and _NEG_AFTER_PREDICATE.search(after)))

    letter = None
    for m in pat.finditer(text):
        g = next(k for k in range(1, 4) if m.group(k))
        pos = len(_words(text[: m.start(g)])[0])
        if pos < len(words) and not rejected(pos, pos + 1):
            letter = (pos, LETTERS.index(m.group(g).upper()), (m.start(g), m.end(g)))
            break
    candidates: list[tuple[tuple[str, ...], int, int]] = []
    for i, c in enumerate(choices[:n]):
        p = _phrase_words(str(c))
        if p:
            candidates.append((p, len(" ".join(p)), i))
            if p[0] == "the" and len(p) > 1:
                candidates.append((p[1:], len(" ".join(p[1:])), i))
    for i, phrases in (synonyms or {}).items():
        candidates += [(p, len(" ".join(p)), i) for w in phrases if (p := _phrase_words(w))]
    starts: dict[str, list[int]] = {}
    for k, w in enumerate(words):
        starts.setdefault(w, []).append(k)
    found = sorted(
        (k, -len(p), -length, i) for p, length, i in candidates for k in starts.get(p[0], []) if tuple(words[k : k + len(p)]) == p
    )
    # Longest match first, and a match inside a longer one is part of it: "not enough info" within a
    # rejected "not enough information to tell" is not a mention of its own.
    covered, named = 0, None
    for k, neg_words, _, i in found:
        if k < covered:
            continue
        covered = k - neg_words
        if not rejected(k, covered):
            named = (k, i)
            break
    return letter, named


def parse_choice_at(
    response: str,
    choices: list[str],
    synonyms: dict[int, list[str]] | None = None,
    max_chars: int = 4000,
    question: str | None = None,
) -> tuple[int, tuple[int, int] | None] | None:
    """(index of the option a free-text response chooses, character span of its label), or None.

    The span is where the chosen option's letter stands in ``response`` ("B" in "The answer is B"),
    None when the option was named by its text: option probabilities are read at that letter's
    token, and an answer given as text has none.

    The earliest mention wins (``choice_mentions``), a letter before a text mention at the same word.
    A response that only rejects is None: we do not guess which of the rest it meant.

    >>> parse_choice_at("A man's answer: B. The grandson", ["The grandfather", "The grandson", "Unknown"])
    (1, (16, 17))
    >>> parse_choice_at("I think it's the grandfather.", ["The grandfather", "The grandson", "Unknown"])
    (0, None)
    >>> parse_choice_at("The grandfather is not the one; it is unknown.", ["The grandfather", "The grandson", "Unknown"])
    (2, None)
    >>> parse_choice_at("A man walked in.", ["x", "y"]) is None
    True
    """
    letter, named = choice_mentions(response, choices, synonyms, max_chars, question)
    if letter is not None and (named is None or letter[0] <= named[0]):
        return letter[1], letter[2]
    return None if named is None else (named[1], None)


def parse_choice(
    response: str,
    choices: list[str],
    synonyms: dict[int, list[str]] | None = None,
    max_chars: int = 4000,
    question: str | None = None,
) -> int | None:
    """Index of the option a free-text response chooses, or None (see ``parse_choice_at``).

    >>> parse_choice("B. The grandson", ["The grandfather", "The grandson", "Unknown"])
    1
    """
    found = parse_choice_at(response, choices, synonyms, max_chars, question)
    return None if found is None else found[0]


class MultipleChoiceTask(Task):
    """A task whose gold is an option letter; subclasses may add synonyms per example."""

    multiple_choice = True

    def synonyms(self, example: Example) -> dict[int, list[str]]:
        return {}

    def question_for_parsing(self, example: Example) -> str | None:
        """The question, for tasks whose answers may echo a negated question (see parse_choice)."""
        return None

    def parse(self, example: Example, response: str) -> str:
        idx = parse_choice(response, example.choices or [], self.synonyms(example), question=self.question_for_parsing(example))
        return UNPARSED if idx is None else LETTERS[idx]

    def answer_label_span(self, example: Example, response: str) -> tuple[int, int] | None:
        """Where the parsed answer's option letter stands in ``response``; None when the answer was
        given as option text (or not given)."""
        found = parse_choice_at(
            response, example.choices or [], self.synonyms(example), question=self.question_for_parsing(example)
        )
        return None if found is None else found[1]

    def readings(self, example: Example, response: str) -> tuple[str | None, str | None] | None:
        if not example.choices:
            return None
        letter, named = choice_mentions(
            response, example.choices or [], self.synonyms(example), question=self.question_for_parsing(example)
        )
        return (None if letter is None else LETTERS[letter[1]]), (None if named is None else LETTERS[named[1]])

    def grade(self, example: Example, response: str) -> Grade:
        answer = self.parse(example, response)
        correct = answer == example.gold
        return Grade(answer=answer, correct=correct, reward=float(correct))


def strict_answer(answer: str, readings: tuple[str | None, str | None] | None) -> str:
    """The strict reading of a graded answer: INCONSISTENT when its letter and its option text name
    different options, else the answer the grader read.

    >>> strict_answer("A", ("A", "B")), strict_answer("A", ("A", None)), strict_answer("B", ("B", "B"))
    ('inconsistent', 'A', 'B')
    """
    if readings and readings[0] is not None and readings[1] is not None and readings[0] != readings[1]:
        return INCONSISTENT
    return answer
