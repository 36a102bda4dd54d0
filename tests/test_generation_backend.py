"""The generation_backend option where vLLM is not installed (the default .venv): clear errors, no
output written. The vLLM backend itself is tested in tests/test_vllm.py (the `vllm` tier)."""

import os
import sys

import pytest
from conftest import fixture
from helpers import run_command

from selfcorrect.errors import UserError
from selfcorrect.vllm_backend import assign_gpus


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError


@pytest.mark.parametrize("module", ["data_gen.__main__", "eval.__main__"])
def test_vllm_backend_without_vllm_is_one_error_line(no_vllm, module, tmp_path):
    out = tmp_path / "out"
    p = run_command(
        module, ["--dataset_path", fixture("bbq"), "--limit", "2", "--output_dir", str(out), "--generation_backend", "vllm"]
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: generation_backend vllm needs vLLM") and "setup_vllm.sh" in lines[0]
    assert not out.exists()  # refused before the folder was claimed


def test_probe_with_vllm_backend_is_refused(tmp_path):
    out = tmp_path / "out"
    p = run_command(
        "eval.__main__",
        ["--dataset_path", fixture("bbq"), "--limit", "2", "--output_dir", str(out), "--generation_backend", "vllm", "--probe"],
    )
    assert p.returncode == 2 and "hidden states, which vLLM does not return" in p.stderr
    assert not out.exists()


def test_unknown_backend_is_refused(tmp_path):
    p = run_command("data_gen.__main__", ["--output_dir", str(tmp_path / "o"), "--generation_backend", "sglang"])
    assert p.returncode == 2 and "generation_backend" in p.stderr and "sglang" in p.stderr


def test_each_process_engine_gets_its_own_gpus():
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert [assign_gpus(r, 1, env) for r in range(4)] == ["4", "5", "6", "7"]
    assert [assign_gpus(r, 2, env) for r in range(2)] == ["4,5", "6,7"]
    with pytest.raises(UserError, match="tensor_parallel_size 2"):
        assign_gpus(2, 2, env)


def test_merged_adapter_is_base_plus_adapter(tiny_model_dir, tmp_path):
    """The vLLM backend serves an adapter as base + adapter merged into a temporary folder: that
    folder's model computes the logits of the base with the adapter applied, and is deleted on close."""
    import torch
    from peft import LoraConfig, get_peft_model

    from selfcorrect.modeling import load_model
    from selfcorrect.vllm_backend import MergedAdapter

    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(tiny_model_dir, device="cpu"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # B starts at zero: make the adapter change the model
    adapter = str(tmp_path / "adapter")
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[5, 17, 42, 99, 7, 300]])
    with torch.no_grad():
        want = load_model(tiny_model_dir, adapter, device="cpu")(ids).logits
        base = load_model(tiny_model_dir, device="cpu")(ids).logits
        merged = MergedAdapter(tiny_model_dir, adapter)
        try:
            got = load_model(merged.path, device="cpu")(ids).logits
        finally:
            merged.close()
    assert not torch.allclose(base, want, atol=1e-3)  # the adapter matters
    assert torch.allclose(got, want, atol=1e-5)
    assert not os.path.exists(merged.path)
