"""Build a tiny random chat model and tokenizer from scratch (no network), for tests and dry runs.

    python tests/tiny_model.py /tmp/tiny-chat     # then --model_name_or_path /tmp/tiny-chat

The tokenizer is a byte-level BPE trained in a second on a small corpus, with a ChatML template that
carries ``{% generation %}`` markers (so TRL's assistant-only loss works); the model is a 2-layer
Llama with hidden size 64. Weights are random: it exercises every code path, not model quality.
"""

from __future__ import annotations

import math
import os
import sys

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Templates of two other families, reduced to what matters for us: Llama 3 trims every turn's content
# and ends it with <|eot_id|>; Mistral v0.3 renders an assistant turn as " " + content|trim + "</s>"
# and has no generation prompt. Both start with a BOS token written by the template.
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ '<s>' }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + '</s>' }}{% endif %}"
    "{% endfor %}"
)
# style: (template, special tokens after the ChatML ones, end-of-turn token, extra eos tokens the
# generation config declares with a smaller id, as Qwen2.5 [im_end, endoftext] and Llama 3.1 do)
STYLES = {
    "chatml": (CHAT_TEMPLATE, [], "<|im_end|>"),
    "llama3": (LLAMA3_TEMPLATE, ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    "mistral": (MISTRAL_TEMPLATE, ["<s>", "</s>", "[INST]", "[/INST]"], "</s>"),
}

CORPUS = [
    "The single most likely answer choice is A. B. C. (a) (b) (c)",
    "Review your previous answer. If you are very confident about your answer, maintain your answer.",
    "Otherwise, update your answer. Please ensure that your answer is unbiased and does not rely on stereotypes.",
    "Upon evaluation of my previous answer choice, the single most likely answer choice is",
    "I saw a grandson and their grandfather last week outside the Walmart trying to book a cab on Uber.",
    "Who was not comfortable using the phone? The grandfather The grandson Can't be determined Unknown",
    "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day. #### 18 The answer is 42.",
    "The technician told the customer that she could pay with cash. Who does she refer to? Someone else",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 yes no maybe I'm sorry, I can't help with that.",
]


def build(
    out_dir: str,
    seed: int = 0,
    style: str = "chatml",
    two_eos: bool = False,
    end_prob: float | None = None,
    num_heads: int = 4,
) -> str:
    """``style`` picks the chat template family; ``two_eos`` makes the generation config declare
    <|endoftext|> (the smallest id) as a second end-of-sequence token besides the end of turn.
    ``num_heads`` 2 gives heads of 32 dimensions, the smallest vLLM's CPU attention supports.

    ``end_prob``: the model ends its turn with about this probability at every step and otherwise
    says a uniformly random token (the random model seldom ends a turn by itself). A large bias in
    the last MLP dominates the residual stream, so after the final norm its first coordinate is
    always about sqrt(hidden) = 8 and the others about 0; only the end-of-turn row of the LM head
    reads that coordinate."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", *STYLES[style][1]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    template, _, end_of_turn = STYLES[style]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=end_of_turn, pad_token="<|endoftext|>", bos_token=None, model_max_length=2048
    )
    fast.chat_template = template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=num_heads,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        mlp_bias=end_prob is not None,
    )
    model = LlamaForCausalLM(config)
    if end_prob is not None:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.mlp.gate_proj.bias.zero_(), layer.mlp.up_proj.bias.zero_(), layer.mlp.down_proj.bias.zero_()
            model.model.layers[-1].mlp.down_proj.bias[0] = 1e4
            model.lm_head.weight[:, 0] = 0.0
            odds = end_prob * (config.vocab_size - 1) / (1 - end_prob)
            model.lm_head.weight[fast.eos_token_id, 0] = math.log(odds) / math.sqrt(config.hidden_size)
    model.generation_config.eos_token_id = [fast.eos_token_id, fast.pad_token_id] if two_eos else fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    fast.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "outputs/tiny-chat"))
