"""The multi-round rollout engine: conversations in, per-round records out.

One engine serves data_gen (make traces), eval (measure rounds) and online RL (sample attempts).

``HFGenerator.generate`` decodes a batch of rendered prompts with its own small loop over the model's
KV cache (greedy or temperature/top-p sampling, seeded), and returns per sequence: the text, the
token count, the finish reason, the mean token log-probability under the model (raw logits, not the
sampling distribution), the option distribution at every generated option-label token (" B", "B";
each step keeps only the log-probabilities of the label tokens), and optionally the hidden state of
the last prompt token at a chosen layer (captured by a forward hook during the prefill, for probes).

``run_rounds`` runs K self-correction rounds for a batch of examples: round r's conversation is
every earlier turn plus round r's instruction (and the prompt set's assistant prefill, if any).
A round's ``option_probs`` are read where the parsed answer's label token was first generated: the
first token after an answer prefill ("The single most likely answer choice is"), the letter after
"The answer is" in a chain of thought; None when the answer's label was never generated as a token
(an answer given as option text, or unparsed), and the metrics count those as skipped.

With a ``StopRule`` (``stop_when``) a conversation whose answer has settled stops: its later rounds
are not generated (the backends decode only the rows still running; ``HFGenerator.keep_rows`` drops
a stopped row's KV cache), and its trajectory carries its last round into them (``Round.carry``).
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from typing import Any

import torch

from selfcorrect.chat import render_chat
from selfcorrect.config import SamplingConfig
from selfcorrect.errors import UserError
from selfcorrect.prompts import PromptSet
from selfcorrect.tasks.base import UNPARSED, Example, Task
from selfcorrect.trace import Round, Trajectory


@dataclass
class OptionStep:
    """A generated token that is an option label (" B" or "B"), and the option distribution of the
    step that generated it: each label's probability (summed over its label tokens) renormalised
    over the labels, and the labels' total mass before renormalising (both None where the backend
    does not know every label token's probability at that step)."""

    step: int
    label: str
    probs: dict[str, float] | None
    mass: float | None
    chars: tuple[int, int] = (0, 0)  # the token's characters in the decoded response


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    new_tokens: int
    finish: str  # "eos" or "length"
    mean_logprob: float
    # Per generated token: log-prob under softmax(logits / temperature) (raw logits when greedy), the
    # quantity TRL's GRPO computes for the same tokens. GRPO's rollout_func hands it to TRL as the
    # sampler's log-probs; SCoRe and K-round RL do not use it: they recompute every log-prob with the
    # policy being trained (train/online_rl.py, token_logprobs), so their loss never reads the sampler's.
    token_logprobs: list[float] | None = None
    # Option label probabilities where the answer's label token was generated (see OptionStep);
    # None where no label token was generated (an answer given as option text, or none).
    option_probs: dict[str, float] | None = None
    option_mass: float | None = None  # total probability the option labels had before renormalising
    option_step: int | None = None  # index of the generated token option_probs was read at
    option_steps: list[OptionStep] | None = None  # every generated option-label token
    hidden: list[float] | None = None
    prompt_ids: list[int] | None = None  # the exact ids this was generated from (online RL trains on them)

    def read_options_at_first_label(self) -> None:
        """Set option_probs / option_mass / option_step from the first generated label token, before
        any answer is parsed; ``run_rounds`` then moves the reading to the parsed answer's label
        (``read_options_at_span``). None when no label was generated as a token."""
        self._read(next(iter(self.option_steps or []), None))

    def read_options_at_span(self, answer: str, span: tuple[int, int] | None) -> None:
        """Set option_probs from the label token of ``answer`` generated where the parse found the
        answer's letter (``span``: characters of the response); None when the answer was given as
        option text (``span`` None): a label word elsewhere ("A customer ... The answer is A") is not it."""
        hit = None
        if span is not None:
            hit = next(
                (o for o in self.option_steps or [] if o.label == answer and o.chars[0] < span[1] and o.chars[1] > span[0]), None
            )
        self._read(hit)

    def _read(self, hit: OptionStep | None) -> None:
        self.option_probs = None if hit is None else hit.probs
        self.option_mass = None if hit is None else hit.mass
        self.option_step = None if hit is None else hit.step


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer block list of a causal LM (also under a PEFT wrapper)."""
    # Found by name, not by a fixed path: architectures and PEFT nest it differently
    # (model.layers, base_model.model.model.layers); the shortest name is the outermost list.
    best = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith("layers") and len(module) > 0:
            if best is None or len(name) < len(best[0]):
                best = (name, module)
    if best is None:
        raise ValueError("cannot find the decoder layers of this model")
    return best[1]


def seed_for(seed: int, key: str) -> int:
    # crc32, not hash(): Python salts str hashes per process, and a rerun (or another rank) must draw
    # the same samples for the same seed and key.
    return zlib.crc32(f"{seed}:{key}".encode())


def row_seed_keys(seed_key: str | list[str], n: int) -> list[str]:
    """The sampling key of each of ``n`` prompts of one ``generate`` call: the keys given, one per
    prompt, or ``seed_key`` with the prompt's index in the call (never its batch), so a prompt's
    samples do not depend on how the call was cut into batches.

    >>> row_seed_keys("s0", 2), row_seed_keys(["a", "b"], 2)
    (['s0/0', 's0/1'], ['a', 'b'])
    """
    if isinstance(seed_key, str):
        return [f"{seed_key}/{i}" for i in range(n)]
    if len(seed_key) != n:
        raise ValueError(f"{len(seed_key)} seed keys for {n} prompts")
    return list(seed_key)


@dataclass
class RoundCache:
    """KV cache of one batch of trajectories, kept from one round to the next.

    ``mask`` marks which cache positions are real tokens of each row (left padding, tokens after an
    end-of-sequence, and tokens a later prompt no longer shares are 0); ``tokens`` lists each row's
    real tokens in order, so the next round can find how much of its prompt is already encoded.
    """

    kv: Any
    mask: torch.Tensor
    tokens: list[list[int]]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def end_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The ids that end a turn: the generation config's end-of-sequence ids and the tokenizer's."""
    # Both: chat models often end a turn with a token the generation config lists (<|im_end|>) while
    # the tokenizer's end-of-sequence is another (<|endoftext|>); stopping at either ends the turn.
    eos = set()
    for source in (generation_config, tokenizer):
        ids = getattr(source, "eos_token_id", None)
        eos |= set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    return sorted(eos)


