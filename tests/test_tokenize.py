"""Assistant masks from the chat template agree with TRL's {% generation %}-marker masks."""

from helpers import make_trace

from selfcorrect.chat import tokenize_conversation


def test_mask_matches_generation_markers(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    msgs = make_trace("Age/1", ["A", "C", "C"]).conversation()
    ours = tokenize_conversation(tok, msgs)
    ref = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours["input_ids"] == ref["input_ids"]
    assert ours["assistant_masks"] == ref["assistant_masks"]
    final = tokenize_conversation(tok, msgs, train_turns=[False, False, True])
    assert 0 < sum(final["assistant_masks"]) < sum(ours["assistant_masks"])
    # The last assistant turn's tokens are exactly the masked ones at the end.
    last = tok.encode(msgs[-1]["content"] + "<|im_end|>", add_special_tokens=False)
    idx = [i for i, m in enumerate(final["assistant_masks"]) if m]
    assert [final["input_ids"][i] for i in idx] == last
