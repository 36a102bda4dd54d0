"""What a run is: the settings that change what it writes, recorded in ``<output_dir>/run.json``.

A re-run into the same folder resumes only when these match; otherwise it stops with one line that
names the first setting that differs, before it writes anything. ``--overwrite`` is the explicit way
out: it deletes what that command wrote there (and nothing else) and starts fresh.

Weights and data are identified by content, not by name: a local file by its size and SHA-256
(weights larger than 64 MiB by their size and the SHA-256 of their first and last MiB, which hold
the safetensors header and the last tensors), a hub model by the commit of its cached snapshot.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from typing import Any

from selfcorrect.errors import UserError
from selfcorrect.jsonl import write_atomic

RUN_FILE = "run.json"
_METADATA = ("config.json", "selfcorrect_config.json")  # written when a run starts, before any result
# A model that is not on disk yet (a hub id before its first download, the embedded model before its
# first conversion) has no content identity when a run claims its folder; the run that downloads it
# records the real one, and a resumed run accepts that change.
UNRESOLVED = "unresolved: not downloaded yet"
_MIB = 1 << 20


def file_identity(path: str) -> str:
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= 64 * _MIB:
            for chunk in iter(lambda: f.read(_MIB), b""):
                h.update(chunk)
        else:
            h.update(f.read(_MIB))
            f.seek(-_MIB, os.SEEK_END)
            h.update(f.read(_MIB))
    return f"{size}:{h.hexdigest()[:16]}"


def folder_identity(path: str, patterns: tuple[str, ...]) -> str:
    """Identity of the files matching ``patterns`` in a folder (or of one file)."""
    if os.path.isfile(path):
        return file_identity(path)
    files = sorted({f for p in patterns for f in glob.glob(os.path.join(path, p))})
    h = hashlib.sha256()
    for f in files:
        h.update(f"{os.path.relpath(f, path)}={file_identity(f)};".encode())
    return h.hexdigest()[:16] if files else "empty"


def model_identity(name_or_path: str | None) -> str | None:
    """Content identity of a model or adapter: local weights and config, or a hub snapshot's commit."""
    if not name_or_path:
        return None
    if os.path.exists(name_or_path):
        return folder_identity(name_or_path, ("*.safetensors", "*.json", "*.bin"))
    from selfcorrect.modeling import SMOLLM2_ALIAS, cache_dir

    if name_or_path == SMOLLM2_ALIAS:
        local = os.path.join(cache_dir(), SMOLLM2_ALIAS)
        return folder_identity(local, ("*.safetensors", "config.json")) if os.path.isdir(local) else UNRESOLVED
    try:  # a hub id: the commit of the snapshot in the local cache, if any
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
        if isinstance(cached, str):
            return os.path.basename(os.path.dirname(cached))
    except Exception:  # noqa: BLE001 - no cache information: the name alone identifies it
        pass
    return UNRESOLVED


def data_identity(path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.exists(path):
        return "missing"
    return folder_identity(path, ("*.jsonl", "*.json", "*.tsv", "*.csv", "data/*.jsonl"))


def check_run(output_dir: str, command: str, settings: dict[str, Any], owned: list[str], overwrite: bool) -> bool:
    """Make ``output_dir`` this run's folder. Returns True when it resumes an earlier identical run.

    ``owned`` are the names (files or folders, globs allowed) this command writes there: with
    ``overwrite`` they are deleted first. A folder written by another command, or by this command
    with other settings, is an error naming the first difference (unless ``overwrite``)."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"output_dir {output_dir} is a file, not a folder")
    path = os.path.join(output_dir, RUN_FILE)
    record = {"command": command, "settings": settings}
    if overwrite:
        for pattern in owned + [RUN_FILE]:
            for p in glob.glob(os.path.join(output_dir, pattern)):
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    elif os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            raise UserError(f"{path} is unreadable: pass --overwrite true to start fresh") from None
        if old.get("command") != command:
            raise UserError(
                f"{output_dir} holds a '{old.get('command')}' run, not '{command}': choose another output_dir "
                "(or --overwrite true to replace it)"
            )
        # A run that stopped before writing any result (a bad model or data file) leaves nothing to
        # mix with: the corrected re-run takes the folder over.
        produced = any(glob.glob(os.path.join(output_dir, p)) for p in owned if p not in _METADATA)
        resolved = False
        for key in sorted(set(settings) | set(old.get("settings", {}))):
            if old["settings"].get(key) == UNRESOLVED and settings.get(key) is not None:
                resolved = True
            elif old["settings"].get(key) != settings.get(key):
                if not produced:
                    write_atomic(path, json.dumps(record, indent=2))
                    return False
                raise UserError(
                    f"{output_dir} was written with {key}={old['settings'].get(key)!r}, this run has {key}={settings.get(key)!r}: "
                    "use another output_dir, or --overwrite true to start fresh there"
                )
        if resolved:
            write_atomic(path, json.dumps(record, indent=2))
        return True
    elif any(glob.glob(os.path.join(output_dir, p)) for p in owned):
        raise UserError(
            f"{output_dir} holds outputs of a run without {RUN_FILE} (older or another tool): choose another "
            "output_dir, or --overwrite true to start fresh there"
        )
    try:
        os.makedirs(output_dir, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=2))
    except OSError as e:
        raise UserError(f"cannot write to output_dir {output_dir} ({e.strerror})") from None
    return False
