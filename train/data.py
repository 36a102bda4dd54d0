"""Training rows from data_gen files: each field a trainer reads checked by one rule (one error line
naming the file, line and field), and the provenance check that refuses data made for another task
or prompt set than the recipe's."""

from __future__ import annotations

import json
from typing import Any

from selfcorrect.errors import UserError
from selfcorrect.jsonl import read_rows

ROLES = ("system", "user", "assistant")


def _check_messages(value: Any, key: str, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: '{key}' must be a non-empty list of {{role, content}} messages (got {value!r:.60})")
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise UserError(f"{where}: '{key}' has a message with role {role!r:.40}; roles are {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise UserError(f"{where}: '{key}' has a {m['role']} message whose content is {m.get('content')!r:.40}, not text")
    if key == "messages" and not any(m["role"] == "assistant" for m in value):
        raise UserError(f"{where}: 'messages' has no assistant turn to train on")


def _check_example(row: dict[str, Any], where: str) -> None:
    """An RL row's ``example`` (the task item its episodes are graded on) is the JSON text data_gen
    writes, or the same object unencoded; either way it becomes the JSON text every trainer reads."""
    value = row["example"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UserError(f"{where}: 'example' is not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("id", "question", "gold")):
        raise UserError(f"{where}: 'example' must be an object with text fields id, question and gold (a data_gen rl.jsonl row)")
    row["example"] = json.dumps(value, ensure_ascii=False)


# The one rule for each field a trainer reads from a data_gen file, whichever trainer reads it.
_ROW_RULES = {
    "messages": lambda row, where: _check_messages(row["messages"], "messages", where),
    "revision_prompt": lambda row, where: _check_messages(row["revision_prompt"], "revision_prompt", where),
    "example": _check_example,
    **{key: lambda row, where, key=key: _check_text_or_messages(row, key, where) for key in ("prompt", "chosen", "rejected")},
}


def _check_text_or_messages(row: dict[str, Any], key: str, where: str) -> None:
    if not isinstance(row[key], str):
        _check_messages(row[key], key, where)


def read_training_rows(path: str, required: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a data_gen .jsonl, each checked for the fields the method needs (one line naming the
    file, line and field for a missing or ill-typed one)."""
    if not path:
        raise UserError("dataset_path is not set (point it at a data_gen output such as outputs/<run>/sft.jsonl)")
    rows = []
    for lineno, row in enumerate(read_rows(path), 1):
        missing = [k for k in required if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: row lacks {', '.join(missing)}")
        for key in required:
            if key in _ROW_RULES:
                _ROW_RULES[key](row, f"{path}:{lineno}")
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise UserError(f"{path}: no training rows (did data_gen keep any? see its README.md counts)")
    return rows


def load_rows(path: str, required: tuple[str, ...], limit: int | None = None, optional: tuple[str, ...] = ()):
    """A datasets.Dataset with the ``required`` columns of a data_gen .jsonl (and ``optional`` ones,
    None where a row lacks them)."""
    from datasets import Dataset

    rows = read_training_rows(path, required, limit)
    return Dataset.from_list([{k: row.get(k) for k in (*required, *optional)} for row in rows])


PROVENANCE = ("task", "prompt_set", "prompt_set_version")  # what data_gen writes on every training row


def check_provenance(rows: Any, path: str, task: str, prompt_set: str, prompt_set_version: int | None = None) -> None:
    """Refuse data recorded with another task or prompt set than the recipe's (rows without the
    fields, from older data_gen runs, are accepted). ``prompt_set_version`` is checked where the
    rows carry rendered prompts (SFT, DPO, GRPO on trace revisions): they were written in that
    wording, and eval will use the recipe's. ``rows``: dicts, or a datasets.Dataset."""
    for lineno, row in enumerate(rows, 1):
        for key, want in (("task", task), ("prompt_set", prompt_set), ("prompt_set_version", prompt_set_version)):
            got = row.get(key)
            if want is not None and got is not None and got != want:
                raise UserError(f"{path}:{lineno}: data was made with {key} '{got}' but the recipe says '{want}'")
