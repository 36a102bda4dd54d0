"""The dry-run commands in recipes/README.md run as a new user types them (tiny model, a few steps)."""

import os
import re
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.slow  # nine commands, four of them accelerate launches: minutes on 2 cores
def test_recipes_readme_dry_run(tmp_path):
    text = open(os.path.join(ROOT, "recipes", "README.md")).read()
    block = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[-1]
    assert block.startswith(". .venv/bin/activate\n") and "tests/tiny_model.py" in block and "train/score.py" in block
    if not os.path.isfile(os.path.join(ROOT, ".venv", "bin", "activate")):
        pytest.skip("no .venv in this checkout (bash scripts/setup.sh makes it)")
    # Run as written, with outputs/ moved to a fresh folder: a second run into the same folders is
    # (rightly) refused once an adapter differs, and the test must not depend on an earlier run.
    assert block.count("outputs/") == 3
    block = block.replace("outputs/", f"{tmp_path}/")
    # The shell a user has: no VIRTUAL_ENV, and a PATH without the test's interpreter, so the block's
    # own activation line is what finds python and accelerate.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PATH="/usr/local/bin:/usr/bin:/bin")
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, capture_output=True, text=True)
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
