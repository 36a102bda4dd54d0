"""Recipes and the options every command shares.

One parser serves every command (data_gen, eval, eval.external, eval.compare, the training entry
points, train.merge):

    task, data, run = parse_config([TaskOptions, DataSource, RolloutOptions], argv)

``--config recipe.yaml`` gives the values, ``--key value`` (or ``--key-value``) overrides them. A
key that no dataclass knows is an error naming the closest valid one, and recipe values are
type-checked strictly (``rounds: true`` or ``rounds: 2.7`` is an error, not 1 or 2). Range checks
live in each dataclass's ``__post_init__``, so a bad value stops the command before any work.
Types come from the dataclass fields (through transformers' HfArgumentParser, which also reads
TrainingArguments and TRL's configs).

The options declared here are shared: ``TaskOptions`` (which task and prompts), ``DataSource``
(which data file), ``SplitOptions`` (which part of a task's data), ``RolloutOptions`` (which model
and how to sample K rounds). Each is declared once and used by every command that needs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import yaml

from selfcorrect.errors import UserError

# ---- shared options --------------------------------------------------------------------------------


@dataclass
class TaskOptions:
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
class DataSource:
    """The data a command reads."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "data_gen / eval: the task's data, a local file or folder in its release format (unset: the "
            "hub dataset). Training: the data_gen output to train on (sft.jsonl, dpo.jsonl or rl.jsonl)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Use only the first N examples (training: rows)."})

    def __post_init__(self) -> None:
        if self.limit is not None:
            check_range("limit", self.limit, 1)


@dataclass
class SplitOptions:
    """Which part of a task's data data_gen or eval runs on."""

    split: str = field(default="test", metadata={"help": "Split to read (file name for folder datasets)."})
    skip: int = field(default=0, metadata={"help": "Skip the first N examples."})
    heldout_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of the task's groups (BBQ: templates) set aside by a hash; no group is on both sides."},
    )
    heldout: bool = field(
        default=False, metadata={"help": "Use the held-out share instead of the rest (eval: true, data_gen: false)."}
    )

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


@dataclass
class RolloutOptions:
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
        metadata={
            "help": "hf: the project's loop over transformers | vllm: a vLLM engine, same rounds and rows; for "
            "many examples on GPUs (README: Generation with vLLM)."
        },
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm backend: GPUs one engine spans (per process)."})
    output_dir: str = field(default="outputs/run", metadata={"help": "Where traces and results go."})

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.seed)

    def __post_init__(self) -> None:
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
        from selfcorrect.device import check_device

        check_device(self.device)


@dataclass
class OverwriteOption:
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


