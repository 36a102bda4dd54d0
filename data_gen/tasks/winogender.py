"""Winogender schemas (Rudinger et al. 2018, arXiv 1804.09301): occupation/participant coreference.

Each template sentence mentions an occupation and a participant and a pronoun that refers to one of
them. We build every (template, pronoun gender, participant-or-"someone") sentence, 720 in all, and
ask which of the two the pronoun refers to (option A = the occupation, B = the participant). Each
example keeps the occupation, the pronoun's gender and the BLS share of women in the occupation,
so eval can correlate gendered resolution with occupational statistics.

Data: a folder with the release's ``templates.tsv`` and ``occupations-stats.tsv``
(https://github.com/rudinger/winogender-schemas, data/). Ids match the release's sentids without
".txt": ``<occupation>.<participant>.<answer>.<gender>`` (participant is "someone" in that variant).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator

from data_gen.errors import UserError
from data_gen.tasks.base import Example, MultipleChoiceTask, format_choices

PRONOUNS = {
    "male": {"$NOM_PRONOUN": "he", "$POSS_PRONOUN": "his", "$ACC_PRONOUN": "him"},
    "female": {"$NOM_PRONOUN": "she", "$POSS_PRONOUN": "her", "$ACC_PRONOUN": "her"},
    "neutral": {"$NOM_PRONOUN": "they", "$POSS_PRONOUN": "their", "$ACC_PRONOUN": "them"},
}


_THEY_AGREEMENT = [("was", "were"), ("is", "are"), ("has", "have"), ("does", "do"), ("wasn't", "weren't"),
                   ("isn't", "aren't"), ("hasn't", "haven't"), ("doesn't", "don't")]  # fmt: skip


def _read_tsv(path: str) -> list[dict[str, str]]:
    if not os.path.isfile(path):
        raise UserError(f"Winogender file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def render(sentence: str, occupation: str, participant: str, gender: str) -> tuple[str, str]:
    """The sentence with names and pronouns filled in, and the pronoun used."""
    if participant == "someone":  # "the $PARTICIPANT" -> "someone", as in the release's all_sentences.tsv
        sentence = re.sub(r"\b(the|a|an) \$PARTICIPANT", "someone", sentence)
        sentence = re.sub(r"\b(The|A|An) \$PARTICIPANT", "Someone", sentence)
    text = sentence.replace("$OCCUPATION", occupation).replace("$PARTICIPANT", participant)
    pronoun = ""
    for slot, word in PRONOUNS[gender].items():
        if slot in text:
            pronoun = pronoun or word
            text = text.replace(slot, word)
    if gender == "neutral":  # singular they takes plural verb forms
        for a, b in _THEY_AGREEMENT:
            text = re.sub(rf"\b(they|They) {a}\b", rf"\1 {b}", text)
    if text.startswith("$"):
        raise ValueError(sentence)
    return text[0].upper() + text[1:], pronoun


class WinogenderTask(MultipleChoiceTask):
    name = "winogender"
    hub_id = None  # no canonical hub copy of the templates; pass the release folder

    def group(self, example: Example) -> str:
        """The occupation: its two templates and their participant and pronoun variants share wording."""
        return example.fields["occupation"]

    def load(self, dataset_path: str | None, split: str = "test") -> Iterator[Example]:
        if dataset_path is None:
            raise UserError("winogender needs --dataset_path (a folder with templates.tsv and occupations-stats.tsv)")
        folder = dataset_path if os.path.isdir(dataset_path) else os.path.dirname(dataset_path)
        stats = {r["occupation"]: r for r in _read_tsv(os.path.join(folder, "occupations-stats.tsv"))}
        for lineno, row in enumerate(_read_tsv(os.path.join(folder, "templates.tsv")), 2):
            occupation, participant = row.get("occupation(0)"), row.get("other-participant(1)")
            if not occupation or not participant or row.get("answer") not in ("0", "1") or not row.get("sentence"):
                raise UserError(f"{folder}/templates.tsv:{lineno}: malformed template row")
            if occupation not in stats:
                raise UserError(f"{folder}/occupations-stats.tsv: no statistics for occupation '{occupation}'")
            for who in (participant, "someone"):
                for gender in ("male", "female", "neutral"):
                    sentence, pronoun = render(row["sentence"], occupation, who, gender)
                    choices = [f"The {occupation}", "Someone else" if who == "someone" else f"The {who}"]
                    question = f'{sentence}\nIn this sentence, who does "{pronoun}" refer to?'
                    yield Example(
                        id=f"{occupation}.{who}.{row['answer']}.{gender}",
                        question=format_choices(question, choices),
                        gold="AB"[int(row["answer"])],
                        choices=choices,
                        fields={
                            "occupation": occupation,
                            "participant": who,
                            "gender": gender,
                            "bls_pct_female": float(stats[occupation]["bls_pct_female"]),
                        },
                    )
