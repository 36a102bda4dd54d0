"""scripts/study.py's split: templates never on two sides, sizes kept, every category represented."""

import importlib.util
import json
import os
import sys

import pytest
from conftest import ROOT, fixture


def _study():
    spec = importlib.util.spec_from_file_location("study", os.path.join(ROOT, "scripts", "study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_keeps_templates_apart_and_spreads_categories(tmp_path):
    study = _study()
    info = study.write_split(fixture("bbq"), str(tmp_path), (60, 12, 30))
    sides = {}
    for side in ("train", "val", "test"):
        rows = []
        for name in os.listdir(tmp_path / side):
            rows += [json.loads(line) for line in open(tmp_path / side / name)]
        sides[side] = rows
        assert len(rows) == info[side]["items"]
    templates = {side: {(r["category"], str(r["question_index"])) for r in rows} for side, rows in sides.items()}
    assert not templates["train"] & templates["val"] and not templates["train"] & templates["test"]
    assert not templates["val"] & templates["test"]
    assert len(sides["train"]) == 60  # the shipped cut has enough training templates for the request
    # Round-robin over categories: no category has more than one item beyond any other with items left.
    counts = info["train"]["per_category"]
    assert max(counts.values()) - min(counts.values()) <= 1 or len(counts) < 6
    again = study.write_split(fixture("bbq"), str(tmp_path), (60, 12, 30))  # resumed: the recorded split
    assert again == info


@pytest.mark.parametrize("make", ["missing", "empty folder", "empty file"])
def test_missing_or_empty_data_is_one_line_before_anything_is_written(make, tmp_path, monkeypatch, capsys):
    study = _study()
    data = tmp_path / "bbq"
    if make != "missing":
        data.mkdir()
    if make == "empty file":
        (data / "Age.jsonl").write_text("")
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["study.py", "--dataset_path", str(data), "--run_dir", str(run_dir)])
    with pytest.raises(SystemExit) as e:
        study.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: --dataset_path {data}: ")
    assert not run_dir.exists()
