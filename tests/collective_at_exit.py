"""Launched by tests/test_multiprocess.py on 8 processes: a command, run through ``run_cli``, that
all-reduces one tensor and returns, as every training run ends with collectives.

Without ``close_process_group`` (selfcorrect/cli.py says why) gloo's worker thread frees the
all-reduce's tensors while Python shuts down, on a busy machine (8 processes on 2 cores are one),
and the process aborts. The aborting thread's stack, from a core dump: ProcessGroupGloo::runLoop,
~AsyncWork, TensorImpl::decref_pyobject, take_gil, PyThread_exit_thread.

    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml --num_processes 8 tests/collective_at_exit.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from selfcorrect.cli import run_cli  # noqa: E402


def main(argv: list[str]) -> None:
    dist.init_process_group("gloo")
    dist.all_reduce(torch.ones(8))


if __name__ == "__main__":
    run_cli(main)
