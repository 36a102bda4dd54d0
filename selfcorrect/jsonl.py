"""JSON-lines I/O that survives interruption.

- ``append_rows`` writes a whole batch with one ``write`` and fsyncs, so a finished batch is on disk
  before the next one starts.
- ``repair_tail`` cuts a partial last line (left by kill -9 or a full disk) before a run resumes.
- ``write_atomic`` writes to a temporary file and renames it, so readers never see half a file.
- ``read_rows`` streams rows and names the file and line of a malformed one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from selfcorrect.errors import UserError


def read_rows(path: str) -> Iterator[dict[str, Any]]:
    """Stream JSON objects from a .jsonl file; blank lines are skipped."""
    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}:{lineno}: not UTF-8 text (JSON Lines files are UTF-8)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object per line")
            yield row


def repair_tail(path: str) -> int:
    """Truncate a trailing partial line; returns the number of bytes removed."""
    if not os.path.exists(path):
        return 0
    size = os.path.getsize(path)
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline in 64 KiB steps.
        pos, keep = size, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = pos + idx + 1
                break
        f.truncate(keep)
        return size - keep


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def append_rows(path: str, rows: Iterable[dict[str, Any]]) -> None:
    data = "".join(dumps(r) + "\n" for r in rows)
    if not data:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_rows_atomic(path: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows to ``path`` atomically (streamed to a temp file, then renamed)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(dumps(r) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # bad input or Ctrl-C mid-stream: leave no half-written file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return n
