"""Where an on-policy step's time goes: sampling, the policy's pass (forward and backward), the
reference pass, the optimizer step and the weight push into a vLLM engine, with the tokens sampled
and trained per second. train/online_rl.py times its phases with a ``StepTimer`` and adds
``step_log`` to each step's log (the step log file and the tracker).

The seconds are wall time of this process's phases, summed over a step's micro-batches; on a GPU
each phase ends with a synchronize, so a kernel still running is not billed to the next phase.
Over several processes a phase counts the slowest process (the others wait for it at the next
collective) and the tokens are the sum over processes."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

PHASES = ("sampling", "weight_push", "policy_pass", "reference_pass", "optimizer_step")


class StepTimer:
    """Seconds per phase and tokens sampled/trained since the last ``step_log``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str):
        assert phase in PHASES, phase
        _synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize()
            self.seconds[phase] += time.perf_counter() - start

    def step_log(self, accelerator=None) -> dict[str, float]:
        """``time_<phase>`` seconds, ``time_step`` (their sum), ``tokens_sampled_per_s`` and
        ``tokens_trained_per_s``; then starts the next step from zero. One gather over processes.

        >>> t = StepTimer(); t.seconds.update(sampling=2.0, policy_pass=1.0); t.tokens.update(sampled=10, trained=40)
        >>> log = t.step_log(); log["time_step"], log["tokens_sampled_per_s"], log["tokens_trained_per_s"]
        (3.0, 5.0, 40.0)
        >>> t.step_log()["time_step"]
        0.0
        """
        row = [self.seconds[p] for p in PHASES] + [float(self.tokens["sampled"]), float(self.tokens["trained"])]
        if accelerator is not None and accelerator.num_processes > 1:
            import torch

            rows = accelerator.gather(torch.tensor([row], dtype=torch.float64, device=accelerator.device))
            row = rows[:, : len(PHASES)].max(0).values.tolist() + rows[:, len(PHASES) :].sum(0).tolist()
        secs = dict(zip(PHASES, row))
        sampled, trained = row[len(PHASES) :]
        train_s = secs["policy_pass"] + secs["reference_pass"] + secs["optimizer_step"]
        log = {f"time_{p}": secs[p] for p in PHASES}
        log["time_step"] = sum(secs.values())
        log["tokens_sampled_per_s"] = sampled / secs["sampling"] if secs["sampling"] > 0 else 0.0
        log["tokens_trained_per_s"] = trained / train_s if train_s > 0 else 0.0
        self.seconds.clear()
        self.tokens.clear()
        return log


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
