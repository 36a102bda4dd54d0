"""eval's own options (the shared ones are in selfcorrect/config.py)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from selfcorrect.config import check_range


@dataclass
class EvalConfig:
    """Metrics, intervals, the concept probe and logging."""

    label: str | None = field(
        default=None,
        metadata={"help": "Run name in reports (default: the adapter's folder name, or 'base')."},
    )
    epsilon: float = field(default=0.01, metadata={"help": "Convergence: metric within epsilon of its final value."})
    delta: float = field(default=0.05, metadata={"help": "Convergence: the flip rate stays at or below delta."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95 percent intervals."})
    probe: bool = field(default=False, metadata={"help": "Fit a concept probe; report it per round."})
    probe_layer: int | None = field(default=None, metadata={"help": "Layer whose output is probed (default: the middle one)."})
    probe_statements: str = field(
        default="task", metadata={"help": "'task' (the task's own statements, e.g. BBQ's) or a .jsonl of {text, label}."}
    )
    probe_max_statements: int = field(default=400, metadata={"help": "Statements used to fit the probe."})
    report_to: Literal["none", "wandb"] = field(default="none", metadata={"help": "none | wandb (metrics and plots)."})

    def __post_init__(self) -> None:
        check_range("n_boot", self.n_boot, 1)
        check_range("epsilon", self.epsilon, 0.0)
        check_range("delta", self.delta, 0.0, 1.0)
        check_range("probe_max_statements", self.probe_max_statements, 2)


def wandb_mode_for(report_to: str) -> None:
    """Check before any work that wandb can log: without a key (and no mode set), log offline and say so."""
    if report_to != "wandb" or os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return
    has_netrc = os.path.isfile(os.path.expanduser("~/.netrc")) and "api.wandb.ai" in open(os.path.expanduser("~/.netrc")).read()
    if not os.environ.get("WANDB_API_KEY") and not has_netrc:
        os.environ["WANDB_MODE"] = "offline"
        print("note: report_to wandb without a WANDB_API_KEY: logging offline (wandb sync uploads it later)", file=sys.stderr)
