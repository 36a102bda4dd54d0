"""A user-defined task from a YAML spec, without editing the package.

    # my_task.yaml
    name: my_task
    prompt_template: "Question: {question}"   # str.format over the row's fields
    id_field: id                               # optional; default: the line number
    gold_field: answer
    choices_field: options                     # multiple choice: a list field per row ...
    # choices: [yes, no]                       # ... or one fixed list for every row
    # answer_regex: "answer is (.+?)\\."       # free-form: first group, compared normalised

Multiple-choice gold may be an index, a letter or the option text. Free-form answers are compared
after ``normalise`` (lowercase, no punctuation). Data: --dataset_path pointing at a .jsonl file.

A Python class works too: ``task: mypackage.module:MyTask`` (a ``selfcorrect.tasks.base.Task`` subclass).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Any

from selfcorrect.config import check_types
from selfcorrect.errors import UserError
from selfcorrect.jsonl import read_rows
from selfcorrect.tasks.base import (
    LETTERS,
    UNPARSED,
    Example,
    Grade,
    MultipleChoiceTask,
    check_text_fields,
    format_choices,
    normalise,
)

SPEC_KEYS = {
    "name": str,
    "prompt_template": str,
    "id_field": str,
    "gold_field": str,
    "choices_field": str,
    "choices": list[str | int | float],
    "answer_regex": str,
}


def template_fields(template: str, where: str) -> list[str]:
    """The row fields a prompt_template names; one error line for a template ``str.format`` cannot
    fill from a row's fields (an unclosed brace, ``{0}``, ``{q.text}``, ``{q[0]}``).

    >>> template_fields("Q: {question} ({topic})", "t.yaml")
    ['question', 'topic']
    >>> template_fields("Q: {q.text}", "t.yaml")
    Traceback (most recent call last):
    ...
    selfcorrect.errors.UserError: t.yaml: prompt_template placeholder {q.text} must be a field name of the rows, as in {question}
    """
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise UserError(
            f"{where}: prompt_template is not a valid template ({e}; write a literal brace as {{{{ or }}}})"
        ) from None
    for name, spec, conv in parsed:
        if not name.isidentifier() or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise UserError(f"{where}: prompt_template placeholder {shown} must be a field name of the rows, as in {{question}}")
    return [name for name, _, _ in parsed]


class SpecTask(MultipleChoiceTask):
    def __init__(self, spec: dict[str, Any], source: str = "task spec"):
        unknown = set(spec) - set(SPEC_KEYS)
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SPEC_KEYS))}")
        check_types(spec, SPEC_KEYS, source)
        for key in ("prompt_template", "gold_field"):
            if key not in spec:
                raise UserError(f"{source}: missing '{key}'")
        if not ("choices" in spec or "choices_field" in spec or "answer_regex" in spec):
            raise UserError(f"{source}: give 'choices', 'choices_field' or 'answer_regex'")
        self.fields = template_fields(spec["prompt_template"], source)
        self.spec = spec
        self.name = str(spec.get("name", "custom"))
        try:
            self.regex = re.compile(spec["answer_regex"], re.IGNORECASE | re.DOTALL) if "answer_regex" in spec else None
        except (re.error, TypeError) as e:
            raise UserError(f"{source}: answer_regex is not a valid regular expression ({e})") from None
        self.multiple_choice = "choices" in spec or "choices_field" in spec

    def settings(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def load(self, dataset_path: str | None, split: str = "test") -> Iterator[Example]:
        if dataset_path is None:
            raise UserError(f"task {self.name} needs --dataset_path (a .jsonl file)")
        s = self.spec
        for lineno, row in enumerate(read_rows(dataset_path), 1):
            where = f"{dataset_path}:{lineno}"
            missing = [f for f in self.fields if f not in row]
            if missing:
                raise UserError(f"{where}: prompt_template needs field '{missing[0]}', which this row lacks")
            check_text_fields(row, self.fields, where)
            question = s["prompt_template"].format(**row)
            if s["gold_field"] not in row:
                raise UserError(f"{where}: missing gold field '{s['gold_field']}'")
            gold_raw = row[s["gold_field"]]
            if isinstance(gold_raw, bool) or not isinstance(gold_raw, (str, int, float)):
                raise UserError(
                    f"{where}: gold field '{s['gold_field']}' must be text or a number (got {type(gold_raw).__name__} {gold_raw!r:.60})"
                )
            choices = s.get("choices") or (row.get(s["choices_field"]) if "choices_field" in s else None)
            id_field = s.get("id_field", "id")
            raw_id = row.get(id_field, lineno)
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                raise UserError(
                    f"{where}: id field '{id_field}' must be text or an integer (got {type(raw_id).__name__} {raw_id!r:.60})"
                )
            ex_id = str(raw_id)
            if choices:
                if not isinstance(choices, list) or not all(
                    isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices
                ):
                    raise UserError(f"{where}: choices must be a list of texts (got {choices!r:.60})")
                choices = [str(c) for c in choices]
                gold = self._gold_letter(gold_raw, choices, where)
                yield Example(id=ex_id, question=format_choices(question, choices), gold=gold, choices=choices)
            else:
                yield Example(id=ex_id, question=question, gold=normalise(str(gold_raw)))

    @staticmethod
    def _gold_letter(gold: Any, choices: list[str], where: str) -> str:
        if isinstance(gold, int) and 0 <= gold < len(choices):
            return LETTERS[gold]
        g = str(gold).strip()
        if len(g) == 1 and g.upper() in LETTERS[: len(choices)]:
            return g.upper()
        for i, c in enumerate(choices):
            if normalise(c) == normalise(g):
                return LETTERS[i]
        raise UserError(f"{where}: gold '{gold}' is not one of the choices")

    def grade(self, example: Example, response: str) -> Grade:
        if example.choices:
            return super().grade(example, response)
        answer = UNPARSED
        if isinstance(response, str) and self.regex is not None:
            m = self.regex.search(response[:20000])
            if m:
                answer = normalise(m.group(1) if m.groups() else m.group(0)) or UNPARSED
        correct = answer == example.gold
        return Grade(answer=answer, correct=correct, reward=float(correct))
