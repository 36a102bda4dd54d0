"""Named, versioned self-correction prompt sets (the wording lives in prompt_sets.yaml)."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass

from selfcorrect.config import check_types
from selfcorrect.errors import UserError
from selfcorrect.parsing import load_yaml

BUILTIN_FILE = os.path.join(os.path.dirname(__file__), "prompt_sets.yaml")
FIELDS = {
    "version": int,
    "description": str,
    "source": str,
    "first_instruction": str,
    "review_instruction": str,
    "first_prefill": str | None,
    "review_prefill": str | None,
    "external": bool,
    "multiple_choice": bool,
}
# The placeholders each text is filled with: a review turn gets the scorer's verdict; the first
# instruction and the prefills are used as written, so a placeholder there would reach the model.
PLACEHOLDERS = {"review_instruction": {"feedback"}}


@dataclass(frozen=True)
class PromptSet:
    name: str
    version: int
    description: str
    source: str
    first_instruction: str
    review_instruction: str
    first_prefill: str | None
    review_prefill: str | None
    external: bool
    multiple_choice: bool  # its wording names answer choices: only for multiple-choice tasks

    def first_turn(self, question: str) -> str:
        return f"{question}\n\n{self.first_instruction}" if self.first_instruction else question

    def review_turn(self, feedback: str = "") -> str:
        return self.review_instruction.replace("{feedback}", feedback).strip()

    def fingerprint(self) -> str:
        """A short hash of the wording, so a run notices an edited prompt set whose version was not bumped."""
        text = "\x1f".join(
            str(x)
            for x in (self.first_instruction, self.review_instruction, self.first_prefill, self.review_prefill, self.external)
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def prefill(self, round_index: int) -> str | None:
        """Assistant prefill for round ``round_index`` (0-based)."""
        return self.first_prefill if round_index == 0 else self.review_prefill


def _parse(name: str, spec: object, source: str) -> PromptSet:
    if not isinstance(spec, dict):
        raise UserError(f"{source}: prompt set '{name}' must be a mapping")
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise UserError(f"{source}: prompt set '{name}' has unknown key(s) {', '.join(sorted(unknown))}")
    check_types(spec, FIELDS, f"{source}: prompt set '{name}'")
    if not spec.get("review_instruction"):
        raise UserError(f"{source}: prompt set '{name}' needs a review_instruction")
    for key in ("first_instruction", "review_instruction", "first_prefill", "review_prefill"):
        check_placeholders(spec.get(key) or "", PLACEHOLDERS.get(key, set()), f"{source}: prompt set '{name}' key '{key}'")
    return PromptSet(
        name=name,
        version=spec.get("version", 1),
        description=spec.get("description", ""),
        source=spec.get("source", source),
        first_instruction=spec.get("first_instruction") or "",
        review_instruction=spec["review_instruction"],
        first_prefill=spec.get("first_prefill") or None,
        review_prefill=spec.get("review_prefill") or None,
        external=spec.get("external", False),
        multiple_choice=spec.get("multiple_choice", False),
    )


def check_placeholders(text: str, provided: set[str], where: str) -> None:
    """A ``{name}`` the round does not fill would reach the model as written: one error line.

    >>> check_placeholders("{feedback} Again.", {"feedback"}, "k")
    >>> check_placeholders("You said {answer}.", {"feedback"}, "sets.yaml: prompt set 'x' key 'review_instruction'")
    Traceback (most recent call last):
    ...
    selfcorrect.errors.UserError: sets.yaml: prompt set 'x' key 'review_instruction' has placeholder {answer}, which no round fills (it fills {feedback})
    """
    for found in re.findall(r"\{([^{}]*)\}", text):
        if found not in provided:
            fills = f"it fills {', '.join('{' + p + '}' for p in sorted(provided))}" if provided else "it is used as written"
            raise UserError(f"{where} has placeholder {{{found}}}, which no round fills ({fills})")


def load_prompt_sets(extra_file: str | None = None) -> dict[str, PromptSet]:
    sets = {n: _parse(n, s, BUILTIN_FILE) for n, s in load_yaml(BUILTIN_FILE).items()}
    if extra_file:
        sets.update({n: _parse(n, s, extra_file) for n, s in load_yaml(extra_file).items()})
    return sets


def get_prompt_set(name: str, extra_file: str | None = None) -> PromptSet:
    sets = load_prompt_sets(extra_file)
    if name not in sets:
        close = difflib.get_close_matches(name, list(sets), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown prompt set '{name}'{hint}; available: {', '.join(sorted(sets))}")
    return sets[name]
