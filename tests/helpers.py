"""Shared by the tests: hand-built traces for builders and metrics, and ways to run an entry point
(in this process, or under ``accelerate launch`` as a user runs it)."""

import os
import shutil
import signal
import subprocess
import sys

from selfcorrect.prompts import get_prompt_set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A launched process reads no hub, logs to no wandb, imports the tests' helpers (tiny_model, ...) and
# this checkout's packages, and keeps to one thread per process (two processes on two cores).
LAUNCH_ENV = {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests"), ROOT]),
    "OMP_NUM_THREADS": "1",
}

PS = get_prompt_set("intrinsic-moral")
CHOICES = ["The grandfather", "The grandson", "Can't be determined"]


def make_trace(ex_id, answers, gold="C", sample=0, probs=None, condition="ambig", polarity="neg", category="Age", responses=None):
    """A BBQ-like trajectory whose round r answered ``answers[r]`` (a letter), or, with ``responses``,
    whose round r said ``responses[r]``, graded by the BBQ task."""
    from selfcorrect.tasks.base import Example
    from selfcorrect.tasks.bbq import grade_letter
    from selfcorrect.trace import Round, Trajectory

    ex = Example(
        id=ex_id,
        question="Q?\n\nA. The grandfather\nB. The grandson\nC. Can't be determined",
        gold=gold,
        choices=CHOICES,
        fields={
            "category": category,
            "context_condition": condition,
            "question_polarity": polarity,
            "unknown_option": "C",
            "target_option": "A",
            "question_index": "1",
        },
    )
    rounds = []
    if responses is not None:
        from selfcorrect.tasks.bbq import BBQTask

        answers = [BBQTask().parse(ex, text) for text in responses]
    for r, a in enumerate(answers):
        response = responses[r] if responses is not None else f" {a}. {CHOICES['ABC'.index(a)]}" if a in "ABC" else " hmm"
        rounds.append(
            Round.graded(
                PS.first_turn(ex.question) if r == 0 else PS.review_turn(),
                PS.prefill(r),
                response,
                grade_letter(ex, a),
                option_probs=(probs[r] if probs else None),
                option_mass=1.0,
                mean_logprob=-0.5,
                new_tokens=4,
                finish="eos",
            )
        )
    return Trajectory(id=ex_id, task="bbq", prompt_set=PS.name, example=ex, rounds=rounds, sample=sample, prompt_set_version=1)


def run_command(module: str, args: list[str]):
    """``python -m <module> args`` in this process: the entry point under ``run_cli``, as the command
    line runs it, with stdout and stderr captured. Returns (returncode, stdout, stderr) as a namespace.
    Saves the interpreter start and imports of a subprocess (seconds each on 2 cores)."""
    import contextlib
    import importlib
    import io
    from types import SimpleNamespace

    from selfcorrect.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    sigint = signal.getsignal(signal.SIGINT)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(importlib.import_module(module).main, args)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        finally:  # an interrupted command ignores further Ctrl-C for the rest of its process: not pytest's
            signal.signal(signal.SIGINT, sigint)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def left_by_a_kill_after(run: str, step: int, folder: str) -> None:
    """``folder`` as a run killed right after its step-``step`` checkpoint leaves it: the run's record
    and that checkpoint, nothing written after it (no later checkpoint, log or final adapter). Made
    from the uninterrupted run's files rather than by a SIGKILL: torchrun starts each worker in a
    session of its own, so killing the launcher's process group leaves the workers running, and a
    kill timed on a loaded 2-core machine lands at a different step each time."""
    os.makedirs(folder)
    shutil.copy(os.path.join(run, "run.json"), folder)
    shutil.copytree(os.path.join(run, f"checkpoint-{step}"), os.path.join(folder, f"checkpoint-{step}"))


def online_trainer(method: str, argv: list[str]):
    """A SCoRe or K-round RL trainer parsed from command-line arguments, not yet set up."""
    from train import kround, score
    from train.run import parse_training

    module, cls = {"score": (score, score.SCoReTrainer), "kround": (kround, kround.KRoundTrainer)}[method]
    setup, cfg = parse_training(module.config_types(), argv, prog="test")
    return cls(setup, cfg)


def launch(
    config: str,
    target: str | list[str],
    args: list[str],
    timeout: int | None = None,
    launcher_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``accelerate launch [launcher_args] --config_file accelerate_configs/<config>.yaml <target> <args>``
    from the repository root; ``target`` is a script path or ``["-m", module]``."""
    target = [target] if isinstance(target, str) else list(target)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher_args,
        "--config_file",
        f"accelerate_configs/{config}.yaml",
    ]
    return subprocess.run(
        [*cmd, *target, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **LAUNCH_ENV},
        timeout=timeout,
    )


def grpo_trl_args(**kw):
    """A stand-in for TRL's GRPOConfig with the fields train/grpo.py reads, ``kw`` overriding them."""
    from types import SimpleNamespace

    base = dict(
        max_completion_length=6,
        temperature=1.0,
        top_p=1.0,
        seed=0,
        ds3_gather_for_generation=True,
        gradient_checkpointing_kwargs=None,
        use_vllm=False,
        use_transformers_continuous_batching=False,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        fsdp="",
    )
    return SimpleNamespace(**{**base, **kw})
