"""On CUDA: every trainer runs 2 steps under single_gpu, zero2, zero3 and fsdp (one process), and
the adapter it saves is complete (no empty ZeRO-3 / FSDP shard) and reloads onto the base; SCoRe and
K-round RL refuse FSDP (their loop runs in one process, under DDP or under DeepSpeed). Each run's
resolved config records the dtype it trained in (bf16). Beyond the matrix (gpu_cases.extra_cases):
two processes over NCCL (K-round RL under DDP, GRPO under ZeRO-3; skipped with fewer than two
GPUs), QLoRA, and the online loop with gradient checkpointing.

Skipped without CUDA (the CPU suite covers the same code paths under cpu.yaml). Each case launches
the real command line, as a user would.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from gpu_cases import CONFIGS, METHODS, TRL_METHODS, data_gen_args, extra_cases, trainer_case
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
    out = tmp_path / method
    case = trainer_case(method, config, tiny_model_dir, str(data), str(out))  # parsed on the CPU by test_gpu_cases.py
    p = launch(case.config, case.target, case.args, timeout=900, launcher_args=case.launcher_args)
    if method in ("score", "kround") and config == "fsdp":  # their loop refuses FSDP (train/online_rl.py)
        assert p.returncode != 0 and "not under FSDP" in p.stderr
        return
    assert p.returncode == 0, p.stderr[-4000:]
    check_outputs(out, method, tiny_model_dir)


def check_outputs(out, method: str, tiny_model_dir: str) -> None:
    """A complete adapter that reloads onto the base and computes finite logits, and the dtypes the
    run trained in, as its resolved config records them."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(str(out / "adapter_model.safetensors"))
    config = json.load(open(out / "adapter_config.json"))
    assert weights and all(t.numel() > 0 for t in weights.values())  # not an empty ZeRO-3 / FSDP shard
    # The adapter as saved: fp32 (PEFT keeps LoRA weights in fp32 over a bf16 base), or bf16 where
    # DeepSpeed's bf16 engine cast them; never fp16, and finite.
    assert {t.dtype for t in weights.values()} <= {torch.float32, torch.bfloat16}
    assert all(torch.isfinite(t).all() for t in weights.values())
    n_targets = len([k for k in weights if "lora_A" in k])
    assert n_targets >= 2 and config["r"] == 16
    saved = json.load(open(out / "selfcorrect_config.json"))
    assert saved["dtype"] == "bfloat16"  # not the CPU overrides' float32: CUDA was seen
    if method in TRL_METHODS:
        assert saved["bf16"] is True and not saved.get("fp16")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).cuda()
    model = PeftModel.from_pretrained(base, str(out)).eval()
    ids = torch.tensor([[1, 5, 9, 13]], device="cuda")
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert os.path.isfile(out / "README.md")


EXTRA = sorted(extra_cases("m", "d", "o"))


@pytest.mark.parametrize("name", EXTRA)
def test_beyond_the_matrix(name, tiny_model_dir, data, tmp_path):
    if name.endswith("-2gpu") and torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    if name == "sft-qlora":
        pytest.importorskip("bitsandbytes")
    case = extra_cases(tiny_model_dir, str(data), str(tmp_path))[name]  # parsed on the CPU by test_gpu_cases.py
    p = launch(case.config, case.target, case.args, timeout=900, launcher_args=case.launcher_args)
    assert p.returncode == 0, p.stderr[-4000:]
    out = tmp_path / case.args[case.args.index("--output_dir") + 1].rsplit("/", 1)[1]
    check_outputs(out, case.target.removeprefix("train/").removesuffix(".py"), tiny_model_dir)
    if name == "sft-qlora":
        assert json.load(open(out / "selfcorrect_config.json"))["load_in_4bit"] is True
