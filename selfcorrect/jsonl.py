"""JSON-lines I/O that survives interruption.

- ``append_rows`` writes a whole batch with one ``write`` and fsyncs, so a finished batch is on disk
  before the next one starts.
- ``repair_tail`` cuts a partial last line (left by kill -9 or a full disk) before a run resumes.
- ``write_atomic`` writes to a temporary file and renames it, so readers never see half a file.
- ``read_rows`` streams rows and names the file and line of a malformed one.
"""

from __future__ import annotations

import errno
import json
import math
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


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None: JSON has no NaN, and a file holding
    a bare ``NaN`` is not JSON other tools can read. An undefined metric is null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """Indented, valid JSON (see ``finite``) for files such as metrics.json."""
    return json.dumps(finite(obj), indent=2, allow_nan=False)


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def disk_full(e: OSError, what: str, kept: str = "everything written before it is kept") -> UserError | None:
    """One line for a full disk (ENOSPC) while writing ``what``; None for any other OSError."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return UserError(f"disk full while writing {what}: {kept}; free some space and re-run the same command")


def append_rows(path: str, rows: Iterable[dict[str, Any]]) -> None:
    """Append a batch; on a full disk the rows already in ``path`` survive (a partial last line is
    cut by ``repair_tail`` when the run resumes)."""
    data = "".join(dumps(r) + "\n" for r in rows)
    if not data:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise disk_full(e, path, "the rows finished before this batch are kept") or e from None


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise disk_full(e, path) or e from None


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
    except BaseException as e:  # bad input, Ctrl-C or a full disk mid-stream: leave no half-written file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and disk_full(e, path):
            raise disk_full(e, path, "the data it is made from is kept") from None
        raise
    return n
