"""SCoRe: self-correction via two-attempt online RL (Kumar et al. 2024, arXiv 2409.12917).

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/score.py --config recipes/demo/score.yaml

Each episode is two rounds sampled on-policy by the rollout engine, exactly as eval runs them:
attempt 1 (y1) to the first turn x1, then the prompt set's correction instruction p, then attempt
2 (y2) to x2 = the rendered conversation [x1, y1, p]. Attempt 2 reuses attempt 1's KV cache. The
tokens trained on are the sampled ones, each in the context it was sampled in
(train/online_rl.py), so templates that trim or re-render an answer (Llama 3, Mistral) and
models with several end-of-turn tokens are handled.

Objective (paper, Sec. 5), with r_t = the task's reward of attempt t:
- Stage I (the first ``stage1_steps`` steps, Eq. 3): maximise E[r2] while a strong KL penalty
  ``beta2`` holds attempt 1 near the base model; the default KL ``beta1`` stays on attempt 2 (the
  paper keeps the usual KL penalty on the policy with a smaller weight beside beta2).
- Stage II (Eq. 4 with the Sec. 5.2 bonus): maximise r1 + r2 with KL ``beta1`` on both attempts,
  plus a shaping bonus alpha * (r2 - r1) that the paper adds "to the second attempt" only.

Credit per token (REINFORCE with reward-to-go, ``train.rewards.score_returns``):

    stage I :  attempt 1 <- r2          attempt 2 <- r2
    stage II:  attempt 1 <- r1 + r2     attempt 2 <- r2 + alpha * (r2 - r1)

Attempt 1 is credited the unshaped return of the episode from its turn on (its own reward and the
second attempt it leads to). The bonus is kept out of it on purpose: alpha * (r2 - r1) falls by
alpha when the first answer is right, so crediting it to attempt 1 would teach worse first answers
(with alpha = 10, a correct first answer would cost 9 reward units), against the paper's aim that
first-attempt accuracy should not degrade (its Table 3: attempt-1 accuracy rises, 52.6 -> 60.0).
Defaults are the paper's: alpha = 10, beta1 = 0.01, beta2 = 0.1, temperature 1.0.

What the bonus does in expectation, credited this way. Attempt 2's return is (1 + alpha) r2 -
alpha r1. Given attempt 2's context [x1, y1, p], r1 is fixed, so -alpha r1 is a baseline: its
expected gradient is zero. What remains is (1 + alpha) r2, which multiplies attempt 2's gradient by
1 + alpha whether the episode keeps a right answer or fixes a wrong one: the bonus does not make
fixing worth more than keeping. In an exact two-state case (signals audit, 2026-12-01)
the expected attempt-2 gradient for keep / fix is 0.504 / 0.336 at alpha 0 and 5.544 / 3.696 at
alpha 10 (both x11, ratio unchanged). What it does change is scale and variance: at alpha 10,
attempt-2 advantages reach +-14 to +-21 against +-2 for attempt 1, before gradient clipping, so
attempt 2 dominates the clipped update. The paper adds the bonus to the reward of a policy
gradient over both attempts; a variant that favours fixing would have to credit something that
depends on y2 differently for fixing and keeping, and none is offered here.

Where this departs from the paper:
(1) a leave-one-out baseline per attempt over the ``num_generations`` episodes of each prompt
    reduces variance (the paper states REINFORCE without naming a baseline);
(2) Stage I and Stage II run in one job, split by step count, instead of a schedule that may
    repeat the stages;
(3) the KL is a loss term on the sampled tokens (the k3 estimator, as in GRPO) rather than a
    penalty folded into the reward;
(4) the reference is the model at the start of training (with LoRA: the adapter disabled), not
    re-anchored between stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfcorrect.cli import run_cli
from selfcorrect.errors import UserError
from train.online_rl import OnlineRLTrainer, run_trainer
from train.online_rl_config import OnlineRLConfig
from train.rewards import score_returns
from train.run import training_config_types


@dataclass
class SCoReConfig(OnlineRLConfig):
    """SCoRe: stages, rewards, KL weights and the optimizer."""

    output_dir: str = field(default="outputs/score", metadata={"help": "Where the adapter, card and log go."})
    stage1_steps: int = field(default=30, metadata={"help": "Steps of Stage I before Stage II starts."})
    alpha: float = field(default=10.0, metadata={"help": "Stage II bonus alpha * (r2 - r1), second attempt only (paper: 10)."})
    beta1: float = field(
        default=0.01, metadata={"help": "KL weight on attempt 2 in Stage I and on both attempts in Stage II (paper: 0.01)."}
    )
    beta2: float = field(default=0.1, metadata={"help": "KL weight on attempt 1 in Stage I (paper: 0.1)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.stage1_steps < self.max_steps:
            raise UserError(
                f"stage1_steps must be in [0, max_steps={self.max_steps}) so that Stage II runs (got {self.stage1_steps})"
            )
        if self.beta1 < 0 or self.beta2 < 0:
            raise UserError("beta1 and beta2 must be >= 0")


class SCoReTrainer(OnlineRLTrainer):
    method = "score"

    def rounds(self) -> int:
        return 2

    def stage(self, step: int) -> int:
        return 1 if step < self.cfg.stage1_steps else 2

    def returns(self, rewards: list[float], step: int) -> list[float]:
        return list(score_returns(rewards[0], rewards[1], self.stage(step), self.cfg.alpha))

    def kl_coefs(self, step: int) -> list[float]:
        c = self.cfg
        return [c.beta2, c.beta1] if self.stage(step) == 1 else [c.beta1, c.beta1]

    def extra_log(self, step: int, rewards: list[list[float]]) -> dict:
        return {"stage": self.stage(step)}

    def objective(self) -> str:
        c = self.cfg
        return (
            f"SCoRe two-attempt RL (Kumar et al. 2024): Stage I ({c.stage1_steps} steps) max r2 - {c.beta2}*KL(attempt 1)"
            f" - {c.beta1}*KL(attempt 2); Stage II max r1 + r2 + {c.alpha}*(r2 - r1) [bonus on attempt 2's tokens only]"
            f" - {c.beta1}*KL(both attempts)"
        )


def config_types() -> list[type]:
    """The configs this entry point parses (recipes and tests read them here)."""
    return training_config_types(SCoReConfig)


def main(argv: list[str]) -> None:
    run_trainer(SCoReTrainer, SCoReConfig, argv, prog="train/score.py", description=__doc__)


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
