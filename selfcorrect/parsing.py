"""Recipes and flags -> typed option dataclasses.

One parser serves every command (data_gen, eval, eval.external, eval.compare, the training entry
points, train.merge):

    task, data, run = parse_config([TaskConfig, DataConfig, RolloutConfig], argv)

``--config recipe.yaml`` gives the values, ``--key value`` (or ``--key-value``) overrides them. A
key that no dataclass knows is an error naming the closest valid one, and recipe values are
type-checked strictly (``rounds: true`` or ``rounds: 2.7`` is an error, not 1 or 2). Range checks
live in each dataclass's ``__post_init__``, so a bad value stops the command before any work.
Types come from the dataclass fields (through transformers' HfArgumentParser, which also reads
TrainingArguments and TRL's configs).

"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import typing
from typing import Any

import yaml

from selfcorrect.config import field_types, type_name, value_matches
from selfcorrect.errors import UserError
from selfcorrect.help import CONFIG_HELP, first_line, format_help


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML follows YAML 1.1, where ``2e-5`` (no dot) is a string, so a recipe's
    learning rate (and every float json.dump writes that way) would be refused as not a float.

    A key given twice in one mapping is an error: PyYAML keeps the last silently, so the value the
    user reads first is not the one that runs."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: PyYAML's own error names it
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first given on line {first.line + 1})", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


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
    recipe_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise UserError("--config needs a path to a YAML recipe")
        recipe_path = argv[i + 1]
        recipe = load_yaml(recipe_path)
        del argv[i : i + 2]
    fields = field_types(types_)
    valid = sorted(fields)
    for key, value in recipe.items():
        if key not in fields:
            raise UserError(f"{recipe_path}: unknown recipe key '{key}'{_suggest(key, valid)}")
        if not value_matches(value, fields[key]):
            raise UserError(f"{recipe_path}: recipe key '{key}' must be {type_name(fields[key])} (got {value!r})")
    for arg in argv:
        if arg.startswith("--"):
            key = arg[2:].split("=", 1)[0].replace("-", "_")
            if key not in fields and key != "help":
                raise UserError(f"unknown option '--{key}'{_suggest(key, valid)}")
    parser = HfArgumentParser(types_, prog=prog, description=first_line(description))
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
