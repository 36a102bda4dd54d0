"""Traces -> TRL-ready datasets (pure Python: dicts in, dicts out).

- ``sft.jsonl``: ``messages`` conversations that end in a correct revision. Sources (``sft_sources``):
  ``final_correct`` (the whole trace when its last round is correct), ``improving`` (the trace up to
  its first wrong -> right revision), ``rationalised`` (a wrong first answer, the review instruction,
  then the gold answer as the revision), ``gold_stable`` (every round states the gold answer and
  keeps it) and ``self_consistent`` (every round repeats the model's own round-1 answer, right or
  wrong; every turn is trained). The last two are controls for a study of stability: a model
  trained on ``gold_stable`` may keep its answer or may only have learned the gold letters;
  ``self_consistent`` teaches keeping an answer and nothing about which one is right.
- ``dpo.jsonl``: ``prompt`` (conversation up to a correction instruction) / ``chosen`` / ``rejected``
  (one assistant message each). Sources (``dpo_sources``): ``switched`` (keeping the earlier correct
  answer is chosen over switching to a wrong one), ``improved`` (the correct revision over repeating
  the wrong answer), ``samples`` (two sampled responses to the same conversation with different
  rewards, best over worst), ``rationalised`` (the gold answer over a wrong revision).
- ``rl.jsonl``: first-turn ``prompt`` (SCoRe samples both attempts), ``revision_prompt`` (the first
  attempt plus the correction instruction, for GRPO on the revision), the first attempt's reward,
  and ``example`` (JSON text of the task example, which the reward functions score against).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from selfcorrect.prompts import PromptSet
from selfcorrect.tasks.base import Task
from selfcorrect.trace import Round, Trajectory, conversation

SFT_SOURCES = ("final_correct", "improving", "rationalised", "gold_stable", "self_consistent")
DPO_SOURCES = ("switched", "improved", "samples", "rationalised")


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def answer_after(response: str, own_prefill: str | None, prefill: str | None) -> str:
    """A response (written after ``own_prefill``) as the text that follows ``prefill`` in a round that
    starts with it: the response itself when the round has a prefill (it continues a prefill of the
    same role, "...the single most likely answer choice is" + " C."); when the round has none, the
    response with its own prefill, so a continuation ("...avoids bias or stereotyping." + " The old
    man ...") is never shown as a whole answer.

    >>> answer_after(" C.", "The answer is", "On review, the answer is"), answer_after(" so C.", "Let's think", None)
    (' C.', "Let's think so C.")
    """
    return response if prefill else (own_prefill or "") + response


def review_user(trace: Trajectory, prompt_set: PromptSet, r: int = 1) -> str:
    # A trace of one round has no review turn of its own; rows that continue its first answer (the
    # rationalised revision, the RL revision prompt) then take the prompt set's review turn, without
    # feedback.
    return (trace.rounds[r].user or "") if len(trace.rounds) > r else prompt_set.review_turn("")


def provenance(trace: Trajectory, prompt_set: PromptSet) -> dict[str, Any]:
    """What a trainer checks its recipe against: the task and the prompt set the rows were made with."""
    return {"task": trace.task, "prompt_set": prompt_set.name, "prompt_set_version": prompt_set.version}


def sft_rows(trace: Trajectory, task: Task, prompt_set: PromptSet, sources: Iterable[str]) -> list[dict[str, Any]]:
    """SFT conversations of one trace. Each row says, per assistant turn, whether the turn is correct
    (``train_turns``: only correct turns carry loss by default; wrong ones stay as context) and which
    prefill it starts with (``prefills``: given to the model at eval, so never trained on)."""
    rounds, out = trace.rounds, []
    base = {"id": trace.id, "sample": trace.sample, **provenance(trace, prompt_set)}
    # Wrong turns stay in a conversation as context (the revision is only meaningful after them) but
    # carry no loss: the model learns the correction, not the mistake.

    def row(source: str, upto: int, extra: tuple[tuple[str, str | None, str], ...] = ()) -> dict[str, Any]:
        """rounds[:upto] plus ``extra`` (user turn, prefill, answer) turns, which are trained (the gold
        answer, or for ``self_consistent`` the model's own first answer kept, right or wrong)."""
        # Assistant turns hold prefill + response, as the conversation of the next round holds them;
        # ``prefills`` lets the trainer mask the prefill, which the model is given, never writes.
        msgs = conversation(rounds, upto)
        flags = [r.correct for r in rounds[:upto]]
        prefills = [r.prefill for r in rounds[:upto]]
        for user, prefill, answer in extra:
            msgs += [{"role": "user", "content": user}] + _assistant((prefill or "") + answer)
            flags.append(True)
            prefills.append(prefill)
        return {**base, "source": source, "messages": msgs, "train_turns": flags, "prefills": prefills}

    if "final_correct" in sources and rounds and rounds[-1].correct:
        out.append(row("final_correct", len(rounds)))
    # Cut at the first wrong -> right revision, so the row ends in a correct revision (later rounds
    # may undo it).
    if "improving" in sources:
        for r in range(1, len(rounds)):
            if rounds[r].correct and not rounds[r - 1].correct:
                out.append(row("improving", r + 1))
                break
    # A wrong first answer the model never corrected itself still yields a correction: the gold answer
    # written as the revision (a correction the model's own traces lack when it rarely self-corrects).
    if "rationalised" in sources and rounds and not rounds[0].correct:
        gold = task.gold_response(trace.example)
        out.append(row("rationalised", 1, ((review_user(trace, prompt_set), prompt_set.review_prefill, gold),)))
    if rounds and "gold_stable" in sources:
        gold = task.gold_response(trace.example)
        out.append(row("gold_stable", 0, tuple((r.user or "", r.prefill, gold) for r in rounds)))
    if rounds and "self_consistent" in sources:
        first = rounds[0]
        # The round-1 answer shown after each round's own prefill (answer_after), so a kept answer
        # reads as a whole turn whatever prefill the round starts with.
        out.append(
            row(
                "self_consistent",
                0,
                tuple((r.user or "", r.prefill, answer_after(first.response, first.prefill, r.prefill)) for r in rounds),
            )
        )
    return out


def dpo_rows_in_trace(trace: Trajectory, task: Task, prompt_set: PromptSet, sources: Iterable[str]) -> list[dict[str, Any]]:
    """Pairs between consecutive rounds of one trace; each completion is presented as round r's answer
    after round r's conversation (``answer_after``: after round r's prefill, or with its own prefill
    when round r has none)."""
    rounds, out = trace.rounds, []
    for r in range(1, len(rounds)):
        prev, cur = rounds[r - 1], rounds[r]
        # The prompt ends at round r's instruction; chosen and rejected are whole assistant turns, each
        # starting with round r's prefill, the turn the model continues at eval. The shared prefill adds
        # the same log-ratio to both sides, so it cancels in DPO's margin (Rafailov et al. 2023).
        prompt = conversation(rounds, r) + [{"role": "user", "content": cur.user or ""}]
        prefill = cur.prefill or ""
        # "Keep the earlier answer" is the previous round's response given again as this round's turn.
        kept = prefill + answer_after(prev.response, prev.prefill, cur.prefill)
        pair = None
        if prev.correct and not cur.correct and "switched" in sources:
            pair = ("switched", kept, cur.assistant_text())
        elif cur.correct and not prev.correct and "improved" in sources:
            pair = ("improved", cur.assistant_text(), kept)
        elif not cur.correct and not prev.correct and "rationalised" in sources:
            pair = ("rationalised", prefill + task.gold_response(trace.example), cur.assistant_text())
        # Identical chosen and rejected have a zero margin and no gradient: no signal, so no row.
        if pair and pair[1] != pair[2]:
            out.append(
                {
                    "id": trace.id,
                    **provenance(trace, prompt_set),
                    "round": r + 1,
                    "source": pair[0],
                    "prompt": prompt,
                    "chosen": _assistant(pair[1]),
                    "rejected": _assistant(pair[2]),
                }
            )
    return out


def dpo_rows_across_samples(traces: list[Trajectory], prompt_set: PromptSet) -> list[dict[str, Any]]:
    """Best-vs-worst pairs among responses to identical conversations (same example, same history)."""
    # Only responses to the same conversation compare: a reward difference after different histories
    # may come from the history. Round 1 always matches across samples; later rounds only where the
    # earlier answers were identical.
    groups: dict[str, list[tuple[list, Round]]] = {}
    for t in traces:
        for r, rnd in enumerate(t.rounds):
            prompt = conversation(t.rounds, r) + [{"role": "user", "content": rnd.user or ""}]
            groups.setdefault(json.dumps(prompt), []).append((prompt, rnd))
    out = []
    for items in groups.values():
        if len(items) < 2:
            continue
        # Best over worst: the widest reward gap of the group, one pair per conversation.
        best = max(items, key=lambda x: x[1].reward)
        worst = min(items, key=lambda x: x[1].reward)
        if best[1].reward > worst[1].reward and best[1].assistant_text() != worst[1].assistant_text():
            out.append(
                {
                    "id": traces[0].id,
                    **provenance(traces[0], prompt_set),
                    "round": len(best[0]) // 2 + 1,  # two messages per earlier round, then this round's user turn
                    "source": "samples",
                    "prompt": best[0],
                    "chosen": _assistant(best[1].assistant_text()),
                    "rejected": _assistant(worst[1].assistant_text()),
                }
            )
    return out


def rl_row(trace: Trajectory, prompt_set: PromptSet) -> dict[str, Any]:
    first = trace.rounds[0]
    revision_prompt = conversation(trace.rounds, 1) + [{"role": "user", "content": review_user(trace, prompt_set)}]
    if prompt_set.review_prefill:  # TRL continues a trailing assistant message
        revision_prompt += _assistant(prompt_set.review_prefill)
    # The first-turn prompt alone: SCoRe samples both attempts itself (Kumar et al. 2024).
    prompt = [{"role": "user", "content": first.user or ""}]
    if prompt_set.first_prefill:
        prompt += _assistant(prompt_set.first_prefill)
    return {
        "id": trace.id,
        **provenance(trace, prompt_set),
        "prompt": prompt,
        "revision_prompt": revision_prompt,
        "first_response": first.response,
        "first_reward": first.reward,
        "first_correct": first.correct,
        "example": json.dumps(trace.example.to_dict(), ensure_ascii=False),
    }


def build_all(
    traces: Iterable[Trajectory | dict[str, Any]],
    task: Task,
    prompt_set: PromptSet,
    sft_sources: Iterable[str] = ("final_correct", "improving"),
    dpo_sources: Iterable[str] = ("switched", "improved", "samples"),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream ("sft" | "dpo" | "rl", row) for every trace (a Trajectory or its dict), grouped by id."""
    # Traces of one example are consecutive (run_rounds writes them so): groupby then sees all of an
    # example's samples at once without holding the file in memory.
    sft_sources, dpo_sources = set(sft_sources), set(dpo_sources)
    typed = (t if isinstance(t, Trajectory) else Trajectory.from_dict(t) for t in traces)
    # Rows are built from the rounds a conversation ran: a round carried after its stop was never
    # generated, so it is no revision to train on (and would pair a turn with itself).
    typed = (dataclasses.replace(t, rounds=t.rounds[: t.rounds_run()]) if t.stop_round else t for t in typed)
    for _, grp in itertools.groupby(typed, key=lambda t: t.id):
        group = list(grp)
        # Samples of one example can give the same SFT conversation (gold_stable does without external
        # feedback): one copy each, so an example does not weigh more for having more samples.
        seen_sft: set[str] = set()
        for t in group:
            for row in sft_rows(t, task, prompt_set, sft_sources):
                key = json.dumps(row["messages"])
                if key not in seen_sft:
                    seen_sft.add(key)
                    yield "sft", row
            for row in dpo_rows_in_trace(t, task, prompt_set, dpo_sources):
                yield "dpo", row
        if "samples" in dpo_sources and len(group) > 1:
            for row in dpo_rows_across_samples(group, prompt_set):
                yield "dpo", row
        # One RL prompt per example: the trainer samples its own completions for it.
        yield "rl", rl_row(group[0], prompt_set)


def dataset_card(info: dict[str, Any], counts: Counter) -> str:
    lines = [
        "# selfcorrect correction datasets",
        "",
        "Built by `python -m data_gen` from multi-round self-correction traces (traces.jsonl).",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for k, v in info.items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "## Counts", "", "| file | source | rows |", "|---|---|---|"]
    for (kind, source), n in sorted(counts.items()):
        lines.append(f"| {kind}.jsonl | {source} | {n} |")
    lines += [
        "",
        "Load with `datasets.load_dataset('json', data_files='sft.jsonl', split='train')`.",
        "SFT rows hold `messages`; DPO rows `prompt`/`chosen`/`rejected` (conversational);",
        "RL rows `prompt` (first turn), `revision_prompt` (first attempt + correction instruction),",
        "`first_reward` and `example` (JSON text the task's scorer reads).",
        "",
    ]
    return "\n".join(lines)
