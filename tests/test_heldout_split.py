"""The held-out split keeps each of the task's groups (BBQ: category + template) on one side."""

import glob
import json
import os

import pytest
from conftest import shared

from selfcorrect.config import DataConfig, SplitConfig
from selfcorrect.examples import is_heldout, load_examples
from selfcorrect.tasks import get_task


def _templates(folder):
    """example id -> (category, question_index), read from the release rows themselves."""
    out = {}
    for path in glob.glob(os.path.join(folder, "*.jsonl")):
        if "prediction" in path:
            continue
        for line in open(path):
            d = json.loads(line)
            out[f"{d['category']}/{d['example_id']}"] = (d["category"], str(d["question_index"]))
    return out


def _split(folder, fraction):
    task = get_task("bbq")
    sides = []
    for heldout in (True, False):
        split = SplitConfig(heldout_fraction=fraction, heldout=heldout)
        sides.append([ex.id for ex in load_examples(task, DataConfig(dataset_path=folder), split)])
    return sides


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_no_bbq_template_is_on_both_sides(bbq_dir, fraction):
    templates = _templates(bbq_dir)
    held, train = _split(bbq_dir, fraction)
    assert held and train and sorted(held + train) == sorted(templates)  # every item, once
    held_groups, train_groups = {templates[i] for i in held}, {templates[i] for i in train}
    assert not held_groups & train_groups


def test_heldout_share_of_groups_is_near_the_request():
    for fraction in (0.2, 0.5):
        share = sum(is_heldout(f"Category/q{i}", fraction) for i in range(5000)) / 5000
        assert share == pytest.approx(fraction, abs=0.02)


def test_heldout_split_of_the_full_release():
    """The six released categories: 150 templates, 20% requested (skipped without ../shared)."""
    folder = shared("bbq")
    templates = _templates(folder)
    held, train = _split(folder, 0.2)
    held_groups, train_groups = {templates[i] for i in held}, {templates[i] for i in train}
    assert not held_groups & train_groups and len(held_groups | train_groups) == 150
    assert len(held_groups) / 150 == pytest.approx(0.2, abs=0.07)
