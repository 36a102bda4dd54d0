"""BBQ's bias target, checked against the BBQ authors' own analysis script on rows of all eleven categories.

tests/fixtures/bbq/authors_target_loc.csv holds, for every fixture row, the target_loc that the authors'
R script (nyu-mll/BBQ analysis_scripts/BBQ_results_metadata.R) computed: the index of the biased answer,
i.e. the stereotyped person for a negative question and the other person for a non-negative one, or NA
where the script finds none. How it was produced is in tests/fixtures/README.md.
"""

import csv
import glob
import json
import os

import pytest
from conftest import fixture

from selfcorrect.tasks import get_task
from selfcorrect.tasks.base import LETTERS
from selfcorrect.tasks.bbq import example_from_row

CATEGORIES = {
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
}


def fixture_rows():
    files = [os.path.join(fixture("bbq"), "*.jsonl"), os.path.join(fixture("bbq", "generated"), "*.jsonl")]
    for path in sorted(p for pattern in files for p in glob.glob(pattern)):
        if "prediction" not in path:
            with open(path) as f:
                yield from (json.loads(line) for line in f)


@pytest.fixture(scope="module")
def authors():
    with open(fixture("bbq", "authors_target_loc.csv")) as f:
        return {(r["category"], int(r["example_id"])): r["target_loc"] for r in csv.DictReader(f)}


def test_biased_option_matches_the_authors_script_in_all_categories(authors):
    task = get_task("bbq")
    seen, found = set(), 0
    for row in fixture_rows():
        ex = example_from_row(row)
        want = authors[(row["category"], row["example_id"])]
        tags = [row["answer_info"][f"ans{i}"][1] for i in range(3)]
        assert tags.count("unknown") == 1 and ex.fields["unknown_option"] == LETTERS[tags.index("unknown")], ex.id
        biased = {letter: task.grade(ex, f"{letter}.").is_biased for letter in "ABC"}
        if want == "NA":
            assert set(biased.values()) == {None}, ex.id
        else:
            # exactly one option is the biased answer, one is not, and the unknown option is neither
            assert [k for k, v in biased.items() if v is True] == [LETTERS[int(want)]], (ex.id, row["answer_info"])
            assert [k for k, v in biased.items() if v is None] == [ex.fields["unknown_option"]], ex.id
            found += 1
        seen.add(row["category"])
    assert seen == CATEGORIES
    assert found == sum(v != "NA" for v in authors.values()) and found > 500


@pytest.mark.parametrize(
    "category, example_id, target",
    [
        ("SES", 0, "A"),  # "poor" tagged lowSES; stereotyped_groups says "low SES"
        ("Gender_identity", 2472, "A"),  # Steven, "who is trans", tagged trans_M
        ("Gender_identity", 2672, "A"),  # Lisa, "who is trans", tagged trans_F
        ("Race_x_gender", 0, "C"),  # Black man vs Black woman; template 1 targets Black men
        ("Race_x_gender", 1756, "C"),  # Asian woman vs an untagged "Latina woman"; target Asian women
        ("Race_x_SES", 0, "C"),  # Hispanic bartender (lowSES) vs Hispanic physician; template 1 targets low SES
        ("Race_x_SES", 6724, "A"),  # rich Nia Jefferson (Black) vs rich Vivian Tran (Asian); template 16: rich Black
        ("Race_ethnicity", 1880, "B"),  # Blanca Soto (F-Latino) vs Amy Schneider (F-White)
    ],
)
def test_hand_checked_targets(category, example_id, target):
    row = next(r for r in fixture_rows() if (r["category"], r["example_id"]) == (category, example_id))
    assert row["question_polarity"] == "neg"
    assert example_from_row(row).fields["target_option"] == target
