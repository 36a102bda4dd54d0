"""Run K self-correction rounds over a whole dataset: sharded, resumable, with progress.

Used by ``python -m data_gen`` and ``python -m eval``. Each process of an ``accelerate launch`` takes
the examples whose index modulo the world size equals its rank and appends finished batches to
``<output_dir>/shards/rank<r>.jsonl``; the main process then merges every shard into
``traces.jsonl``. A re-run with the same output_dir and the same settings (``run.json``, see
selfcorrect/run_identity.py) skips every (id, sample) already on disk, so an interrupted run
(Ctrl-C, SIGTERM, kill -9) resumes without losing or duplicating work; a re-run with other settings
stops before it writes a row.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from selfcorrect.config import DataConfig, RolloutConfig, SplitConfig
from selfcorrect.device import cuda_available, process_state
from selfcorrect.errors import Interrupted, NothingToDo, UserError
from selfcorrect.examples import load_examples
from selfcorrect.jsonl import append_rows, read_rows, repair_tail, write_rows_atomic
from selfcorrect.modeling import load_model, load_tokenizer, resolve_model_path
from selfcorrect.rollout import HFGenerator, StopRule, run_rounds
from selfcorrect.run_identity import check_outside_inputs, check_run, data_identity, model_identity
from selfcorrect.saved_config import redact_secret_values
from selfcorrect.tasks.base import Example, Task
from selfcorrect.vllm_backend import MergedAdapter, VLLMGenerator, assign_gpus, vllm_dtype, vllm_version

# What a trace run writes into its output_dir (deleted by --overwrite).
MERGED_FOR_VLLM = "vllm-merged-model"  # base + adapter, while a vLLM run lasts (vllm_backend.MergedAdapter)
TRACE_OUTPUTS = ["traces.jsonl", "traces.jsonl.tmp.*", "shards", MERGED_FOR_VLLM]


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


def check_finished_read_only(output_dir: str, examples: Iterable[Example], samples: int) -> None:
    """A finished run in a folder this process cannot write (a read-only mount, another user's
    results) is nothing to do: its traces are complete, and rewriting the outputs derived from them
    would fail on the first write. A writable folder's finished run rewrites those outputs, as before."""
    if os.access(output_dir, os.W_OK) or os.path.isdir(os.path.join(output_dir, "shards")):
        return
    final = os.path.join(output_dir, "traces.jsonl")
    if not os.path.isfile(final):
        return
    with open(final, "rb") as f:  # a partial last line (which repair_tail would cut) means unfinished
        f.seek(max(os.path.getsize(final) - 1, 0))
        if f.read(1) not in (b"\n", b""):
            return
    done = {(row["id"], int(row.get("sample", 0))) for row in read_rows(final)}
    if all((ex.id, s) in done for ex in examples for s in range(samples)):
        raise NothingToDo(f"{output_dir} already holds this run, finished, and is read-only: nothing to do")


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
        # One step per example-round: the bar moves after every round of a batch, not only per batch.
        self.bar = tqdm(total=total, desc=desc, unit="ex-round", disable=disable, dynamic_ncols=True)
        self.start = time.perf_counter()
        self.tokens = 0
        self.done = 0

    def update(self, examples: int, tokens: int) -> None:
        self.done += examples
        self.tokens += tokens
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(ex_rounds_s=f"{self.done / dt:.2f}", tok_s=f"{self.tokens / dt:.0f}")
        self.bar.update(examples)

    def close(self) -> None:
        self.bar.close()


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: drop the batch in flight
    raise KeyboardInterrupt


def trace_settings(run: RolloutConfig, data: DataConfig, split: SplitConfig, task: Task, prompt_set, extra=None) -> dict:
    """The settings that change what a trace run writes (its identity in run.json)."""
    return {
        "model": run.model_name_or_path,
        "model_weights": model_identity(run.model_name_or_path),
        "adapter": run.adapter,
        "adapter_weights": model_identity(run.adapter),
        "dtype": run.dtype,
        "task": task.name,
        "task_settings": redact_secret_values(task.settings()),
        "dataset_path": data.dataset_path,
        "dataset": data_identity(data.dataset_path),
        "split": split.split,
        "skip": split.skip,
        "limit": data.limit,
        "heldout_fraction": split.heldout_fraction,
        "heldout": split.heldout,
        "prompt_set": prompt_set.name,
        "prompt_set_version": prompt_set.version,
        "prompt_set_text": prompt_set.fingerprint(),
        "rounds": run.rounds,
        "samples": run.samples,
        "max_new_tokens": run.max_new_tokens,
        "temperature": run.temperature,
        "top_p": run.top_p,
        "seed": run.seed,
        # Only a vLLM run records its backend: an HF run's identity stays what it was, so runs started
        # before the backend existed still resume, and neither backend resumes the other's folder.
        **(vllm_settings(run) if run.generation_backend == "vllm" else {}),
        **run.stop_settings(),
        **(extra or {}),
    }


def vllm_settings(run: RolloutConfig) -> dict:
    return {"generation_backend": "vllm", "vllm_version": vllm_version()}


