"""The trace: what one self-correction trajectory did, round by round. One line of traces.jsonl.

``Round`` is one round (the user turn, the assistant's prefill and response, the task's grade of
it, and what the model said about its options); ``Trajectory`` is the K rounds of one example
(and sample). Every stage reads and writes these types: the rollout engine makes them, data_gen
builds datasets from them, eval measures them, and the trainers' on-policy episodes are rounds too.
The conversation of round r is derived (``Trajectory.conversation``), never stored K times.
Pure Python: no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from selfcorrect.tasks.base import Example, Grade


@dataclass
class Round:
    user: str | None  # the round's user turn (None for predictions scored from outside)
    prefill: str | None  # text the assistant turn started with, given to the model
    response: str  # what the model generated after the prefill
    answer: str  # the task's reading of the response, or "unparsed"
    correct: bool
    reward: float  # the task's reward in [0, 1] (RL)
    grade: dict[str, Any] = field(default_factory=dict)  # the task's other grade fields (BBQ: is_unknown, is_biased)
    option_probs: dict[str, float] | None = None  # at the answer's label token, renormalised; None if never generated
    option_mass: float | None = None  # the option labels' total probability there before renormalising
    option_step: int | None = None  # index of the generated token option_probs were read at
    mean_logprob: float | None = None  # mean log-probability of the response's tokens under the model
    new_tokens: int | None = None
    finish: str | None = None  # "eos" | "length"
    external: bool = False  # the user turn carried information from outside the model (the scorer's verdict)
    probe_score: float | None = None  # eval's concept probe at the round's last prompt token
    probe_cosine: float | None = None
    # A round after the conversation stopped (``stop_when``): it was not generated, and carries the
    # last generated round's answer so fixed-K metrics stay comparable (docs/metrics.md, "Stopping").
    carried: bool = False

    @classmethod
    def graded(cls, user: str | None, prefill: str | None, response: str, grade: Grade, **generation: Any) -> Round:
        extra = {k: v for k, v in grade.to_dict().items() if k not in ("answer", "correct", "reward")}
        return cls(user, prefill, response, grade.answer, bool(grade.correct), float(grade.reward), extra, **generation)

    def assistant_text(self) -> str:
        """The assistant turn as the conversation holds it: prefill + response."""
        return (self.prefill or "") + self.response

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.carried:  # a run without stopping writes the traces it wrote before the rule existed
            del d["carried"]
        return d

    def carry(self) -> Round:
        """This round carried into a round that did not run: same answer and grade, no user turn,
        no tokens generated."""
        return dataclasses.replace(self, user=None, new_tokens=0, carried=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Round:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass
class Trajectory:
    id: str
    task: str
    prompt_set: str
    example: Example
    rounds: list[Round]
    sample: int = 0
    prompt_set_version: int | None = None
    model: str | None = None
    adapter: str | None = None
    # The last round generated (1-based) when the conversation stopped before round K; None when it ran
    # every round (or ran without a stopping rule).
    stop_round: int | None = None
    # Hidden states of each round's last prompt token, for eval's probe; never written to traces.
    hidden: list[list[float] | None] | None = field(default=None, repr=False, compare=False)

    def conversation(self, upto: int | None = None) -> list[dict[str, str]]:
        """Messages of rounds[:upto]: each round's user turn, then its assistant turn."""
        return conversation(self.rounds, upto)

    def rounds_run(self) -> int:
        """Rounds generated: the stop round, or every round."""
        return self.stop_round if self.stop_round is not None else len(self.rounds)

    def to_dict(self) -> dict[str, Any]:
        stop = {} if self.stop_round is None else {"stop_round": self.stop_round}
        return {
            "id": self.id,
            "sample": self.sample,
            "task": self.task,
            "prompt_set": self.prompt_set,
            "prompt_set_version": self.prompt_set_version,
            "model": self.model,
            "adapter": self.adapter,
            "example": self.example.to_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
            **stop,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        return cls(
            id=d["id"],
            task=d["task"],
            prompt_set=d.get("prompt_set", ""),
            example=Example.from_dict(d["example"]),
            rounds=[Round.from_dict(r) for r in d["rounds"]],
            sample=int(d.get("sample", 0)),
            prompt_set_version=d.get("prompt_set_version"),
            model=d.get("model"),
            adapter=d.get("adapter"),
            stop_round=d.get("stop_round"),
        )


def conversation(rounds: list[Round], upto: int | None = None) -> list[dict[str, str]]:
    """Messages of rounds[:upto]: each round's user turn, then its assistant turn (prefill + response)."""
    msgs: list[dict[str, str]] = []
    for r in rounds[:upto]:
        msgs.append({"role": "user", "content": r.user or ""})
        msgs.append({"role": "assistant", "content": r.assistant_text()})
    return msgs
