"""The generation_backend option where vLLM is not installed (the default .venv): clear errors, no
output written. The vLLM backend itself is tested in tests/test_vllm.py (the `vllm` tier)."""

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
