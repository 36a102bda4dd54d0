"""K-round on-policy RL for convergence: reach the right answer early and keep it over K rounds.

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/kround.py --config recipes/demo/kround.yaml

Each episode is K self-correction rounds sampled from the current policy with the eval prompt set,
by the same rollout engine and the same conversation rendering as eval (round-incremental KV
cache; the ``num_generations`` episodes of a prompt share its prefill). The tokens trained on are
the tokens sampled. The task's scorer gives each round a reward r_1..r_K (1 = right for BBQ).

Per-round credit (``train.rewards.kround_returns``). Round s earns a reward u_s (below); the return of round t's tokens is the sum
of what rounds t..K earn, G_t = u_t + ... + u_K: a round cannot earn credit for what happened
before it, only for its own answer and the rounds that follow from it. ``reward_mode``:

- ``final``:       u_s = r_K if s = K else 0, so G_t = r_K for every round. Only where the
                   conversation ends counts; a right answer at round 2 that is later lost earns
                   nothing, and one reached at round K earns as much as one held from round 1.
- ``sum``:         u_s = r_s, so G_t = r_t + ... + r_K. Every round that is right counts, so being
                   right early (more rounds right) is worth more than being right late.
- ``convergence`` (default): u_s = r_s - flip_penalty * [round s-1 right and round s wrong]
                   + stable_bonus * [rounds s..K all right]. On top of ``sum``, abandoning a right
                   answer costs ``flip_penalty`` at the round that abandons it (the previous answer
                   is part of round s's context, so the round that flips is the one charged), and
                   each round from which the answer stays right to the end adds ``stable_bonus``:
                   converging to the right answer at round c adds stable_bonus * (K - c + 1) to
                   every return up to round c, so the earlier the model settles, the more it earns.
                   "Right" is the grader's ``correct`` flag, not the reward: toxicity's reward
                   1 - P(toxic) never reaches 1, while its ``correct`` (toxicity under threshold) does.

``change_penalty`` (any mode, default 0): u_s -= change_penalty * [answer at s != answer at s-1],
charged at the round that changes. ``flip_penalty`` charges only right -> wrong; this charges every
change of the parsed answer, wrong -> wrong and wrong -> right included (and a change to or from
"unparsed"). It rewards keeping whatever answer was given, so on its own it favours never
revising: a model that never changes its first answer loses nothing to it, whether that answer is
right or wrong. With ``reward_mode: convergence`` the accuracy and stability terms still pay for
being right, so a wrong -> right change is worth making when r + stable bonuses exceed the charge
(with the defaults and change_penalty 1, fixing at round s earns 1 + 0.5 (K - s + 1) per later
round against 1 once). It needs answers that are choices or values (BBQ's letters, GSM8K's
numbers); toxicity's "answer" is a score, and the trainer refuses the knob there.

Stopping (``stop_when: stable | confident``, selfcorrect.rollout.StopRule): an episode stops once its
answer has settled; it ran c <= K rounds. Rounds c+1..K are not sampled: they carry round c's
reward, verdict and answer (r_s = r_c for s > c), so every episode has K returns and the baseline is
defined at every round index; they own no tokens, so they add nothing to the loss. ``round_cost``
(default 0) charges every round that ran: u_s -= round_cost for s <= c. What this optimises, per
episode: the sum over s = 1..K of u_s, i.e. the reward of every round with the settled answer
counted for the rounds it was not asked again, minus round_cost * c. A right answer settled at
round c earns its reward for every round to K and is charged for c rounds only, so settling early
on a right answer earns more; settling on a wrong answer keeps its low reward to K. With
``stop_when: never`` and ``round_cost: 0`` the returns are those above, unchanged.

Advantages are per round with a leave-one-out baseline over the G episodes of the same prompt at
the same round index (train/online_rl.py), so round t is compared only with round t of the other
episodes. A KL penalty ``beta`` to the reference (LoRA: the adapter disabled) applies to every
generated token of every round (k3 estimator). The loss is REINFORCE with these per-round
advantages, shared with SCoRe (train/score.py), which is the K = 2 case with its own returns and
KL weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfcorrect.cli import run_cli
from selfcorrect.config import StopConfig, check_range
from selfcorrect.errors import UserError
from selfcorrect.rollout import StopRule
from selfcorrect.tasks import task_and_prompt_set
from train.online_rl import OnlineRLTrainer, run_trainer
from train.online_rl_config import OnlineRLConfig
from train.rewards import kround_returns
from train.rl_functions import Episode
from train.run import training_config_types


@dataclass
class KRoundConfig(OnlineRLConfig, StopConfig):
    """K-round RL: episodes, returns and the optimizer."""

    output_dir: str = field(default="outputs/kround", metadata={"help": "Where the adapter, card and log go."})
    rounds: int = field(default=3, metadata={"help": "Rounds K per episode (at most the K you evaluate with)."})
    reward_mode: Literal["final", "sum", "convergence"] = field(default="convergence", metadata={"help": "See train/kround.py."})
    flip_penalty: float = field(default=1.0, metadata={"help": "convergence: cost of turning a right answer wrong."})
    stable_bonus: float = field(default=0.5, metadata={"help": "convergence: bonus per round right from there to K."})
    change_penalty: float = field(
        default=0.0,
        metadata={"help": "Cost of every change of answer, in any mode."},
    )
    beta: float = field(default=0.01, metadata={"help": "KL weight on every generated token (SCoRe's beta1)."})
    round_cost: float = field(default=0.0, metadata={"help": "Cost of every round that runs (see train/kround.py)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        StopConfig.__post_init__(self)
        check_range("round_cost", self.round_cost, 0.0)
        if self.rounds < 2:
            raise UserError(f"rounds must be >= 2 for self-correction (got {self.rounds})")
        if self.beta < 0 or self.flip_penalty < 0 or self.stable_bonus < 0 or self.change_penalty < 0:
            raise UserError("beta, flip_penalty, stable_bonus and change_penalty must be >= 0")


class KRoundTrainer(OnlineRLTrainer):
    method = "kround"

    def rounds(self) -> int:
        return self.cfg.rounds

    def setup(self) -> None:
        task, _ = task_and_prompt_set(self.setup_args.task)  # checked before any model loads
        if self.cfg.change_penalty and not task.discrete_answers:
            raise UserError(
                f"change_penalty needs answers that are choices or values; task {task.name}'s answer is a score, "
                "so every sample would count as a change"
            )
        super().setup()

    def stop_rule(self) -> StopRule | None:
        return StopRule.of(self.cfg) if self.cfg.stop_when != "never" else None

    def episode_returns(self, ep: Episode, step: int) -> list[float]:
        c = self.cfg
        return kround_returns(
            ep.rewards,
            c.reward_mode,
            c.flip_penalty,
            c.stable_bonus,
            ep.correct,
            ep.answers,
            c.change_penalty,
            c.round_cost,
            ep.stop_round,
        )

    def kl_coefs(self, step: int) -> list[float]:
        return [self.cfg.beta] * self.cfg.rounds

    def objective(self) -> str:
        c = self.cfg
        what = {
            "final": "G_t = r_K (final-round reward)",
            "sum": "G_t = r_t + ... + r_K",
            "convergence": f"G_t = sum over s >= t of r_s - {c.flip_penalty}*[right->wrong at s] + {c.stable_bonus}*[right from s to K]",
        }[c.reward_mode]
        if c.change_penalty:
            what += f", - {c.change_penalty}*[answer changed at s] in every u_s"
        if c.round_cost:
            what += f", - {c.round_cost} in u_s of every round that ran"
        if c.stop_when != "never":
            what += f"; episodes stop by stop_when {c.stop_when}, later rounds carry the last answer and reward"
        return (
            f"K-round on-policy REINFORCE over {c.rounds} rounds, reward_mode {c.reward_mode}: {what}; "
            f"leave-one-out baseline per round; - {c.beta}*KL on every generated token"
        )


def config_types() -> list[type]:
    """The configs this entry point parses (recipes and tests read them here)."""
    return training_config_types(KRoundConfig)


def main(argv: list[str]) -> None:
    run_trainer(KRoundTrainer, KRoundConfig, argv, prog="train/kround.py", description=__doc__)


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
