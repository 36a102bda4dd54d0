"""Tasks: ``get_task(name)`` returns a built-in task, a YAML-spec task or a user class.

Built-in names: bbq, winogender, gsm8k, toxicity, refusal. A path ending in .yaml/.yml is a task
spec (see custom.py); ``package.module:ClassName`` imports a Task subclass.
"""

from __future__ import annotations

import difflib
import importlib
import os

from selfcorrect.errors import UserError
from selfcorrect.parsing import load_yaml
from selfcorrect.prompts import get_prompt_set
from selfcorrect.tasks.base import UNPARSED, Example, Grade, Task
from selfcorrect.tasks.bbq import BBQTask
from selfcorrect.tasks.custom import SpecTask
from selfcorrect.tasks.gsm8k import GSM8KTask
from selfcorrect.tasks.refusal import RefusalTask
from selfcorrect.tasks.toxicity import ToxicityTask
from selfcorrect.tasks.winogender import WinogenderTask


def _builtin() -> dict[str, type]:
    return {t.name: t for t in (BBQTask, WinogenderTask, GSM8KTask, ToxicityTask, RefusalTask)}


BUILTIN_TASKS = ("bbq", "winogender", "gsm8k", "toxicity", "refusal")


def get_task(name: str, classifier: str | None = None, threshold: float = 0.5) -> Task:
    """``classifier``/``threshold`` go to the model-scored tasks (toxicity, refusal)."""
    if name.endswith((".yaml", ".yml")):
        return SpecTask(load_yaml(name), source=name)
    if ":" in name and not os.path.exists(name):
        module, _, cls_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot import task class '{name}' ({e})") from None
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise UserError(f"'{name}' is not a selfcorrect.tasks.base.Task subclass")
        return cls()
    tasks = _builtin()
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown task '{name}'{hint}; built-in tasks: {', '.join(BUILTIN_TASKS)}")
    if name in ("toxicity", "refusal"):
        return tasks[name](classifier=classifier, threshold=threshold)
    return tasks[name]()


def task_and_prompt_set(opts):
    """The task and prompt set a command's TaskConfig name, checked against each other."""
    task = get_task(opts.task, opts.classifier, opts.threshold)
    prompt_set = get_prompt_set(opts.prompt_set, opts.prompt_sets_file)
    if prompt_set.multiple_choice and not task.multiple_choice:
        raise UserError(
            f"prompt set '{prompt_set.name}' asks for an answer choice but task '{task.name}' has no choices: "
            "use cot, intrinsic or external-feedback (or a prompt set of your own)"
        )
    return task, prompt_set


__all__ = ["Example", "Grade", "Task", "UNPARSED", "get_task", "task_and_prompt_set"]
