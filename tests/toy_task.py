"""A test-only task whose reward varies across random tiny-model samples (so RL gradients are non-zero).

Loaded through the user-class path: ``--task toy_task:EvenLengthTask`` with tests/ on PYTHONPATH.
"""

from selfcorrect.jsonl import read_rows
from selfcorrect.tasks.base import Example, Grade, Task


class EvenLengthTask(Task):
    name = "even_length"

    def load(self, dataset_path, split="test"):
        for i, row in enumerate(read_rows(dataset_path)):
            yield Example(id=str(i), question=row["prompt"], gold="even")

    def grade(self, example, response):
        ok = isinstance(response, str) and len(response) % 2 == 0
        return Grade(answer="even" if ok else "odd", correct=ok, reward=float(ok))
