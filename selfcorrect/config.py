"""The options every command shares, each declared once: ``TaskConfig`` (which task and prompts),
``DataConfig`` (which data file), ``SplitConfig`` (which part of a task's data), ``RolloutConfig``
(which model and how to sample K rounds), ``SamplingConfig`` (how one round is decoded) and
``OverwriteConfig``. Range checks live in each dataclass's ``__post_init__``, so a bad value stops
the command before any work. Parsing recipes and flags into them is selfcorrect/parsing.py.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from selfcorrect.device import check_device
from selfcorrect.errors import UserError


@dataclass
class TaskConfig:
    """Which task grades the answers and which self-correction prompts the model sees."""

    task: str = field(
        default="bbq",
        metadata={"help": "bbq | winogender | gsm8k | toxicity | refusal | path/to/spec.yaml | pkg.module:Class"},
    )
    prompt_set: str = field(default="intrinsic-moral", metadata={"help": "Name of the self-correction prompt set."})
    prompt_sets_file: str | None = field(default=None, metadata={"help": "YAML file with extra prompt sets."})
    classifier: str | None = field(
        default=None, metadata={"help": "Text-classification model that grades toxicity (or refusal) tasks."}
    )
    threshold: float = field(default=0.5, metadata={"help": "Classifier threshold for toxicity / refusal."})

    def __post_init__(self) -> None:
        check_range("threshold", self.threshold, 0.0, 1.0)


@dataclass
class DataConfig:
    """The data a command reads."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "data_gen / eval: the task's data, file or folder, release format (unset: the hub). Training:"
            " data_gen's sft.jsonl, dpo.jsonl or rl.jsonl."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Use only the first N examples (training: rows)."})

    def __post_init__(self) -> None:
        if self.limit is not None:
            check_range("limit", self.limit, 1)


@dataclass
class SplitConfig:
    """Which part of a task's data data_gen or eval runs on."""

    split: str = field(default="test", metadata={"help": "Split to read (file name for folder datasets)."})
    skip: int = field(default=0, metadata={"help": "Skip the first N examples."})
    heldout_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of groups (BBQ: templates) held out, by a hash."},
    )
    heldout: bool = field(default=False, metadata={"help": "Use the held-out share (eval: true, data_gen: false)."})

    def __post_init__(self) -> None:
        check_range("skip", self.skip, 0)
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise UserError(f"heldout_fraction must be in [0, 1) (got {self.heldout_fraction})")
        if self.heldout and self.heldout_fraction == 0.0:
            raise UserError("heldout: true needs heldout_fraction > 0")


