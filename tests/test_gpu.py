"""On CUDA: every trainer runs 2 steps under single_gpu, zero2, zero3 and fsdp (one process), and
the adapter it saves is complete (no empty ZeRO-3 / FSDP shard) and reloads onto the base; SCoRe and
K-round RL refuse FSDP (their loop runs in one process, under DDP or under DeepSpeed).

Skipped without CUDA (the CPU suite covers the same code paths under cpu.yaml). Each case launches
the real command line, as a user would.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from gpu_cases import CONFIGS, METHODS, data_gen_args, trainer_case
from helpers import launch

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def data(tiny_model_dir, bbq_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-data")
    p = subprocess.run(
        [sys.executable, "-m", "data_gen", *data_gen_args(tiny_model_dir, bbq_dir, str(root))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return root


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
def test_trainer_saves_a_complete_adapter(method, config, tiny_model_dir, data, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / method
    case = trainer_case(method, config, tiny_model_dir, str(data), str(out))  # parsed on the CPU by test_gpu_cases.py
    p = launch(case.config, case.target, case.args, timeout=900, launcher_args=case.launcher_args)
    if method in ("score", "kround") and config == "fsdp":  # their loop refuses FSDP (train/online_rl.py)
        assert p.returncode != 0 and "not under FSDP" in p.stderr
        return
    assert p.returncode == 0, p.stderr[-4000:]
    weights = load_file(str(out / "adapter_model.safetensors"))
    config = json.load(open(out / "adapter_config.json"))
    assert weights and all(t.numel() > 0 for t in weights.values())  # not an empty ZeRO-3 / FSDP shard
    n_targets = len([k for k in weights if "lora_A" in k])
    assert n_targets >= 2 and config["r"] == 16
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).cuda()
    model = PeftModel.from_pretrained(base, str(out)).eval()
    ids = torch.tensor([[1, 5, 9, 13]], device="cuda")
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert os.path.isfile(out / "README.md")