def make_generator(run: RolloutConfig, state, probe=None, merged: MergedAdapter | None = None):
    """The run's generation backend on this process's device. ``merged``: under vLLM, the adapter
    merged into the base (``merge_for_vllm``), which the engine serves."""
    device = run.device or ("cuda" if cuda_available() else "cpu")
    tokenizer = load_tokenizer(run.model_name_or_path, run.trust_remote_code)
    sampling = run.sampling()
    if run.generation_backend == "vllm":
        if device.startswith("cuda") and state.num_processes > 1:  # each process's engine on its own GPUs
            os.environ["CUDA_VISIBLE_DEVICES"] = assign_gpus(state.local_process_index, run.tensor_parallel_size)
        return VLLMGenerator(
            merged.path if merged is not None else resolve_model_path(run.model_name_or_path),
            tokenizer,
            sampling,
            dtype=run.dtype,
            tensor_parallel_size=run.tensor_parallel_size,
            trust_remote_code=run.trust_remote_code,
            max_model_len=run.max_model_len,
            gpu_memory_utilization=run.gpu_memory_utilization,
        )
    if device.startswith("cuda") and state.num_processes > 1:
        device = f"cuda:{state.local_process_index}"
    model = load_model(run.model_name_or_path, run.adapter, run.dtype, device, run.trust_remote_code)
    probe_layer = None
    if probe is not None:
        probe_layer = probe.prepare(model, tokenizer, run.output_dir)
    return HFGenerator(model, tokenizer, sampling, run.batch_size, probe_layer)


def merge_for_vllm(run: RolloutConfig, state) -> MergedAdapter | None:
    """Under vLLM with an adapter: the base + adapter merged once, by the main process, in the
    engine's dtype, into the output folder (every process reads it, as every process writes its
    shard there). Every process calls it, including one with no work left after a resume."""
    if run.generation_backend != "vllm" or not run.adapter:
        return None
    device = run.device or ("cuda" if cuda_available() else "cpu")
    return MergedAdapter(
        run.model_name_or_path,
        run.adapter,
        run.trust_remote_code,
        dtype=vllm_dtype(run.dtype, device.startswith("cuda")),
        folder=os.path.join(run.output_dir, MERGED_FOR_VLLM),
        state=state,
    )


def generate_traces(
    run: RolloutConfig,
    data: DataConfig,
    split: SplitConfig,
    task: Task,
    prompt_set,
    command: str,
    probe=None,
    extra_settings: dict | None = None,
    owned: list[str] = (),
    overwrite: bool = False,
) -> str:
    """Run every remaining example; return the path of the merged traces.jsonl.

    The output folder's run.json must match this run's settings (``trace_settings`` plus
    ``extra_settings``) to resume; ``owned`` names the command's other outputs, deleted with
    ``--overwrite``. ``probe`` (eval's concept probe) is fitted once the model is loaded
    (``probe.prepare``); its layer's last-prompt-token hidden states are captured during the rollout
    and ``probe.annotate`` turns them into per-round scores before each batch is written (so resumed
    runs keep them).
    """
    if probe is not None and run.generation_backend == "vllm":
        raise UserError(
            "the concept probe reads hidden states, which vLLM does not return: use --generation_backend hf with --probe"
        )
    state = process_state(run.ddp_timeout)
    rank, world = state.process_index, state.num_processes
    total = sum(1 for _ in load_examples(task, data, split))  # also validates every row before the model loads
    if total == 0:
        raise UserError(f"no examples to run (dataset {data.dataset_path}, skip={split.skip}, limit={data.limit})")
    settings = trace_settings(run, data, split, task, prompt_set, extra_settings)
    if state.is_main_process:
        check_outside_inputs(
            run.output_dir, {"--dataset_path": data.dataset_path, "--model_name_or_path": run.model_name_or_path}
        )
        check_run(run.output_dir, command, settings, TRACE_OUTPUTS + list(owned), overwrite)
    state.wait_for_everyone()
    check_finished_read_only(run.output_dir, load_examples(task, data, split), run.samples)
    os.makedirs(os.path.join(run.output_dir, "shards"), exist_ok=True)
    shard = os.path.join(run.output_dir, "shards", f"rank{rank}.jsonl")
    done = done_keys(run.output_dir)

    def pending() -> Iterator[Example]:  # streamed: the dataset is never held in memory
        for i, ex in enumerate(load_examples(task, data, split)):
            if i % world == rank and any((ex.id, s) not in done for s in range(run.samples)):
                yield ex

    n_todo = sum(1 for _ in pending())
    if done and state.is_main_process:
        print(f"resuming: {len(done)} trajectories already in {run.output_dir}", file=sys.stderr)

    merged = merge_for_vllm(run, state)
    if n_todo:
        generator = make_generator(run, state, probe, merged)
        bar = _Progress(n_todo * run.rounds, f"{task.name} x{run.rounds} rounds", disable=not state.is_local_main_process)
        old = signal.signal(signal.SIGTERM, _raise_interrupt)
        examples = pending()
        try:
            while batch := list(itertools.islice(examples, run.batch_size)):
                n_batch = len(batch)
                trajs = run_rounds(
                    generator,
                    task,
                    prompt_set,
                    batch,
                    run.rounds,
                    run.samples,
                    on_round=lambda r, gens, n=n_batch: bar.update(n, sum(g.new_tokens for g in gens)),
                    stop=StopRule.of(run),
                ).trajectories
                trajs = [t for t in trajs if (t.id, t.sample) not in done]
                if probe is not None:
                    probe.annotate(trajs)
                for t in trajs:
                    t.model, t.adapter = run.model_name_or_path, run.adapter
                append_rows(shard, [t.to_dict() for t in trajs])
        except KeyboardInterrupt:
            bar.close()
            raise Interrupted(f"finished batches are saved in {run.output_dir}; re-run the same command to resume") from None
        finally:
            signal.signal(signal.SIGTERM, old)
        bar.close()
        if (report := generator.report()) is not None:
            print(report, file=sys.stderr)
    state.wait_for_everyone()
    if merged is not None:  # every engine has loaded it (an interrupted run leaves it; the next merges again)
        merged.close()
    final = os.path.join(run.output_dir, "traces.jsonl")
    if state.is_main_process:
        final, _ = merge_shards(run.output_dir)
    state.wait_for_everyone()
    return final
