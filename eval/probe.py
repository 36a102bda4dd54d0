"""Concept probe: a linear probe on last-token hidden states at one layer.

Statements come from the task (``Task.probe_statements``: BBQ's stereotype-consistent vs
-inconsistent answers) or from a .jsonl file of ``{"text": ..., "label": 0 | 1}`` (e.g. toxic = 0
vs non-toxic = 1).
Each statement is presented as a user turn (chat template plus generation prompt) and the probe is an
L2-regularised logistic regression on centred, globally scaled features; its held-out accuracy (20% of the
statements) is written to probe.json and shown in the report, so a probe that separates nothing is
visible as such. The probe score is P(label 1) = sigmoid(w.h + b): for ``bbq``, how strongly the
hidden state points to the non-stereotyped (unbiased) concept. During the eval rollout the hidden state of the last
prompt token of every round is captured by a forward hook (selfcorrect.rollout.Generator) and scored,
so no second pass over the conversations is needed.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys

from selfcorrect.errors import UserError
from selfcorrect.jsonl import read_rows, write_atomic
from selfcorrect.rollout import HFGenerator, SamplingConfig, decoder_layers
from selfcorrect.trace import Trajectory


def file_statements(path: str) -> list[list[tuple[str, int]]]:
    """Statements from a .jsonl of {"text": ..., "label": 0 | 1}, each its own group."""
    groups = []
    for lineno, row in enumerate(read_rows(path), 1):
        if not isinstance(row.get("text"), str) or row.get("label") not in (0, 1) or isinstance(row.get("label"), bool):
            raise UserError(f"{path}:{lineno}: probe statements need 'text' and 'label' (0 or 1)")
        groups.append([(row["text"], int(row["label"]))])
    return groups


def fit_logistic(x, y, l2: float = 1e-2, steps: int = 200):
    """Logistic regression by L-BFGS on centred features scaled by one global standard deviation (a
    per-dimension scale lets near-constant dimensions dominate on new inputs); returns (w, b) in the
    raw feature space."""
    import torch

    mu, sd = x.mean(0), x.std().clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / sd).detach()
    b_raw = (b - (w_raw * mu).sum()).detach()
    return w_raw, float(b_raw)


class ConceptProbe:
    """Fitted at the start of an eval run; annotates every round with probe_score and probe_cosine.

    ``groups``: labelled statements in groups that must stay on one side of the train/held-out
    split (a BBQ item's two statements share their whole stem, so splitting a pair would let the
    probe score the held-out half by memorising the stem of its partner); ``source`` names them.
    """

    def __init__(
        self, groups: list[list[tuple[str, int]]], source: str, layer: int | None, max_statements: int = 400, seed: int = 0
    ):
        self.source, self.layer = source, layer
        self.max_statements, self.seed = max_statements, seed
        self.w = None
        self.b = 0.0
        groups = list(groups)
        random.Random(seed).shuffle(groups)
        self.groups, n = [], 0
        for g in groups:
            if n + len(g) > max_statements:
                break
            self.groups.append(g)
            n += len(g)
        if len({lab for g in self.groups for _, lab in g}) < 2 or len(self.groups) < 2:
            raise UserError("the probe needs statements of both labels (and at least two groups)")

    def prepare(self, model, tokenizer, output_dir: str) -> int:
        import torch

        n_layers = len(decoder_layers(model))
        layer = n_layers // 2 if self.layer is None else self.layer
        if not -n_layers <= layer < n_layers:
            raise UserError(f"probe_layer {layer} out of range for a model with {n_layers} layers")
        self.layer = layer % n_layers
        path = os.path.join(output_dir, "probe.json")
        if os.path.exists(path):  # resumed run: keep the probe the earlier batches were scored with
            with open(path) as f:
                saved = json.load(f)
            self.w, self.b = torch.tensor(saved["w"]), saved["b"]
            return self.layer
        groups = self.groups
        n_test_groups = max(1, len(groups) // 5)
        n_test = sum(len(g) for g in groups[:n_test_groups])
        texts = [t for g in groups for t, _ in g]
        labels = [lab for g in groups for _, lab in g]
        print(
            f"concept probe: encoding {len(texts)} statements at layer {self.layer} and fitting it ...",
            file=sys.stderr,
            flush=True,
        )
        gen = HFGenerator(model, tokenizer, SamplingConfig(max_new_tokens=1), batch_size=16, probe_layer=self.layer)
        # Each statement is a user turn followed by the generation prompt, so the probed position is
        # of the same kind as in the rollout (the last prompt token before the assistant answers).
        prompts = [gen.render([{"role": "user", "content": t}]) for t in texts]
        hs = [g.hidden for g in gen.generate(prompts)]
        x, y = torch.tensor(hs), torch.tensor(labels, dtype=torch.float32)
        w, b = fit_logistic(x[n_test:], y[n_test:])
        acc = lambda xs, ys: float((((xs @ w + b) > 0).float() == ys).float().mean())  # noqa: E731
        self.w, self.b = w, b
        info = {
            "layer": self.layer,
            "statements": self.source,
            "n": len(texts),
            "train_accuracy": acc(x[n_test:], y[n_test:]),
            "heldout_accuracy": acc(x[:n_test], y[:n_test]),
            "b": b,
            "w": w.tolist(),
        }
        write_atomic(path, json.dumps(info))
        print(
            f"concept probe: held-out accuracy {info['heldout_accuracy']:.3f} on {n_test} statements (chance 0.5)",
            file=sys.stderr,
            flush=True,
        )
        return self.layer

    def activation(self, h: list[float]) -> tuple[float, float]:
        import torch

        v = torch.tensor(h)
        logit = float(v @ self.w) + self.b
        cos = float(torch.nn.functional.cosine_similarity(v, self.w, dim=0))
        return 1 / (1 + math.exp(-max(min(logit, 50), -50))), cos

    def annotate(self, trajectories: list[Trajectory]) -> None:
        """Score each round's captured hidden state (the round's last prompt token)."""
        for t in trajectories:
            for rnd, h in zip(t.rounds, t.hidden or []):
                if h is not None:
                    rnd.probe_score, rnd.probe_cosine = self.activation(h)
