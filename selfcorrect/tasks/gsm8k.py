"""GSM8K grade-school maths (Cobbe et al. 2021, arXiv 2110.14168).

References end in ``#### <number>``. A model's answer is read tolerantly: an explicit ``####``
marker, then "answer is ...", then ``\\boxed{...}``, else the last number in the text. After a marker
the answer is the number that ends the stated result: in "The answer is 5 + 3 = 8 apples" it is 8, in
"The answer is 18, which is 9 * 2" it is 18. A comma groups thousands only before exactly three
digits ("1,000,000"); "12,15" is two numbers. Numbers are compared as values, so "1,000", "$1000.00"
and "1000" agree.

Data: the release's ``test.jsonl`` / ``train.jsonl`` (question, answer); when no path is given and the
hub is reachable, ``openai/gsm8k`` (config "main").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from fractions import Fraction

from selfcorrect.errors import UserError
from selfcorrect.hub import load_hub_rows
from selfcorrect.jsonl import read_rows
from selfcorrect.tasks.base import UNPARSED, Example, Grade, Task, check_text_fields

_NUM = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?"
# A number and the arithmetic that continues it ("9 * 2 = $18"); the last number it reaches is the
# result, and the repeated group keeps exactly that one.
_CHAIN = re.compile(rf"({_NUM})(?:\s*(?:[-+*/x\u00d7\u00f7=]|\\times|\\cdot)\s*({_NUM}))*")
# Where a stated answer ends: a sentence end (a period not inside a number), a new line, a closing brace.
_MARKERS = (
    (re.compile(r"####"), re.compile(r"\n")),
    (re.compile(r"answer is", re.IGNORECASE), re.compile(r"\.(?!\d)|[!?\n]")),
    (re.compile(r"\\boxed\{"), re.compile(r"\}")),
)


def to_number(text: str) -> Fraction | None:
    """'1,234.50' -> 1234.5, '$18' -> 18, '3/4' -> 0.75; None if it is not a number."""
    t = text.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        if "/" in t:
            a, b = t.split("/", 1)
            return Fraction(a) / Fraction(b) if Fraction(b) != 0 else None
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def format_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else str(float(x))


def extract_reference(answer: str) -> str:
    """The number after '#### ' in a GSM8K reference solution, normalised."""
    m = re.search(r"####\s*(" + _NUM + ")", answer)
    if not m or (x := to_number(m.group(1))) is None:
        raise ValueError("reference has no '#### <number>'")
    return format_number(x)


def extract_answer(response: str, max_chars: int = 20000) -> str:
    """The model's final number, normalised, or "unparsed".

    >>> extract_answer("16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is $18.")
    '18'
    >>> extract_answer("#### 1,000")
    '1000'
    >>> extract_answer("The answer is 5 + 3 = 8")
    '8'
    """
    if not isinstance(response, str):
        return UNPARSED
    text = response[-max_chars:]
    for marker, end in _MARKERS:
        for m in reversed(list(marker.finditer(text))):  # the last statement that holds a number
            rest = text[m.end() :]
            stop = end.search(rest)
            chain = _CHAIN.search(rest[: stop.start() if stop else len(rest)])
            if chain and (x := to_number(chain.group(2) or chain.group(1))) is not None:
                return format_number(x)
    for cand in reversed(re.findall(_NUM, text)):
        if (x := to_number(cand)) is not None:
            return format_number(x)
    return UNPARSED


class GSM8KTask(Task):
    name = "gsm8k"
    hub_id = "openai/gsm8k"

    def load(self, dataset_path: str | None, split: str = "test") -> Iterator[Example]:
        if dataset_path is None:
            rows = ((f"{self.hub_id}[{i}]", r) for i, r in enumerate(load_hub_rows(self.hub_id, split, "main")))
        else:
            path = os.path.join(dataset_path, f"{split}.jsonl") if os.path.isdir(dataset_path) else dataset_path
            rows = ((f"{path}:{i}", r) for i, r in enumerate(read_rows(path), 1))
        for i, (where, row) in enumerate(rows):
            if "question" not in row or "answer" not in row:
                raise UserError(f"{where}: GSM8K row needs 'question' and 'answer'")
            check_text_fields(row, ("question", "answer"), where)  # the answer is text ending in "#### <number>"
            try:
                gold = extract_reference(row["answer"])
            except ValueError as e:
                raise UserError(f"{where}: {e}") from None
            steps = re.sub(r"<<[^>]*>>", "", row["answer"].split("####")[0]).strip()  # drop calculator annotations
            yield Example(id=str(row.get("id", f"{split}/{i}")), question=row["question"], gold=gold, fields={"solution": steps})

    def reads_split(self, dataset_path: str | None) -> bool:
        return dataset_path is None or os.path.isdir(dataset_path)  # <split>.jsonl in a folder, or the hub's

    def grade(self, example: Example, response: str) -> Grade:
        answer = extract_answer(response)
        correct = answer != UNPARSED and to_number(answer) == to_number(example.gold)
        return Grade(answer=answer, correct=correct, reward=float(correct))

    def gold_response(self, example: Example) -> str:
        """The reference's worked steps, then the answer in the form the prompt sets ask for."""
        steps = example.fields.get("solution")
        return f" {steps}\nThe answer is {example.gold}." if steps else f" The answer is {example.gold}."
