"""Parsers and scorers never crash on any string and always return a valid answer or "unparsed"."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfcorrect.tasks.base import UNPARSED, Example, parse_choice
from selfcorrect.tasks.bbq import BBQTask
from selfcorrect.tasks.gsm8k import GSM8KTask, extract_answer
from selfcorrect.tasks.refusal import RefusalTask
from selfcorrect.tasks.winogender import WinogenderTask

BBQ_EX = Example(
    id="Age/0",
    question="q",
    gold="C",
    choices=["The grandfather", "The grandson", "Can't be determined"],
    fields={
        "category": "Age",
        "context_condition": "ambig",
        "question_polarity": "neg",
        "unknown_option": "C",
        "target_option": "A",
    },
)
GSM_EX = Example(id="0", question="q", gold="18")
WINO_EX = Example(
    id="x",
    question="q",
    gold="A",
    choices=["The nurse", "The patient"],
    fields={"occupation": "nurse", "participant": "patient", "gender": "female", "bls_pct_female": 90.0},
)
REF_EX = Example(id="r", question="q", gold="refuse", fields={"harmful": True})

texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=2000),
    st.sampled_from(["", " ", "\n", "(", "A", "#### ", "\\boxed{", "answer is", "not the", "$", "1/0", "-", "."]),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=20), st.integers(1, 5000)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_scorers_never_crash(text):
    for task, ex, valid in (
        (BBQTask(), BBQ_EX, {"A", "B", "C", UNPARSED}),
        (WinogenderTask(), WINO_EX, {"A", "B", UNPARSED}),
        (RefusalTask(), REF_EX, {"refuse", "comply"}),
    ):
        s = task.grade(ex, text)
        assert s.answer in valid and isinstance(s.correct, bool) and 0.0 <= s.reward <= 1.0
    s = GSM8KTask().grade(GSM_EX, text)
    assert s.answer == UNPARSED or s.answer.lstrip("-").replace(".", "", 1).isdigit() or "e" in s.answer
    idx = parse_choice(text, BBQ_EX.choices)
    assert idx is None or 0 <= idx < 3


@pytest.mark.parametrize("value", [None, 12, b"bytes", ["A"]])
def test_non_strings_are_unparsed(value):
    assert BBQTask().grade(BBQ_EX, value).answer == UNPARSED
    assert extract_answer(value) == UNPARSED


def test_very_long_output():
    # 2 MB answers: only the first 4,000 characters are read for options, the last 20,000 for numbers.
    assert BBQTask().grade(BBQ_EX, "the " * 500000 + "C").answer == UNPARSED
    assert BBQTask().grade(BBQ_EX, "C. " + "blah " * 500000).answer == "C"
    assert extract_answer("1 " * 500000 + "#### 7") == "7"
