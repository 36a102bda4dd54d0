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


def _adapter(tiny_model_dir, out: str) -> str:
    """A LoRA adapter on the tiny model whose B is not zero (so it changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from selfcorrect.modeling import load_model

    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(tiny_model_dir, device="cpu"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


@pytest.mark.multiprocess
@pytest.mark.slow
def test_vllm_under_accelerate_launch_merges_the_adapter_once(tiny_model_dir, tmp_path):
    """Two processes of ``accelerate launch`` (gloo), vLLM replaced at its boundary: the adapter is
    merged once, by the main process, in the engine's dtype, into one folder inside the run's
    output folder that both engines read; it is gone when the run ends. Every process merged its
    own fp32 copy in a temporary folder (8 GPUs x a 7B model: hundreds of GB of RAM and disk)."""
    import json

    from helpers import launch

    adapter = _adapter(tiny_model_dir, str(tmp_path / "adapter"))
    log, out = tmp_path / "log.jsonl", tmp_path / "eval"
    args = [
        *("--model_name_or_path", tiny_model_dir, "--adapter", adapter, "--dataset_path", fixture("bbq")),
        *("--limit", "2", "--rounds", "1", "--max_new_tokens", "2", "--n_boot", "10", "--output_dir", str(out)),
        *("--generation_backend", "vllm", "--max_model_len", "512", "--gpu_memory_utilization", "0.5"),
    ]
    p = launch("cpu_ddp", "tests/vllm_merge_worker.py", [str(log), *args], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    merges = [r for r in rows if r["event"] == "merge"]
    engines = [r for r in rows if r["event"] == "engine"]
    assert merges == [{"rank": 0, "event": "merge", "dtype": "float32"}]  # auto on the CPU: the engine's fp32
    assert sorted(r["rank"] for r in engines) == [0, 1]
    assert len({r["path"] for r in engines}) == 1 and engines[0]["path"].startswith(str(out))
    assert not os.path.exists(engines[0]["path"])  # removed once the run ended
    for r in engines:
        assert r["options"]["max_model_len"] == 512 and r["options"]["gpu_memory_utilization"] == 0.5
    assert (out / "traces.jsonl").exists()


def test_vllm_engine_options(monkeypatch):
    """``max_model_len`` and ``gpu_memory_utilization`` reach vLLM's LLM on a GPU; on the CPU build
    the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead (selfcorrect/vllm_backend.py says why)."""
    import types
    from unittest import mock

    from selfcorrect.config import RolloutConfig
    from selfcorrect.vllm_backend import _ENGINES, start_engine

    fake = types.ModuleType("vllm")
    fake.LLM = mock.Mock()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr("selfcorrect.vllm_backend.cuda_available", lambda: True)
    monkeypatch.setattr("selfcorrect.vllm_backend._ENGINES", {})
    start_engine("m", "auto", 1, False, max_model_len=2048, gpu_memory_utilization=0.8)
    kwargs = fake.LLM.call_args.kwargs
    assert kwargs["max_model_len"] == 2048 and kwargs["gpu_memory_utilization"] == 0.8 and kwargs["dtype"] == "bfloat16"
    monkeypatch.setattr("selfcorrect.vllm_backend.cuda_available", lambda: False)
    start_engine("m", "auto", 1, False, max_model_len=None, gpu_memory_utilization=0.8)
    assert "gpu_memory_utilization" not in fake.LLM.call_args.kwargs and fake.LLM.call_args.kwargs["max_model_len"] is None
    assert not _ENGINES  # the module's own cache untouched
    defaults = RolloutConfig()
    assert defaults.max_model_len is None and defaults.gpu_memory_utilization == 0.9
    for bad in ({"gpu_memory_utilization": 1.5}, {"gpu_memory_utilization": 0.0}, {"max_model_len": 0}):
        with pytest.raises(UserError, match=next(iter(bad))):
            RolloutConfig(**bad)
