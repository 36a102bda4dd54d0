"""Running a command: one clear line and an exit code for the project's errors, no traceback unless
--debug, and the library messages that are not the user's business filtered out."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Callable

from selfcorrect.errors import Interrupted, NothingToDo, UserError
from selfcorrect.run_identity import release_locks

# Library messages that are not the user's business: deprecations inside transformers/TRL that our
# calls cannot avoid on the tested versions, and DeepSpeed's accelerator probe on CPU machines.
_NOISE = (
    r".*`past_key_values` is deprecated.*",
    r".*`is_gradient_checkpointing` is deprecated.*",
    r".*torch.utils.checkpoint: the use_reentrant parameter.*",
    r".*`torch_dtype` is deprecated.*",
    # TRL's configs default the deprecated `gradient_checkpointing` to True, so transformers warns even
    # when a recipe sets only the new `activation_checkpointing` or neither (the recipes use the new key).
    r".*`gradient_checkpointing` is deprecated.*",
    # DeepSpeed 0.19 calls torch.distributed functions that torch 2.13 deprecates, once per collective.
    r".*`torch.distributed.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated.*",
)
# transformers turns the cache off in each checkpointed layer of a training forward and logs it, in
# the middle of the progress bar; training keeps no cache, so the line tells the user nothing.
_NOISE_LOGS = {"transformers.modeling_layers": "Caching is incompatible with gradient checkpointing"}


class _DropLines(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


_LOG_FILTERS = {name: _DropLines(text) for name, text in _NOISE_LOGS.items()}  # one each: addFilter skips repeats


def quiet_library_noise() -> None:
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name, log_filter in _LOG_FILTERS.items():
        logging.getLogger(name).addFilter(log_filter)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("DS_ACCELERATOR"):
        try:  # without CUDA, tell DeepSpeed so, instead of letting it warn that it found none
            import torch

            if not torch.cuda.is_available():
                os.environ["DS_ACCELERATOR"] = "cpu"
        except ImportError:
            pass


def command_line(*args: object) -> str:
    """A command the project prints for the user to run (a model card's eval line, advice in an
    error): each argument shell-quoted, so a path with spaces, quotes or non-ASCII letters runs as
    printed, and plain ones stay unquoted.

    >>> command_line("python", "-m", "eval", "--adapter", "runs/my adapter", "--rounds", 5)
    "python -m eval --adapter 'runs/my adapter' --rounds 5"
    >>> command_line("--dataset_path", "données/bbq")
    "--dataset_path 'données/bbq'"
    """
    return shlex.join(str(a) for a in args)


def _is_main_local_process() -> bool:
    """Under accelerate launch every process runs the same checks: only local rank 0 prints."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def _ignore_further_interrupts() -> None:
    """Once a command is stopping after Ctrl-C, a second Ctrl-C (a user who presses it again while
    the process shuts down: atexit handlers, library threads being joined) would interrupt the
    shutdown itself with a traceback; the command is ending anyway, so it is ignored (SIGTERM and
    kill still end the process)."""
    with contextlib.suppress(ValueError):  # not the main thread: signals are not ours to set
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def close_process_group() -> None:
    """Destroy the process group, if the command made one, while the interpreter is fully alive.

    Why: a collective returns to Python as soon as its result is there, and gloo's worker thread drops
    its own reference to the work a moment later; freeing the work's tensors can take the GIL. If
    Python has begun to shut down by then, it ends that thread inside a C++ destructor and the
    process aborts ("terminate called without an active exception", exit -6) after a run that
    finished and saved, and the launcher fails the run. A busy machine loses that race (seen at the
    end of DeepSpeed ZeRO-3 runs). Destroying the group shuts its backends down, which finishes their
    queued work and joins their threads (tests/test_multiprocess.py,
    ``test_a_finished_run_exits_0_on_a_busy_machine``).
    """
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch made no group
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Run ``main(argv)``; turn a UserError (or a missing file) into one stderr line and exit 2.

    ``--debug`` anywhere on the command line (or SELFCORRECT_DEBUG=1) re-raises with the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SELFCORRECT_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        quiet_library_noise()
    try:
        main(argv)
        # Only after success: a rank that failed while the others wait in a collective would make
        # the destroy wait for them forever; the launcher ends a failed run's processes anyway.
        close_process_group()
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        if _is_main_local_process():
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NothingToDo as e:
        if _is_main_local_process():
            print(f"note: {e}", file=sys.stderr)
    except Interrupted as e:
        _ignore_further_interrupts()
        if _is_main_local_process():
            print(f"\ninterrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        _ignore_further_interrupts()
        if _is_main_local_process():
            print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    finally:  # the output folder's lock ends with the command (a process ends it anyway)
        release_locks()
