"""Which examples a run reads: the task's rows after ``--skip``, the held-out side of a
template-hashed split, and ``--limit``. Kept apart from the rollout code so commands that only
score traces (eval.external) can use it without loading torch."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from selfcorrect.config import DataConfig, SplitConfig
from selfcorrect.errors import UserError
from selfcorrect.tasks.base import Example, Task


def load_examples(task: Task, data: DataConfig, split: SplitConfig) -> Iterator[Example]:
    """Stream the task's examples after skip / held-out split / limit; duplicate ids are an error."""
    check_split(task, data.dataset_path, split.split)
    seen: set[str] = set()
    n = 0
    for i, ex in enumerate(task.load(data.dataset_path, split.split)):
        if i < split.skip:
            continue
        if split.heldout_fraction > 0 and is_heldout(task.group(ex), split.heldout_fraction) != split.heldout:
            continue
        if data.limit is not None and n >= data.limit:
            break
        if ex.id in seen:
            raise UserError(f"duplicate example id '{ex.id}' in {data.dataset_path}")
        seen.add(ex.id)
        n += 1
        yield ex


def check_split(task: Task, dataset_path: str | None, split: str) -> None:
    """A ``--split`` the data cannot honour is refused, not ignored (the run would read every row)."""
    default = SplitConfig.__dataclass_fields__["split"].default
    if split != default and not task.reads_split(dataset_path):
        raise UserError(
            f"task {task.name} reads every row of {dataset_path or 'its data'}, which has no '{split}' split: leave --split "
            "unset (set aside a part with --heldout_fraction)"
        )


def is_heldout(group: str, fraction: float) -> bool:
    """Deterministic split by the task's group (``Task.group``: BBQ's category and template, a
    Winogender occupation): the same items are held out in every run and on every machine, and items
    that share a template (people, wording, answer) are never on both sides. A split by example id
    left almost every held-out BBQ item with a training sibling from its template."""
    return zlib.crc32(group.encode()) % 10000 < fraction * 10000
