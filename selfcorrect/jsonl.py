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


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose key repeats is refused: json keeps the last value silently."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def loads_unique(text: str) -> Any:
    """``json.loads`` that refuses a key given twice in one object.

    >>> loads_unique('{"a": 1, "b": {"c": 2}}')
    {'a': 1, 'b': {'c': 2}}
    >>> loads_unique('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    selfcorrect.jsonl._DuplicateKey: a
    """
    return json.loads(text, object_pairs_hook=_unique_keys)


def not_a_folder(path: str, what: str = "a .jsonl file", meant: str | None = None) -> None:
    """One line for a folder given where a file is expected, naming the file probably meant:
    ``meant`` when the caller knows it, else the folder's only .jsonl file."""
    if not os.path.isdir(path):
        return
    if meant is None:
        found = sorted(n for n in os.listdir(path) if n.endswith(".jsonl"))
        meant = os.path.join(path, found[0]) if len(found) == 1 else None
    hint = f": did you mean {meant}?" if meant else ""
    raise UserError(f"{path} is a folder; {what} is expected here{hint}")


def read_rows(path: str) -> Iterator[dict[str, Any]]:
    """Stream JSON objects from a .jsonl file; blank lines are skipped."""
    not_a_folder(path)
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
                row = loads_unique(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            except _DuplicateKey as e:
                raise UserError(f"{path}:{lineno}: key '{e}' is given twice in one row (JSON keeps only the last)") from None
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