# ---- parsing -------------------------------------------------------------------------------------


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML follows YAML 1.1, where ``2e-5`` (no dot) is a string, so a recipe's
    learning rate (and every float json.dump writes that way) would be refused as not a float."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."),
)


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML (or JSON) mapping from ``path``, or one error line saying what is wrong with it."""
    if not os.path.isfile(path):
        raise UserError(f"recipe not found: {path}")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        data = yaml.load(text, Loader=_RecipeLoader) or {}
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as e:
        raise UserError(yaml_error(path, text, e)) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values")
    return data


def yaml_error(path: str, text: str, e: yaml.YAMLError) -> str:
    """``path:line:column: problem`` for a YAML error (PyYAML's first line has no position), naming
    a tab, which YAML never allows for indentation."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is None:
        return f"{path}: not valid YAML: {problem}"
    line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    if "\t" in line[: mark.column + 1] or "\t" in problem:
        problem = "a tab character (YAML indents with spaces only)"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return "a list" if tp is list else tp.__name__
    return str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Does a YAML value fit a dataclass field type? bool is not int, and an int is not a bool."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
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
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True  # a type we do not know how to check: the dataclass's own __post_init__ decides


def _field_types(types_: list[type]) -> dict[str, Any]:
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


def parse_config(
    types_: list[type],
    argv: list[str],
    defaults: dict[str, Any] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> tuple[Any, ...]:
    """Parse ``--config file.yaml`` plus ``--key value`` flags into instances of ``types_``.

    ``defaults`` replace the dataclass defaults (a recipe and flags still override them); ``prog``
    is the command shown by ``--help``, ``description`` (its first line) what it says the command
    does. ``--help`` shows the project's options, ``--help-all`` every library option too. Every
    mistake is one UserError line.
    """
    from transformers import HfArgumentParser  # ~0.7 s, no torch import

    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        print(format_help(types_, prog or "", description, defaults or {}))
        raise SystemExit(0)
    if "--help-all" in argv:
        argv = ["--help"]  # argparse's full listing, library options included
    recipe: dict[str, Any] = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise UserError("--config needs a path to a YAML recipe")
        recipe = load_yaml(argv[i + 1])
        del argv[i : i + 2]
    fields = _field_types(types_)
    valid = sorted(fields)
    for key, value in recipe.items():
        if key not in fields:
            raise UserError(f"unknown recipe key '{key}'{_suggest(key, valid)}")
        if not _matches(value, fields[key]):
            raise UserError(f"recipe key '{key}' must be {_type_name(fields[key])} (got {value!r})")
    for arg in argv:
        if arg.startswith("--"):
            key = arg[2:].split("=", 1)[0].replace("-", "_")
            if key not in fields and key != "help":
                raise UserError(f"unknown option '--{key}'{_suggest(key, valid)}")
    parser = HfArgumentParser(types_, prog=prog, description=_first_line(description))
    parser.add_argument("--config", metavar="RECIPE.yaml", help=CONFIG_HELP)

    def fail(message: str) -> typing.NoReturn:
        # A Literal option's wrong value reads as a recipe's does: "<key> must be one of ... (got ...)".
        bad = re.fullmatch(r"argument --(\w+)[^:]*: invalid choice: '?(.*?)'? \(choose from (.*)\)", message)
        if bad:
            choices = ", ".join(c.strip().strip("'") for c in bad[3].split(","))
            raise UserError(f"{bad[1]} must be one of {choices} (got '{bad[2]}')")
        raise UserError(message)

    parser.error = fail  # argparse's own errors (bad int, missing value) become one line too
    parser.set_defaults(**{**(defaults or {}), **recipe})
    try:
        out = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except (ValueError, TypeError) as e:
        raise UserError(f"invalid configuration: {str(e).splitlines()[0]}") from None
    *objs, rest = out
    if rest:
        raise UserError(f"unexpected command-line arguments: {' '.join(rest)}")
    objs = [o for o in objs if not isinstance(o, argparse.Namespace)]  # the --config slot
    for obj in objs:
        check_finite(obj)
    return tuple(objs)


def check_finite(obj: Any) -> None:
    """NaN or inf in any float option (a library config's too: learning_rate, adam_beta1, beta, ...)
    is one error line before any work: NaN passes every range comparison, so it would otherwise run."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{f.name} must be a finite number (got {v})")


# ---- help ------------------------------------------------------------------------------------------

_HELP_COL = 28  # where help text starts in --help
CONFIG_HELP = "YAML recipe giving any of the options below; flags override it."
PROJECT_PACKAGES = ("selfcorrect", "data_gen", "train", "eval")
# The TRL/transformers options a user of this project sets most; ``--help`` lists these, and the
# other ~150 (TrainingArguments, TRL's trainer configs, ModelConfig) are under ``--help-all``.
KEY_LIBRARY_OPTIONS = (
    "model_name_or_path",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "load_in_4bit",
    "dtype",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "activation_checkpointing",
    "max_length",
    "beta",
    "num_generations",
    "max_completion_length",
    "output_dir",
    "logging_steps",
    "save_steps",
    "resume_from_checkpoint",
    "report_to",
    "run_name",
    "push_to_hub",
    "hub_model_id",
)


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0] if text and text.strip() else None


def _is_project(t: type) -> bool:
    # a training entry point run as a script declares its options in __main__
    return t.__module__.split(".")[0] in (*PROJECT_PACKAGES, "__main__")


def _group_title(t: type) -> str:
    doc = t.__doc__ or ""
    # a dataclass without a docstring gets "Name(field: type = ...)" from dataclasses
    return t.__name__ if not doc or doc.startswith(t.__name__ + "(") else _first_line(doc).rstrip(".")


def _metavar(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _metavar(args[0]) if len(args) == 1 else "VALUE"
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin is list or tp is list:
        return f"{_metavar((typing.get_args(tp) or (str,))[0])} [...]"
    if tp is bool:
        return "BOOL"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "{" + ",".join(str(e.value) for e in tp) + "}"
    return tp.__name__.upper() if isinstance(tp, type) else "VALUE"


def _default(f: dataclasses.Field, defaults: dict[str, Any]) -> Any:
    if f.name in defaults:
        return defaults[f.name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _option_lines(f: dataclasses.Field, tp: Any, default: Any, first_sentence: bool, width: int) -> list[str]:
    import textwrap

    text = " ".join(str(f.metadata.get("help", "")).split())
    if first_sentence:
        # library help runs to paragraphs; its first sentence says what the option is
        text = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0]
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, bool):
        default = str(default).lower()  # as a recipe or flag writes it
    if default not in (None, "", []):
        text += f" (default: {default})"
    head = f"  --{f.name} {_metavar(tp)}"
    # a long option name pushes its first line of help right instead of taking a line of its own
    first = head.ljust(_HELP_COL) if len(head) + 2 <= _HELP_COL else head + "  "
    return textwrap.wrap(text, max(width, _HELP_COL + 30), initial_indent=first, subsequent_indent=" " * _HELP_COL) or [head]


def format_help(types_: list[type], prog: str, description: str | None, defaults: dict[str, Any]) -> str:
    """``--help``: what the command does, the project's options grouped by dataclass, then the most
    used TRL/transformers options and a pointer to ``--help-all`` for the rest."""
    import shutil

    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    hints = _field_types(types_)
    lines = [f"usage: {prog} [--config RECIPE.yaml] [--OPTION VALUE ...]"]
    if _first_line(description):
        lines += ["", _first_line(description)]
    lines += ["", "  --config RECIPE.yaml".ljust(_HELP_COL) + CONFIG_HELP]
    seen: set[str] = set()
    library: list[dataclasses.Field] = []
    # the command's own options first, then the shared ones (selfcorrect/config.py), then the library's
    for t in sorted(types_, key=lambda t: t.__module__.startswith("selfcorrect")):
        fields_ = [f for f in dataclasses.fields(t) if f.init and f.name not in seen]
        seen.update(f.name for f in fields_)
        if not _is_project(t):
            library += fields_
            continue
        lines += ["", f"{_group_title(t)}:"]
        for f in fields_:
            lines += _option_lines(f, hints[f.name], _default(f, defaults), False, width)
    if library:
        key = sorted((f for f in library if f.name in KEY_LIBRARY_OPTIONS), key=lambda f: KEY_LIBRARY_OPTIONS.index(f.name))
        lines += ["", "Most used TRL/transformers options:"]
        for f in key:
            lines += _option_lines(f, hints[f.name], _default(f, defaults), True, width)
        lines += ["", f"{len(library) - len(key)} more TRL/transformers options: {prog} --help-all"]
    return "\n".join(lines)


# ---- writing a config next to outputs --------------------------------------------------------------

# Exact option names that carry credentials (never a substring match: max_new_tokens is no secret).
SECRET_KEYS = {
    "hub_token",
    "push_to_hub_token",
    "hf_token",
    "token",
    "api_key",
    "wandb_api_key",
    "password",
    "secret",
    "access_token",
    "auth_token",
}
_SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})$")  # hub and API key formats
_SECRET_ENV = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
REDACTED = "<redacted>"


def _secret_env_values() -> set[str]:
    return {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8}


def redact_secret_values(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with every value that looks like a key, or equals a secret-named environment variable,
    replaced by REDACTED (for run identities, which name values rather than options)."""
    secrets = _secret_env_values()
    return {k: REDACTED if isinstance(v, str) and (v in secrets or _SECRET_VALUE.match(v)) else v for k, v in d.items()}


def config_to_dict(*objs: Any) -> dict[str, Any]:
    """The resolved configuration as plain data, written next to outputs so that
    ``--config <that file>`` re-runs the command. Secrets are redacted by exact option name, by the
    look of the value (hub and API keys) and by equality with a secret-named environment variable.
    ``overwrite`` is left out: it is an action on the folder, not a setting of the run, and a saved
    config must resume its run, not wipe it."""
    secrets = _secret_env_values()
    out: dict[str, Any] = {}
    for obj in objs:
        d = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        types_ = _field_types([type(obj)])
        for k, v in d.items():
            if k == "overwrite":
                continue
            if isinstance(v, str) and k in types_ and not _matches(v, types_[k]) and _matches([v], types_[k]):
                v = [v]  # TRL's ModelConfig turns lora_target_modules ["all-linear"] into "all-linear"
            if k.endswith("_token") and v == f"<{k.upper()}>":
                # transformers' TrainingArguments.to_dict masks every *_token key (pad_token, eos_token
                # too); take the real value and let the rules below redact the secret ones.
                v = getattr(obj, k)
            if isinstance(v, Enum):
                v = v.value
            if k.lower() in SECRET_KEYS and v not in (None, ""):
                out[k] = REDACTED
            elif isinstance(v, str) and (v in secrets or _SECRET_VALUE.match(v)):
                out[k] = REDACTED
            elif isinstance(v, (str, int, float, bool, type(None), list, dict)):
                out[k] = v
            else:
                out[k] = str(v)
    return out