@dataclass
class SamplingConfig:
    """How the rollout engine decodes each round: the command configs' ``sampling()`` builds it."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


STOP_RULES = ("never", "stable", "confident")


@dataclass
class StopConfig:
    """When a multi-round rollout stops a conversation before round K (``selfcorrect.rollout.StopRule``):
    data_gen, eval and K-round RL take these options."""

    stop_when: Literal["never", "stable", "confident"] = field(
        default="never",
        metadata={"help": "Stop a settled conversation early."},
    )
    stop_patience: int = field(default=1, metadata={"help": "stable: rounds the answer stays the same."})
    stop_confidence: float = field(default=0.9, metadata={"help": "confident: the answer's option probability."})

    def __post_init__(self) -> None:
        if self.stop_when not in STOP_RULES:
            raise UserError(f"stop_when must be one of {', '.join(STOP_RULES)} (got '{self.stop_when}')")
        check_range("stop_patience", self.stop_patience, 1)
        check_range("stop_confidence", self.stop_confidence, 0.0, 1.0)

    def stop_settings(self) -> dict:
        """The options that change what a run writes; empty for ``never``, so a run without stopping
        keeps the identity it had before the rule existed."""
        if self.stop_when == "never":
            return {}
        return {"stop_when": self.stop_when, "stop_patience": self.stop_patience, "stop_confidence": self.stop_confidence}


@dataclass
class RolloutConfig(StopConfig):
    """Which model answers, and how K rounds are sampled and written."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Hub id, local folder, or 'smollm2-135m-instruct' (the embedded demo model)."},
    )
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder to apply on top of the model."})
    dtype: Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"] = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32."}
    )
    device: str | None = field(default=None, metadata={"help": "cuda / cpu; default: cuda when available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub (off by default)."})
    rounds: int = field(default=3, metadata={"help": "Number of rounds K (round 1 = first answer)."})
    samples: int = field(default=1, metadata={"help": "Trajectories per example (needs temperature > 0 to differ)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Maximum tokens generated per round."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding; > 0 samples."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold, in (0, 1]."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling."})
    batch_size: int = field(default=8, metadata={"help": "Trajectories decoded together."})
    generation_backend: Literal["hf", "vllm"] = field(
        default="hf",
        metadata={"help": "hf: our loop | vllm: a vLLM engine (docs/vllm.md)."},
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm backend: GPUs one engine spans (per process)."})
    # The model's own context length by default, as on the HF path (a conversation never cut short);
    # a 128k-context model on a small GPU may not fit one such sequence in the KV cache: vLLM then
    # refuses to start and names this option.
    max_model_len: int | None = field(
        default=None,
        metadata={"help": "vllm backend: max tokens per conversation (unset: model's)."},
    )
    gpu_memory_utilization: float = field(
        default=0.9,  # vLLM's default; each process's engine has its own GPU(s) (assign_gpus)
        metadata={"help": "vllm backend: GPU memory share per engine."},
    )
    # Long by default: the only collectives are the barriers at the start and the end, and after a
    # resume the processes have unequal shares left, so the first to finish waits there for the rest.
    ddp_timeout: int = field(
        default=86400,
        metadata={"help": "Seconds a process waits for the others at a barrier."},
    )
    output_dir: str = field(default="outputs/run", metadata={"help": "Where traces and results go."})

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.seed)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rounds", self.rounds, 1)
        check_range("samples", self.samples, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("temperature", self.temperature, 0.0)
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.samples > 1 and self.temperature == 0:
            raise UserError("samples > 1 with temperature 0 gives identical copies: set temperature > 0")
        check_range("tensor_parallel_size", self.tensor_parallel_size, 1)
        if self.max_model_len is not None:
            check_range("max_model_len", self.max_model_len, 1)
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise UserError(f"gpu_memory_utilization must be in (0, 1] (got {self.gpu_memory_utilization})")
        check_range("ddp_timeout", self.ddp_timeout, 1)

        check_device(self.device)


@dataclass
class OverwriteConfig:
    """Every command that writes an output folder takes it."""

    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Delete what this command wrote in the output folder and start fresh (same settings resume without it)."
        },
    )


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """One error line when ``value`` is outside [low, high], or not a number at all (NaN passes
    every comparison, and inf is no setting a user means)."""
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number (got {value})")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
        raise UserError(f"{name} must be {bounds} (got {value})")


# ---- the types of option values (recipes are checked against these) ----


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return "a list" if tp is list else tp.__name__
    return str(tp).replace("typing.", "")


def value_matches(value: Any, tp: Any) -> bool:
    """Does a YAML value fit a dataclass field type? bool is not int, and an int is not a bool."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return isinstance(value, str) and value in {e.value for e in tp}
    if origin is list or tp is list:
        args = typing.get_args(tp)
        return isinstance(value, list) and (not args or all(value_matches(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True  # a type we do not know how to check: the dataclass's own __post_init__ decides


def check_types(values: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    """One error line naming ``where`` and the key when a value in a user's YAML or JSON mapping
    (a prompt set, a task spec) does not fit its declared type; absent keys are the caller's to
    default. The same check recipes get, so a mapping where text belongs, or a list where a number
    belongs, never reaches ``int()`` or ``str()``.

    >>> check_types({"version": 2}, {"version": int}, "sets.yaml: prompt set 'x'")
    >>> check_types({"version": "v2"}, {"version": int}, "sets.yaml: prompt set 'x'")
    Traceback (most recent call last):
    ...
    selfcorrect.errors.UserError: sets.yaml: prompt set 'x': key 'version' must be int (got 'v2')
    """
    for key, tp in schema.items():
        if key in values and not value_matches(values[key], tp):
            raise UserError(f"{where}: key '{key}' must be {type_name(tp)} (got {values[key]!r:.60})")


def field_types(types_: list[type]) -> dict[str, Any]:
    out = {}
    for t in types_:
        try:
            hints = typing.get_type_hints(t)
        except Exception:  # noqa: BLE001 - an unresolvable annotation in a library config: no strict check for it
            hints = {}
        for f in dataclasses.fields(t):
            if f.init:
                out[f.name] = hints.get(f.name, Any)
    return out
