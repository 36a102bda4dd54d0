"""eval.compare's paired tests and trivial baselines on hand-built runs whose numbers are worked out below."""

import json

from helpers import make_trace, run_command

from eval.aggregate import compute_metrics
from selfcorrect.tasks import get_task


def _write_run(folder, traces, label):
    folder.mkdir()
    items = []
    m = compute_metrics(traces, get_task("bbq"), {"label": label, "dataset": "hand"}, n_boot=200, on_item=items.append)
    (folder / "metrics.json").write_text(json.dumps(m))
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return str(folder)


def _traces(answers_per_item, golds, ids=None):
    ids = ids or [f"Age/{i}" for i in range(len(golds))]
    return [
        make_trace(i, a, gold=g, category="Age" if n % 2 else "Religion")
        for n, (i, a, g) in enumerate(zip(ids, answers_per_item, golds))
    ]


GOLDS = ["C", "C", "C", "C", "A", "A"]  # gold C = the unknown option for four of six items


def test_compare_prints_paired_mcnemar_tests_and_trivial_baselines(tmp_path):
    # Reference: every item answers B then A (wrong except the two gold-A items at round 2), so all six
    # flip at 1->2. The run answers C twice: right on the four gold-C items, never flips.
    ref = _write_run(tmp_path / "ref", _traces([["B", "A"]] * 6, GOLDS), "ref")
    run = _write_run(tmp_path / "run", _traces([["C", "C"]] * 6, GOLDS), "run")
    p = run_command("eval.compare", ["--runs", ref, run, "--output_dir", str(tmp_path / "cmp")])
    assert p.returncode == 0, p.stderr
    assert "acc r1 [95% CI]" in p.stdout.splitlines()[0]  # the per-run table comes first, unchanged
    paired = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["paired"]["run"]["grader"]
    # round 1: the run alone is right on 4 items, the reference on none: exact McNemar p = 2 / 2^4
    assert (paired["r1"]["only_reference"], paired["r1"]["only_run"]) == (0, 4)
    assert paired["r1"]["p_mcnemar"] == 0.125 and paired["r1"]["difference"] == 4 / 6
    # round 2: reference right on the 2 gold-A items, the run on the 4 gold-C items: 2 vs 4 discordant
    assert (paired["r2"]["only_reference"], paired["r2"]["only_run"]) == (2, 4)
    assert paired["r2"]["p_mcnemar"] == 2 * (1 + 6 + 15) / 64
    # flips: all six reference items flip, none of the run's: p = 2 / 2^6; the difference is -1 in every template
    assert paired["1->2"]["p_mcnemar"] == 2 / 64 and paired["1->2"]["ci95_group"] == [-1.0, -1.0]
    assert "p=0.031 (6/0)" in p.stdout and "strict reading" in p.stdout
    assert "always unknown: accuracy 0.667" in p.stdout and "chance: accuracy 0.333" in p.stdout
    assert "always C (most frequent gold letter): accuracy 0.667" in p.stdout


def test_compare_refuses_runs_over_different_items(tmp_path):
    ref = _write_run(tmp_path / "ref", _traces([["C", "C"]] * 6, GOLDS), "ref")
    other_ids = [f"Age/{i}" for i in range(1, 7)]  # same count, one id differs
    run = _write_run(tmp_path / "run", _traces([["C", "C"]] * 6, GOLDS, other_ids), "run")
    p = run_command("eval.compare", ["--runs", ref, run, "--output_dir", str(tmp_path / "cmp")])
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "error: runs ref and run graded different items (1 only in ref, 1 only in run): paired comparisons need "
        "the same items; evaluate every run on the same data and split"
    )
    assert not (tmp_path / "cmp").exists()
