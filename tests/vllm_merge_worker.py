"""One process of ``accelerate launch`` running eval with ``--generation_backend vllm`` and an
adapter, with vLLM replaced at its boundary (tests/test_generation_backend.py): the "engine" is the
HF generator on the folder it is handed, and every merge of the adapter and every engine start is
logged to LOG (one JSON line each), so the test can count them across processes.

    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml tests/vllm_merge_worker.py LOG <eval arguments>
"""

import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(log_path: str, **row) -> None:
    with open(log_path, "a") as f:  # lines of a few bytes: appends from two processes do not interleave
        f.write(json.dumps({"rank": int(os.environ.get("RANK", "0")), **row}) + "\n")


def main(log_path: str, argv: list[str]) -> None:
    import selfcorrect.trace_run as trace_run
    import selfcorrect.vllm_backend as vllm_backend
    from eval.__main__ import main as eval_main
    from selfcorrect.cli import run_cli
    from selfcorrect.modeling import load_model
    from selfcorrect.rollout import HFGenerator

    fake = types.ModuleType("vllm")
    fake.__version__ = "0.0.0-test"  # recorded in the run's identity
    sys.modules["vllm"] = fake
    merge = vllm_backend.merge_adapter

    def counted_merge(*args, **kwargs):
        log(log_path, event="merge", dtype=kwargs.get("dtype"))
        return merge(*args, **kwargs)

    class Engine(HFGenerator):
        def __init__(self, path, tokenizer, sampling, **options):
            log(log_path, event="engine", path=path, options={k: v for k, v in options.items() if k != "llm"})
            super().__init__(load_model(path, device="cpu"), tokenizer, sampling)

    vllm_backend.merge_adapter = counted_merge
    trace_run.VLLMGenerator = Engine
    run_cli(eval_main, argv)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