class RolloutBackend:
    """What every generation backend shares with ``run_rounds``: the project's chat rendering, its
    end-of-turn ids and the option-label bookkeeping. A backend implements ``generate_ids`` and may
    override ``report``."""

    def __init__(self, tokenizer: Any, sampling: SamplingConfig | None, generation_config: Any):
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingConfig()
        self.eos_ids = end_token_ids(generation_config, tokenizer)
        # Many causal LM tokenizers have no pad token; padding is always masked out, so any id serves.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._label_ids: dict[str, list[int]] = {}

    def render(self, messages: list[dict[str, str]], prefill: str | None = None) -> str:
        return render_chat(self.tokenizer, messages, prefill)

    def label_token_ids(self, label: str) -> list[int]:
        """First-token ids that start answering with ``label`` (" A" and "A" variants)."""
        if label not in self._label_ids:
            # Both variants: after "is" the label comes as " B", at the start of a line as "B". Only the
            # first token counts: it is the step where the model chooses the label.
            ids = set()
            for variant in (f" {label}", label):
                toks = self.tokenizer.encode(variant, add_special_tokens=False)
                if toks:
                    ids.add(toks[0])
            self._label_ids[label] = sorted(ids)
        return self._label_ids[label]

    def generate(
        self,
        prompts: list[str],
        option_labels: list[list[str] | None] | None = None,
        seed_key: str | list[str] = "",
        session: dict | None = None,
    ) -> list[Generation]:
        """Decode every prompt (already rendered text, encoded here by the project's tokenizer).

        ``seed_key``: one sampling key per prompt, or a prefix to which each prompt's index in the
        call is added (``row_seed_keys``); a prompt's random stream depends on its key alone.

        Pass the same ``session`` dict on every round of a multi-round rollout (same trajectories in
        the same order): the HF engine keeps each batch's KV cache in it from one round to the next.
        """
        # No special tokens added: the chat template already wrote them, and a second BOS would make
        # the ids differ from the rendered prompt.
        ids = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        return self.generate_ids(ids, option_labels, seed_key, session)

    def generate_ids(self, prompt_ids, option_labels=None, seed_key="", session=None) -> list[Generation]:
        """Decode every tokenized prompt (``list[list[int]]``), with the arguments of ``generate``."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate_ids")

    def report(self) -> str | None:
        """A line for the user once a run has finished (e.g. the engine's throughput), or None."""
        return None

    def keep_rows(self, session: dict, keep: list[int]) -> None:
        """The next ``generate`` with this ``session`` continues only rows ``keep`` (increasing
        indices) of the previous call: a backend that keeps state per row drops the others'. vLLM's
        prefix cache needs nothing."""

    def _option_steps(self, text_ids: list[int], labels: list[str], prob: Any) -> list[OptionStep]:
        """The option distribution at every generated token of ``text_ids`` that is one of ``labels``'
        label tokens. ``prob(step, token_id)`` is that token's probability at that step, or None where
        the backend does not know it (vLLM returns the top log-probabilities only): such a step gets
        ``probs`` None, an absent reading, never a zero."""
        label_of = {i: lab for lab in labels for i in self.label_token_ids(lab)}
        out = []
        for step, tid in enumerate(text_ids):
            if tid in label_of:
                per_token = {lab: [prob(step, i) for i in self.label_token_ids(lab)] for lab in labels}
                probs, mass = None, None
                if all(p is not None for ps in per_token.values() for p in ps):
                    # Renormalised over the labels: the option distribution given that the model names
                    # an option; ``mass`` keeps how much probability the labels had, so a step where
                    # the model was not answering with a label can be told apart.
                    raw = {lab: sum(ps) for lab, ps in per_token.items()}
                    mass = sum(raw.values())
                    probs = {k: (v / mass if mass > 0 else 1.0 / len(raw)) for k, v in raw.items()}
                # The token's characters in the decoded text, to match it with where the parser found
                # the answer's letter (read_options_at_span).
                start = len(self.tokenizer.decode(text_ids[:step], skip_special_tokens=True))
                end = len(self.tokenizer.decode(text_ids[: step + 1], skip_special_tokens=True))
                out.append(OptionStep(step=step, label=label_of[tid], probs=probs, mass=mass, chars=(start, end)))
        return out

    def _generation(self, row: list[int], mean_logprob: Any, labels: list[str] | None, prob: Any) -> Generation:
        """A Generation from the generated ids ``row``, cut at the first end-of-turn id, which is kept
        in ``token_ids`` and counted in ``new_tokens`` (so every backend records a round alike).
        ``mean_logprob(n)`` is the mean log-probability of the first n tokens; ``prob`` as in
        ``_option_steps`` (None: no option labels to read)."""
        eos = set(self.eos_ids)
        n = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
        finish = "eos" if n and row[n - 1] in eos else "length"
        text_ids = row[: n - 1] if finish == "eos" else row[:n]
        g = Generation(
            text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
            token_ids=row[:n],
            new_tokens=n,
            finish=finish,
            mean_logprob=mean_logprob(n) if n else 0.0,
        )
        # Read at the first label token for now: the answer is parsed later, by the task, and run_rounds
        # then moves the reading to the parsed answer's label.
        if labels and prob is not None:
            g.option_steps = self._option_steps(text_ids, labels, prob)
            g.read_options_at_first_label()
        return g


class HFGenerator(RolloutBackend):
    """Batched decoding with per-round KV-cache reuse and shared prefill of repeated prompts.

    With ``incremental=True`` (the default) a batch's KV cache is kept between rounds: round r+1's
    prompt is compared token by token with what the cache already holds, the shared prefix (every
    earlier turn) is reused, and only the new tokens (the end of the last answer's turn, the new
    instruction, the generation prompt and prefill) are encoded. Positions that the new prompt does
    not share are masked out, so the model sees exactly the naive full re-encoding's tokens at the
    same positions. ``incremental=False`` re-encodes the whole conversation every round.

    Identical prompts in one batch (online RL samples a group of completions per prompt) are
    encoded once; the prefill's KV cache is then copied to every row of the group before decoding.
    With ``compact`` (the default), rows that have finished leave the batch once they are a quarter
    of it, so long answers do not keep finished rows computing padding.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sampling: SamplingConfig | None = None,
        batch_size: int = 8,
        probe_layer: int | None = None,
        incremental: bool = True,
        share_prefill: bool = True,
        compact: bool = True,
    ):
        super().__init__(tokenizer, sampling, getattr(model, "generation_config", None))
        self.model = model
        self.batch_size = batch_size
        self.probe_layer = probe_layer
        self.incremental = incremental
        self.share_prefill = share_prefill
        self.compact = compact
        # Positions past the model's context are not trained; a row stops generating there.
        self.context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self._told_capped = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _check_context(self, prompt_ids: list[list[int]]) -> None:
        """A prompt that fills the context is refused; one that leaves less room than max_new_tokens
        is answered up to the context (``_decode`` stops the row there), said once per run."""
        if self.context is None:
            return
        longest = max(len(p) for p in prompt_ids)
        if longest >= self.context:
            raise UserError(
                f"a prompt of {longest} tokens fills the model's context of {self.context} tokens: use fewer rounds, "
                "shorter examples or a model with a longer context"
            )
        if longest + self.sampling.max_new_tokens > self.context and not self._told_capped:
            self._told_capped = True
            print(
                f"note: answers stop at the model's context of {self.context} tokens (a prompt of {longest} tokens "
                f"leaves room for {self.context - longest}, max_new_tokens is {self.sampling.max_new_tokens})",
                file=sys.stderr,
            )

    def generate_ids(
        self,
        prompt_ids: list[list[int]],
        option_labels: list[list[str] | None] | None = None,
        seed_key: str | list[str] = "",
        session: dict | None = None,
    ) -> list[Generation]:
        """Decode token-id prompts (online RL continues exactly the ids it trains on)."""
        out: list[Generation] = []
        labels = option_labels or [None] * len(prompt_ids)
        keys = row_seed_keys(seed_key, len(prompt_ids))
        for i in range(0, len(prompt_ids), self.batch_size):
            # A batch's cache is keyed by its offset: run_rounds sends the same trajectories in the same
            # order every round, so batch i of round r+1 continues batch i of round r.
            prev = session.get(i) if (session is not None and self.incremental) else None
            gens, cache = self._generate_batch(
                prompt_ids[i : i + self.batch_size], labels[i : i + self.batch_size], keys[i : i + self.batch_size], prev
            )
            if session is not None and self.incremental:
                session[i] = cache
            for g, p in zip(gens, prompt_ids[i : i + self.batch_size]):
                g.prompt_ids = p  # online RL trains on exactly these ids, not on a re-tokenised text
            out += gens
        return out

    @torch.no_grad()
    def keep_rows(self, session: dict, keep: list[int]) -> None:
        """Re-batch the round caches of ``session`` to rows ``keep`` of the previous call (a stopped
        conversation decodes nothing more). New batch i holds rows keep[i : i + batch_size], as
        ``generate_ids`` will cut them; a row's cache is moved, not recomputed. Rows from batches of
        different cache lengths are zero-padded at the end and masked out there, as ``_unpark`` does."""
        from transformers.cache_utils import DynamicCache

        if not session or not self.incremental:
            return
        bs = self.batch_size
        old = {i: session.pop(i) for i in list(session)}
        new: dict[int, RoundCache] = {}
        for i in range(0, len(keep), bs):
            rows = keep[i : i + bs]
            sources = [(r - r % bs, r % bs) for r in rows]
            width = max(old[o].mask.shape[-1] for o, _ in sources)
            # Rows of one old batch are consecutive in ``rows`` (keep is increasing): one slice each.
            groups: list[tuple[int, list[int]]] = []
            for o, j in sources:
                if groups and groups[-1][0] == o:
                    groups[-1][1].append(j)
                else:
                    groups.append((o, [j]))

            cache = DynamicCache()
            n_layers = len(old[groups[0][0]].kv.layers)
            for li in range(n_layers):
                keys, values = [], []
                for o, js in groups:
                    idx = torch.tensor(js, device=old[o].mask.device)
                    layer = old[o].kv.layers[li]
                    keys.append(_pad_end(layer.keys[idx], width, -2))
                    values.append(_pad_end(layer.values[idx], width, -2))
                cache.update(torch.cat(keys), torch.cat(values), li)
            masks = [_pad_end(old[o].mask[torch.tensor(js, device=old[o].mask.device)], width, -1) for o, js in groups]
            new[i] = RoundCache(kv=cache, mask=torch.cat(masks), tokens=[old[o].tokens[j] for o, j in sources])
        session.update(new)

    @torch.no_grad()
    def _generate_batch(
        self, prompt_ids: list[list[int]], labels: list[list[str] | None], keys: list[str], prev: RoundCache | None
    ) -> tuple[list[Generation], RoundCache | None]:
        dev = self.device
        self._check_context(prompt_ids)
        expand = None
        if prev is None or len(prev.tokens) != len(prompt_ids):
            # Full prefill, left-padded; with share_prefill each distinct prompt is encoded once.
            kv, kept, keep_mask = None, [[] for _ in prompt_ids], None
            new_parts = prompt_ids
            if self.share_prefill:
                first: dict[tuple[int, ...], int] = {}
                rows = [first.setdefault(tuple(p), len(first)) for p in prompt_ids]
                if len(first) < len(prompt_ids):
                    new_parts = [list(p) for p in first]
                    expand = torch.tensor(rows, device=dev)
        else:
            # Reuse each row's longest shared prefix (at least one prompt token must be new, for logits).
            kv = prev.kv
            shared = [min(common_prefix(c, p), len(p) - 1) for c, p in zip(prev.tokens, prompt_ids)]
            # Keep a row's first ``shared`` real cache positions (rank counts real tokens, skipping
            # padding and positions already masked out); the rest (the end of the last turn as the
            # template re-renders it, tokens after an end-of-sequence) is masked, not cut, so every
            # row keeps the same cache length.
            rank = prev.mask.long().cumsum(-1)
            keep_mask = prev.mask.bool() & (rank <= torch.tensor(shared, device=dev)[:, None])
            kept = [c[:n] for c, n in zip(prev.tokens, shared)]
            new_parts = [p[n:] for p, n in zip(prompt_ids, shared)]
        width = max(len(p) for p in new_parts)
        # Left padding: every row's last prompt token is in the last column, so one logits column
        # serves every row and each generated token is appended at the same column for all.
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in new_parts], device=dev)
        block_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in new_parts], device=dev)
        mask = block_mask if keep_mask is None else torch.cat([keep_mask.long(), block_mask], dim=-1)
        s = self.sampling
        noise = None
        if s.temperature > 0:
            # Each row's uniforms come from a generator of its own, seeded by the row's key and drawn
            # on the CPU: a row's random stream depends neither on the other rows of the batch nor
            # on the batch size nor on the device, nor on what else used the global random state.
            noise = torch.stack(
                [torch.rand(s.max_new_tokens, generator=torch.Generator().manual_seed(seed_for(s.seed, k))) for k in keys]
            ).to(dev)

        hidden: list[torch.Tensor] = []
        hook = None
        # The probe reads the last prompt token's hidden state (what the model holds before it answers);
        # a hook on the layer captures it during the prefill, without a second forward pass.
        if self.probe_layer is not None:
            layer = decoder_layers(self.model)[self.probe_layer]

            def capture(_module, _inp, output):
                if not hidden:  # the first call of this batch encodes the prompt
                    h = output[0] if isinstance(output, tuple) else output
                    hidden.append(h[:, -1, :].float().cpu())

            hook = layer.register_forward_hook(capture)
        # Every token id that starts an option label of some row; the decoding loop keeps each step's
        # log-probabilities of these only (a few per row), not the logits.
        label_ids = sorted({i for labs in labels if labs for lab in labs for i in self.label_token_ids(lab)})
        try:
            new_ids, logprobs, sample_logprobs, label_logp, kv, fed = self._decode(
                ids, mask, noise, kv, expand, self.incremental, torch.tensor(label_ids, device=dev) if label_ids else None
            )
        finally:
            if hook is not None:
                hook.remove()
        # The prefill ran once per distinct prompt: spread its rows back over the batch.
        if expand is not None:
            mask = mask[expand]
            new_parts = [new_parts[r] for r in expand.tolist()]
            hidden = [h[expand.cpu()] for h in hidden]

        label_p = label_logp.exp().cpu() if label_logp is not None else None
        col = {i: j for j, i in enumerate(label_ids)}
        results, counts = [], []
        for b in range(len(prompt_ids)):
            # A row stopped at the context holds padding after its last token (see _decode).
            room = new_ids.shape[1] if self.context is None else min(new_ids.shape[1], self.context - len(prompt_ids[b]))
            prob = None if label_p is None else (lambda step, tid, p=label_p[b]: float(p[step, col[tid]]))
            g = self._generation(new_ids[b, :room].tolist(), lambda n, b=b: float(logprobs[b, :n].mean()), labels[b], prob)
            g.token_logprobs = sample_logprobs[b, : g.new_tokens].tolist()  # what TRL's GRPO computes (see Generation)
            counts.append(g.new_tokens)
            if hidden:
                g.hidden = hidden[0][b].tolist()
            results.append(g)
        if not self.incremental:
            return results, None
        # The cache holds every generated token but the last step's; a row's tokens after its
        # end-of-sequence are padding and get masked out.
        gen_valid = torch.tensor([[int(k < n) for k in range(fed)] for n in counts], device=dev)
        cache_mask = torch.cat([mask, gen_valid], dim=-1) if fed else mask
        tokens = [k + p + g.token_ids[: min(n, fed)] for k, p, g, n in zip(kept, new_parts, results, counts)]
        return results, RoundCache(kv=kv, mask=cache_mask, tokens=tokens)

    def _decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor | None,
        cache: Any = None,
        expand: torch.Tensor | None = None,
        keep_cache: bool = True,
        label_ids: torch.Tensor | None = None,
    ):
        """Greedy/sampled decoding. ``ids`` are the new prompt tokens, ``mask`` covers cache + ids;
        ``noise`` (sampling only) holds each row's uniform for every step (batch x max_new_tokens).
        ``expand`` maps each output row to the prompt row it continues (shared prefill);
        ``keep_cache`` asks for every row's cache back (round-incremental reuse).

        Returns new ids, their log-probs under the model and under the sampling temperature, the
        log-probs of the ``label_ids`` tokens at every step (batch x steps x labels; None without
        label ids), the cache and the number of generated tokens the cache holds.
        """
        from transformers.cache_utils import DynamicCache, DynamicLayer

        s = self.sampling
        cache = DynamicCache() if cache is None else cache
        # Positions count real tokens only (padding and masked cache entries skipped): each token gets
        # the position it has in a full re-encoding of the row's conversation.
        position = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        # logits_to_keep=1: the prefill needs only the last position's logits (the LM head over every
        # prompt position would cost as much as a layer stack on small models).
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        logits = out.logits[:, -1, :]
        next_pos = position[:, -1:] + 1
        if expand is not None:  # copy each distinct prompt's cache to every row that shares it
            cache.batch_select_indices(expand)
            logits, mask, next_pos = logits[expand], mask[expand], next_pos[expand]
        batch = logits.shape[0]
        dev = ids.device
        done = torch.zeros(batch, dtype=torch.bool, device=dev)
        eos = torch.tensor(self.eos_ids, device=dev)
        rows = torch.arange(batch, device=dev)  # batch row of each row still decoding
        parked: list[tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = []
        # Compaction slices each layer's keys and values; only the plain dynamic layer stores them as
        # whole tensors (sliding-window and other cache layers do not).
        can_compact = self.compact and all(type(layer) is DynamicLayer for layer in cache.layers)
        new_ids, logprobs, sample_logprobs, label_logp = [], [], [], []
        fed = 0
        for step in range(s.max_new_tokens):
            # Two log-probs per token: under the raw logits (mean_logprob, the model's own NLL) and under
            # the sampling temperature (token_logprobs, GRPO's quantity).
            logp = torch.log_softmax(logits.float(), dim=-1)
            logp_sample = logp
            if s.temperature > 0:
                logp_sample = torch.log_softmax(logits.float() / s.temperature, dim=-1)
                probs = torch.softmax(logits.float() / s.temperature, dim=-1)
                if s.top_p < 1.0:
                    # Nucleus: keep a token while the mass before it is under top_p, so the most likely
                    # token always stays; the rest is zeroed, and the draw below scales by what is left.
                    sorted_p, idx = probs.sort(dim=-1, descending=True)
                    keep = sorted_p.cumsum(-1) - sorted_p < s.top_p
                    sorted_p = sorted_p * keep
                    probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
                # Inverse-CDF draw with the row's own uniform for this step (``noise``): each row's
                # samples depend neither on when others finish nor on which rows share its batch.
                u = noise[rows, step]
                cdf = probs.cumsum(-1)
                nxt = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp(max=probs.shape[-1] - 1)
            else:
                nxt = logits.argmax(-1)
            # A finished row still in the batch must be fed something each step: padding, log-prob 0.
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            zero = torch.zeros_like(nxt, dtype=logp.dtype)
            step_lp = torch.where(done, zero, logp.gather(-1, nxt[:, None])[:, 0])
            step_slp = torch.where(done, zero, logp_sample.gather(-1, nxt[:, None])[:, 0])
            # Rows parked earlier get padding and zero log-probs in the batch-wide record.
            new_ids.append(torch.full((batch,), self.pad_id, device=dev, dtype=nxt.dtype).index_copy(0, rows, nxt))
            logprobs.append(torch.zeros(batch, device=dev, dtype=logp.dtype).index_copy(0, rows, step_lp))
            sample_logprobs.append(torch.zeros(batch, device=dev, dtype=logp.dtype).index_copy(0, rows, step_slp))
            if label_ids is not None:  # the label tokens' columns only: a few per row, not the vocabulary
                label_logp.append(logp.new_zeros(batch, len(label_ids)).index_copy(0, rows, logp[:, label_ids]))
            done = done | torch.isin(nxt, eos)
            if self.context is not None:  # this token's position is next_pos: the next one would be past the context
                done = done | (next_pos[:, 0] + 1 >= self.context)
            n_done = int(done.sum())  # one device sync per step serves both checks below
            # Stop before feeding the last token: no next step needs its cache entry, so the cache
            # ends one token short (``fed`` counts what it holds).
            if n_done == done.numel() or step == s.max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            out = self.model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True
            )
            fed += 1
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
            # Once a quarter of the rows still decoding have finished (their end token is now in the
            # cache), drop them from the batch so later steps compute only live rows; their cache
            # entries are parked and put back at the end for the next round.
            if can_compact and n_done * 4 >= done.numel():
                live, gone = (~done).nonzero()[:, 0], done.nonzero()[:, 0]
                # Only a cache the next round reuses is parked; otherwise finished rows are just dropped.
                if keep_cache:
                    parked.append((rows[gone], [(layer.keys[gone], layer.values[gone]) for layer in cache.layers]))
                cache.batch_select_indices(live)
                rows, mask, next_pos, logits, done = rows[live], mask[live], next_pos[live], logits[live], done[live]
        if parked:
            _unpark(cache, batch, rows, parked)
        stack = lambda xs: torch.stack(xs, 1)  # noqa: E731
        labels_out = stack(label_logp) if label_logp else None
        return stack(new_ids), stack(logprobs), stack(sample_logprobs), labels_out, cache, fed


def _pad_end(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``x`` zero-padded at the end of ``dim`` to ``width``."""
    extra = width - x.shape[dim]
    if not extra:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _unpark(cache: Any, batch: int, rows: torch.Tensor, parked: list) -> None:
    """Reassemble the full batch's cache after compaction: rows that finished early have shorter
    entries, zero-padded at the end (those positions are masked out by the round cache's mask)."""
    # Each parked row goes back to its own batch row: the next round finds its cache by row order.
    for li, layer in enumerate(cache.layers):
        k, v = layer.keys, layer.values
        full_k = k.new_zeros(batch, *k.shape[1:])
        full_v = v.new_zeros(batch, *v.shape[1:])
        full_k[rows], full_v[rows] = k, v
        for prow, kv in parked:
            pk, pv = kv[li]
            full_k[prow, :, : pk.shape[-2]] = pk
            full_v[prow, :, : pv.shape[-2]] = pv
        layer.keys, layer.values = full_k, full_v


@dataclass(frozen=True)
class StopRule:
    """When a conversation stops before round K (the ``stop_when`` options, selfcorrect.config.StopConfig).

    ``stable``: the parsed answer is the same in the last ``patience`` + 1 rounds (unchanged for
    ``patience`` consecutive rounds). ``confident``: the answer's option probability (read at its
    label token, renormalised over the labels) is at least ``confidence``. An unparsed answer never
    settles, and neither does an answer without option probabilities under ``confident``.

    >>> r = lambda a, p=None: Round(None, None, "", a, False, 0.0, option_probs=p)
    >>> StopRule("stable", 1).settled([r("A"), r("A")]), StopRule("stable", 2).settled([r("A"), r("A")])
    (True, False)
    >>> StopRule("stable", 1).settled([r("unparsed"), r("unparsed")]), StopRule("stable").settled([r("B"), r("A")])
    (False, False)
    >>> StopRule("confident", confidence=0.8).settled([r("A", {"A": 0.85, "B": 0.15})])
    True
    >>> StopRule("confident", confidence=0.9).settled([r("A", {"A": 0.85, "B": 0.15})]), StopRule().settled([r("A")] * 3)
    (False, False)
    """

    when: str = "never"
    patience: int = 1
    confidence: float = 0.9

    @classmethod
    def of(cls, options: Any) -> StopRule:
        """From a config with ``stop_when``, ``stop_patience`` and ``stop_confidence``."""
        return cls(options.stop_when, options.stop_patience, options.stop_confidence)

    def settled(self, rounds: list[Round]) -> bool:
        """Has the conversation settled after the last of ``rounds``?"""
        last = rounds[-1]
        if self.when == "never" or last.answer == UNPARSED:
            return False
        if self.when == "stable":
            return len(rounds) > self.patience and all(r.answer == last.answer for r in rounds[-1 - self.patience :])
        if self.when == "confident":
            return bool(last.option_probs) and last.option_probs.get(last.answer, 0.0) >= self.confidence
        raise ValueError(f"unknown stop rule {self.when!r}")


@dataclass
class Rollout:
    """What ``run_rounds`` returns: the graded trajectories, and each round's generations in the same
    order (``generations[round][i]`` made ``trajectories[i].rounds[round]``), with the exact prompt
    and sampled token ids, which online RL trains on, and the sampler's log-probs (GRPO hands them to
    TRL; SCoRe and K-round RL recompute every log-prob with the policy). A round a stopped
    conversation did not run has an empty generation (no prompt, no tokens, finish "stopped")."""

    trajectories: list[Trajectory]
    generations: list[list[Generation]]


def not_run(previous: Generation) -> Generation:
    """The generation of a round a stopped conversation did not run: the last text, no tokens."""
    return Generation(text=previous.text, token_ids=[], new_tokens=0, finish="stopped", mean_logprob=0.0, prompt_ids=[])


def run_rounds(
    generator: RolloutBackend,
    task: Task,
    prompt_set: PromptSet,
    examples: list[Example],
    rounds: int,
    samples: int = 1,
    on_round: Any = None,
    seed_key: str | list[str] = "",
    stop: StopRule | None = None,
) -> Rollout:
    """K rounds for every (example, sample): one trajectory per pair, samples of an example
    consecutive, and the generations of every round. Round r's prompt is the conversation of rounds
    < r plus round r's user turn, rendered with round r's prefill.

    ``on_round(round_index, generations)`` is called after each round (progress bars).

    Sampling: each trajectory draws from its own random stream, keyed by the run's seed, its
    example's key, its sample index and the round, whatever else is in the call or how the backend
    batches it: a run with another batch size, a resume, or a shard of a multi-process run samples
    the same tokens for the same (example, sample), up to the model's own numerics (a batch's
    padding can move a logit in its last bits; tests/test_rollout.py measures that on the tiny
    model). An example's key is ``seed_key`` followed by its id (and, for the n-th repeat of an id
    in the call, ``#n``) when ``seed_key`` is a str, or ``seed_key[i]`` (a list,
    one key per example: online RL names the step and the prompt's place in the step's batch, so a
    prompt drawn twice samples twice).

    ``stop``: a conversation whose answer has settled after round r < K (``StopRule.settled``) runs
    no further round; ``Trajectory.stop_round`` records r, and rounds r+1..K carry round r. A stopped
    conversation leaves the batch; the others keep their own streams, so stopping changes no draw.
    """
    # Samples of an example consecutive, sample 0 first: eval.aggregate and data_gen.build read an
    # example's rows together from a stream.
    trajs = [
        Trajectory(
            id=ex.id,
            task=task.name,
            prompt_set=prompt_set.name,
            example=ex,
            rounds=[],
            sample=s,
            prompt_set_version=prompt_set.version,
            hidden=[],
        )
        for ex in examples
        for s in range(samples)
    ]
    if isinstance(seed_key, str):
        # An example given twice in one call (GRPO hands over a prompt once per group member) must
        # not sample twice the same tokens: its later copies get keys of their own.
        seen: dict[str, int] = {}
        example_keys = []
        for ex in examples:
            n = seen[ex.id] = seen.get(ex.id, -1) + 1
            example_keys.append(f"{seed_key}{ex.id}" + (f"#{n}" if n else ""))
    elif len(seed_key) == len(examples):
        example_keys = list(seed_key)
    else:
        raise ValueError(f"{len(seed_key)} seed keys for {len(examples)} examples")
    traj_keys = [f"{k}/s{s}" for k in example_keys for s in range(samples)]
    session: dict = {}  # per-batch KV caches carried from round to round
    by_round: list[list[Generation]] = []
    live = list(range(len(trajs)))  # trajectories still running, in order
    for r in range(rounds):
        users, prompts = [], []
        prefill = prompt_set.prefill(r)
        for t in (trajs[i] for i in live):
            if r == 0:
                user = prompt_set.first_turn(t.example.question)
            else:
                # The task's feedback only with an external prompt set; otherwise the bare review
                # instruction: intrinsic self-correction, with no feedback (Kumar et al. 2024).
                user = prompt_set.review_turn(task.feedback(t.example, t.rounds[-1]) if prompt_set.external else "")
            users.append(user)
            # Rendered from the conversation so far, as a trainer renders the same trace: the text the
            # model continues here is the text it is trained on (selfcorrect.chat).
            prompts.append(generator.render(t.conversation() + [{"role": "user", "content": user}], prefill))
        labels = [task.option_labels(trajs[i].example) for i in live]
        keys = [f"{traj_keys[i]}/r{r}" for i in live]
        gens = generator.generate(prompts, labels, seed_key=keys, session=session) if live else []
        grades = task.grade_batch([trajs[i].example for i in live], [g.text for g in gens]) if live else []
        for i, user, g, grade in zip(live, users, gens, grades):
            t = trajs[i]
            # Option probabilities at the token where the parsed answer's letter was written: the first
            # label token can be another word (docs/metrics.md, "Option probabilities").
            g.read_options_at_span(grade.answer, task.answer_label_span(t.example, g.text))
            t.rounds.append(
                Round.graded(
                    user,
                    prefill,
                    g.text,
                    grade,
                    option_probs=g.option_probs,
                    option_mass=g.option_mass,
                    option_step=g.option_step,
                    mean_logprob=g.mean_logprob,
                    new_tokens=g.new_tokens,
                    finish=g.finish,
                    external=prompt_set.external and r > 0,
                )
            )
            t.hidden.append(g.hidden)
        row_gens = dict(zip(live, gens))
        for i, t in enumerate(trajs):
            if i not in row_gens:  # stopped earlier: carry its last round
                t.rounds.append(t.rounds[-1].carry())
                t.hidden.append(None)
                row_gens[i] = not_run(by_round[-1][i])
        all_gens = [row_gens[i] for i in range(len(trajs))]
        by_round.append(all_gens)
        if on_round is not None:
            on_round(r, all_gens)
        if stop is not None and r < rounds - 1:
            still = []
            for i in live:
                if stop.settled(trajs[i].rounds):
                    trajs[i].stop_round = r + 1
                else:
                    still.append(i)
            if len(still) < len(live):
                # Positions in the batch just decoded: the backend keeps only these rows' state.
                going = set(still)
                generator.keep_rows(session, [j for j, i in enumerate(live) if i in going])
                live = still
    for t in trajs:  # without a probe a trace records no hidden states, not a list of Nones
        if all(h is None for h in t.hidden):
            t.hidden = None
    return Rollout(trajs, by_round)
