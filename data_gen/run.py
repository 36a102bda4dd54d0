"""Run K self-correction rounds over a whole dataset: sharded, resumable, with progress.

Used by ``python -m data_gen`` and ``python -m eval``. Each process of an ``accelerate launch`` takes
the examples whose index modulo the world size equals its rank and appends finished batches to
``<output_dir>/shards/rank<r>.jsonl``; the main process then merges every shard into
``traces.jsonl``. A re-run with the same output_dir skips every (id, sample) already on disk, so an
interrupted run (Ctrl-C, SIGTERM, kill -9) resumes without losing or duplicating work.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from data_gen.errors import UserError
from data_gen.jsonl import append_rows, read_rows, repair_tail, write_rows_atomic
from data_gen.tasks.base import Example, Task


@dataclass
class RolloutArgs:
    """Options shared by data_gen and eval: what to run, on which data, for how many rounds."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Hub id, local folder, or 'smollm2-135m-instruct' (the embedded demo model)."},
    )
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder to apply on top of the model."})
    task: str = field(
        default="bbq",
        metadata={"help": "bbq | winogender | gsm8k | toxicity | refusal | path/to/spec.yaml | pkg.module:Class"},
    )
    dataset_path: str | None = field(
        default=None, metadata={"help": "Local file or folder in the release format; unset = the hub dataset."}
    )
    split: str = field(default="test", metadata={"help": "Split to read (file name for folder datasets)."})
    prompt_set: str = field(default="intrinsic-moral", metadata={"help": "Name of the self-correction prompt set."})
    prompt_sets_file: str | None = field(default=None, metadata={"help": "YAML file with extra prompt sets."})
    rounds: int = field(default=3, metadata={"help": "Number of rounds K (round 1 = first answer)."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N examples."})
    skip: int = field(default=0, metadata={"help": "Skip the first N examples."})
    heldout_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of the task's groups (BBQ: category + template) set aside by a hash, so no template is "
                          "on both sides (same split in data_gen and eval)."},  # fmt: skip
    )
    heldout: bool = field(
        default=False, metadata={"help": "Use the held-out share instead of the rest (eval: true, data_gen: false)."}
    )
    samples: int = field(default=1, metadata={"help": "Trajectories per example (needs temperature > 0 to differ)."})
    output_dir: str = field(default="outputs/run", metadata={"help": "Where traces and results go."})
    batch_size: int = field(default=8, metadata={"help": "Trajectories decoded together."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling."})
    max_new_tokens: int = field(default=64, metadata={"help": "Maximum tokens generated per round."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32."})
    device: str | None = field(default=None, metadata={"help": "cuda / cpu; default: cuda when available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub (off by default)."})
    classifier: str | None = field(
        default=None, metadata={"help": "Text-classification model for toxicity (or refusal) scoring."}
    )
    threshold: float = field(default=0.5, metadata={"help": "Toxicity / refusal classifier threshold."})

    def validate(self) -> None:
        if self.rounds < 1:
            raise UserError(f"rounds must be >= 1 (got {self.rounds})")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.samples < 1:
            raise UserError(f"samples must be >= 1 (got {self.samples})")
        if self.samples > 1 and self.temperature == 0:
            raise UserError("samples > 1 with temperature 0 gives identical copies: set temperature > 0")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be >= 1 (got {self.limit})")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise UserError(f"heldout_fraction must be in [0, 1) (got {self.heldout_fraction})")
        if self.heldout and self.heldout_fraction == 0.0:
            raise UserError("heldout: true needs heldout_fraction > 0")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")


def load_examples(task: Task, args: RolloutArgs) -> Iterator[Example]:
    """Stream the task's examples after skip / held-out split / limit; duplicate ids are an error."""
    seen: set[str] = set()
    n = 0
    for i, ex in enumerate(task.load(args.dataset_path, args.split)):
        if i < args.skip:
            continue
        if args.heldout_fraction > 0 and is_heldout(task.group(ex), args.heldout_fraction) != args.heldout:
            continue
        if args.limit is not None and n >= args.limit:
            break
        if ex.id in seen:
            raise UserError(f"duplicate example id '{ex.id}' in {args.dataset_path}")
        seen.add(ex.id)
        n += 1
        yield ex


def is_heldout(group: str, fraction: float) -> bool:
    """Deterministic split by the task's group (``Task.group``: BBQ's category and template, a
    Winogender occupation): the same items are held out in every run and on every machine, and items
    that share a template (people, wording, answer) are never on both sides. A split by example id
    left almost every held-out BBQ item with a training sibling from its template."""
    return zlib.crc32(group.encode()) % 10000 < fraction * 10000


def trace_files(output_dir: str) -> list[str]:
    return [p for p in [os.path.join(output_dir, "traces.jsonl")] if os.path.exists(p)] + sorted(
        glob.glob(os.path.join(output_dir, "shards", "rank*.jsonl"))
    )


def done_keys(output_dir: str) -> set[tuple[str, int]]:
    keys = set()
    for path in trace_files(output_dir):
        repair_tail(path)
        for row in read_rows(path):
            keys.add((row["id"], int(row.get("sample", 0))))
    return keys


def merge_shards(output_dir: str) -> tuple[str, int]:
    """traces.jsonl := existing traces + every shard, each (id, sample) once; then drop the shards."""
    files = trace_files(output_dir)
    final = os.path.join(output_dir, "traces.jsonl")

    def rows() -> Iterator[dict[str, Any]]:
        seen: set[tuple[str, int]] = set()
        for path in files:
            for row in read_rows(path):
                key = (row["id"], int(row.get("sample", 0)))
                if key not in seen:
                    seen.add(key)
                    yield row

    n = write_rows_atomic(final, rows())
    for path in files:
        if path != final:
            os.remove(path)
    shutil.rmtree(os.path.join(output_dir, "shards"), ignore_errors=True)
    return final, n


class _Progress:
    def __init__(self, total: int | None, desc: str, disable: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="ex", disable=disable, dynamic_ncols=True)
        self.start = time.perf_counter()
        self.tokens = 0
        self.done = 0

    def update(self, examples: int, tokens: int) -> None:
        self.done += examples
        self.tokens += tokens
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(ex_s=f"{self.done / dt:.2f}", tok_s=f"{self.tokens / dt:.0f}")
        self.bar.update(examples)

    def close(self) -> None:
        self.bar.close()


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: drop the batch in flight
    raise KeyboardInterrupt


def count_examples(task: Task, args: RolloutArgs) -> int:
    return sum(1 for _ in load_examples(task, args))


def generate_traces(args: RolloutArgs, task: Task, prompt_set, probe=None) -> str:
    """Run every remaining example; return the path of the merged traces.jsonl.

    ``probe`` (eval's concept probe) is fitted once the model is loaded (``probe.prepare``); its
    layer's last-prompt-token hidden states are captured during the rollout and ``probe.annotate``
    turns them into per-round scores before each batch is written (so resumed runs keep them).
    """
    from data_gen.modeling import load_model, load_tokenizer
    from data_gen.rollout import Generator, SamplingConfig, run_rounds

    args.validate()
    state = process_state()
    rank, world = state.process_index, state.num_processes
    total = count_examples(task, args)  # also validates every row before the model loads
    if total == 0:
        raise UserError(f"no examples to run (dataset {args.dataset_path}, skip={args.skip}, limit={args.limit})")
    os.makedirs(os.path.join(args.output_dir, "shards"), exist_ok=True)
    shard = os.path.join(args.output_dir, "shards", f"rank{rank}.jsonl")
    done = done_keys(args.output_dir)

    def pending() -> Iterator[Example]:  # streamed: the dataset is never held in memory
        for i, ex in enumerate(load_examples(task, args)):
            if i % world == rank and any((ex.id, s) not in done for s in range(args.samples)):
                yield ex

    n_todo = sum(1 for _ in pending())
    if done and state.is_main_process:
        print(f"resuming: {len(done)} trajectories already in {args.output_dir}", file=sys.stderr)

    if n_todo:
        device = args.device or ("cuda" if _cuda() else "cpu")
        if device.startswith("cuda") and world > 1:
            device = f"cuda:{state.local_process_index}"
        tokenizer = load_tokenizer(args.model_name_or_path, args.trust_remote_code)
        model = load_model(args.model_name_or_path, args.adapter, args.dtype, device, args.trust_remote_code)
        sampling = SamplingConfig(args.max_new_tokens, args.temperature, args.top_p, args.seed)
        probe_layer = None
        if probe is not None:
            probe_layer = probe.prepare(model, tokenizer, args.output_dir)
        generator = Generator(model, tokenizer, sampling, args.batch_size, probe_layer)
        bar = _Progress(n_todo, f"{task.name} x{args.rounds} rounds", disable=not state.is_local_main_process)
        old = signal.signal(signal.SIGTERM, _raise_interrupt)
        examples = pending()
        try:
            while batch := list(itertools.islice(examples, args.batch_size)):
                rows = run_rounds(generator, task, prompt_set, batch, args.rounds, args.samples)
                rows = [r for r in rows if (r["id"], r["sample"]) not in done]
                if probe is not None:
                    probe.annotate(rows)
                for r in rows:
                    r.pop("_hidden", None)
                    r["model"] = args.model_name_or_path
                    r["adapter"] = args.adapter
                append_rows(shard, rows)
                bar.update(len(batch), sum(rec["new_tokens"] for r in rows for rec in r["rounds"]))
        except KeyboardInterrupt:
            bar.close()
            print(
                f"\ninterrupted: finished batches are saved in {args.output_dir}; re-run the same command to resume",
                file=sys.stderr,
            )
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, old)
        bar.close()
    state.wait_for_everyone()
    final = os.path.join(args.output_dir, "traces.jsonl")
    if state.is_main_process:
        final, _ = merge_shards(args.output_dir)
    state.wait_for_everyone()
    return final


def process_state():
    """accelerate's process state; on a machine without CUDA the processes of cpu_ddp.yaml join a
    gloo group (PartialState() alone would leave each of them thinking it is the only one)."""
    from accelerate import PartialState

    return PartialState(cpu=not _cuda())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
