"""Chat rendering, in one place for data_gen, eval and training: the prompt of the next assistant
turn (with an optional prefill), a prompt whose last assistant message is a prefill, and a
conversation tokenised with a mask on the tokens the model produced.

Every stage renders through ``render_chat``, so a turn the model was trained on is the same text
as the turn it continues at eval (templates that trim or pad an assistant turn's content included).
"""

from __future__ import annotations

from typing import Any

from selfcorrect.errors import UserError

_PREFILL_END = "\ue000prefill-end\ue000"  # a private-use marker no template rewrites


def render_chat(tokenizer: Any, messages: list[dict[str, str]], prefill: str | None = None) -> str:
    """The chat-template prompt for the next assistant turn, which starts with ``prefill``.

    A prefill is rendered the way the template renders an assistant turn that begins with it:
    some templates put a space before the content (Mistral) or trim it (Llama 3), and a prompt
    built as generation prompt + prefill would then differ from the same turn once it is part of
    the conversation (the context of the next round, and of SFT/RL training).
    """
    if not prefill:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turn = [*messages, {"role": "assistant", "content": prefill + _PREFILL_END}]
    text = tokenizer.apply_chat_template(turn, tokenize=False)
    cut = text.find(_PREFILL_END)
    if cut < 0 or not text[:cut].endswith(prefill):  # a template that rewrites content: plain prefill
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
    return text[:cut]


def assistant_spans(
    tokenizer, messages: list[dict[str, str]], prefills: list[str | None] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, per assistant turn, the character span the model produces.

    A span runs from the end of that round's prompt (the generation prompt and the turn's prefill,
    rendered by the same function data_gen and eval use) to the end of the turn, end-of-turn token
    included. Works for any template that renders a conversation's prefixes as prefixes of the whole
    (ChatML, Llama 3, Mistral, Qwen do), so no ``{% generation %}`` markers are needed.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    turn = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefill = prefills[turn] if prefills else None
        turn += 1
        before = render_chat(tokenizer, messages[:i], prefill)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise UserError(
                "the chat template does not render this conversation's prefixes as prefixes of the whole "
                f"(assistant turn {turn}); cannot tell which tokens the model produced"
            )
        spans.append((len(before), len(upto.rstrip("\n"))))
    return full, spans


def tokenize_conversation(
    tokenizer,
    messages: list[dict[str, str]],
    train_turns: list[bool] | None = None,
    prefills: list[str | None] | None = None,
    max_length: int | None = None,
):
    """input_ids and assistant_masks: 1 on the tokens the model produced in the assistant turns
    selected by ``train_turns`` (all when None); prefills and every other turn are 0."""
    full, spans = assistant_spans(tokenizer, messages, prefills)
    if train_turns is not None:
        if len(train_turns) != len(spans):
            raise UserError(f"train_turns has {len(train_turns)} entries for {len(spans)} assistant turns")
        spans = [sp for sp, keep in zip(spans, train_turns) if keep]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    ids = enc["input_ids"]
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return {"input_ids": ids, "assistant_masks": mask}


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """Chat-template text of a prompt; a trailing assistant message is a prefill the model continues.

    (TRL's GRPOTrainer always adds a fresh generation prompt after conversational prompts, which
    would close the prefill turn, so RL prompts are rendered here and passed to TRL as text.)
    """
    if messages and messages[-1]["role"] == "assistant":
        return render_chat(tokenizer, messages[:-1], messages[-1]["content"])
    return render_chat(tokenizer, messages)
