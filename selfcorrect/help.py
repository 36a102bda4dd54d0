"""``--help`` for every command: the project's options grouped by dataclass, then the most used
TRL/transformers options (``--help-all``: argparse's full listing)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import textwrap
import types
import typing
from enum import Enum
from typing import Any

from selfcorrect.config import field_types

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


def first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0] if text and text.strip() else None


def _is_project(t: type) -> bool:
    # a training entry point run as a script declares its options in __main__
    return t.__module__.split(".")[0] in (*PROJECT_PACKAGES, "__main__")


def _group_title(t: type) -> str:
    doc = t.__doc__ or ""
    # a dataclass without a docstring gets "Name(field: type = ...)" from dataclasses
    return t.__name__ if not doc or doc.startswith(t.__name__ + "(") else first_line(doc).rstrip(".")


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
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    hints = field_types(types_)
    lines = [f"usage: {prog} [--config RECIPE.yaml] [--OPTION VALUE ...]"]
    if first_line(description):
        lines += ["", first_line(description)]
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
