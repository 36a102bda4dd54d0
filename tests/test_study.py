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
    sys.modules["study"] = module  # dataclasses look their module up while the file runs
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


def test_study_design_is_the_one_docs_study_states():
    """The budgets docs/study.md states before the run: nine arms, every trained arm but SFT at least 24
    updates at lr >= 5e-4 (SFT: the positive control's 8 x 1e-3), K = 4 for the 2->3 and 3->4 endpoint,
    answers not cut at 5 tokens, the any-change arm charging every change."""
    study = _study()
    assert study.ARMS == (
        "base_intrinsic", "base_baseline", "sft_gold_stable", "sft_self_consistent", "dpo", "grpo", "score",
        "kround_convergence", "kround_any_change",
    )  # fmt: skip
    for arm, t in study.TRAIN.items():
        if t.method == "sft":
            assert (t.steps, t.learning_rate) == (8, 1e-3), arm
        else:
            assert t.steps >= 24 and t.learning_rate >= 5e-4, arm
    assert study.TEST_ROUNDS >= 4 and set(study.PRIMARY_PAIRS) == {"2->3", "3->4"} and study.MAX_NEW_TOKENS >= 16
    assert "--change_penalty" in study.TRAIN["kround_any_change"].extra
    assert "--change_penalty" not in study.TRAIN["kround_convergence"].extra
    assert study.summed_learning_rate(5e-4, 24) == 6.25e-3  # the figure docs/study.md quotes
    assert study.steps_for("grpo", study.SIZES["full"]) == 240  # --full keeps the GPU sizes: 10x the steps
    doc = open(os.path.join(ROOT, "docs", "study.md")).read()
    for arm in study.ARMS:
        assert f"| {arm} |" in doc, arm


def test_sft_rows_split_by_source_one_file_per_arm(tmp_path):
    study = _study()
    rows = [{"source": "gold_stable", "id": "a"}, {"source": "self_consistent", "id": "a"}, {"source": "gold_stable", "id": "b"}]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = study.split_by_source(str(tmp_path / "sft.jsonl"), str(tmp_path), ("gold_stable", "self_consistent"))
    assert counts == {"gold_stable": 2, "self_consistent": 1}
    kept = [json.loads(line)["id"] for line in open(tmp_path / "sft_gold_stable.jsonl")]
    assert kept == ["a", "b"]


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


def test_accuracy_guard_fails_a_drop_not_a_rise_and_collapse_counts_letters_only():
    """The stated design (docs/study.md, Guards): a drop beyond 0.05 below the base at some round is
    a loss, a rise beyond it is reported but passes; collapse is one letter above 0.6 at round K."""
    study = _study()
    base = [0.358, 0.354, 0.325, 0.312]
    assert study.accuracy_guard([0.379] * 4, base) == (0.0, 0.067, "pass (rise > 0.05)")
    drop, rise, verdict = study.accuracy_guard([0.271] * 4, base)
    assert (drop, rise, verdict) == (0.087, 0.0, "LOSS")
    assert study.accuracy_guard([0.34, 0.33, 0.33, 0.30], base)[2] == "pass"
    assert study.collapse({"A": 0.28, "B": 0.11, "C": 0.61}) == "YES (C 0.61)"
    assert study.collapse({"A": 0.42, "B": 0.30, "C": 0.10, "unparsed": 0.17}) == "no"
    assert study.collapse({"C": 0.01, "unparsed": 0.99}) == "no"
