"""The dry-run commands in recipes/README.md run as written (tiny model, a few steps)."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_recipes_readme_dry_run(tmp_path):
    text = open(os.path.join(ROOT, "recipes", "README.md")).read()
    block = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[-1]
    assert "tests/tiny_model.py" in block and "train/score.py" in block
    # Run as written, with outputs/ moved to a fresh folder: a second run into the same folders is
    # (rightly) refused once an adapter differs, and the test must not depend on an earlier run.
    assert block.count("outputs/") == 3
    block = block.replace("outputs/", f"{tmp_path}/")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    out = os.path.join(tmp_path, "dry")
    for path in (
        "data/traces.jsonl",
        "sft/adapter_model.safetensors",
        "dpo/adapter_model.safetensors",
        "grpo/adapter_model.safetensors",
        "score/adapter_model.safetensors",
        "eval/sft/metrics.json",
        "compare/report.md",
    ):
        assert os.path.exists(os.path.join(out, path)), path
