"""What a run is: the settings that change what it writes, recorded in ``<output_dir>/run.json``.

A re-run into the same folder resumes only when these match; otherwise it stops with one line that
names the first setting that differs, before it writes anything. ``--overwrite`` is the explicit way
out: it deletes what that command wrote there and starts fresh, and refuses a folder that holds
anything else. The folder is locked for the whole run, so a second command into it is refused
before it does any work.

Weights and data are identified by content, not by name: a local file by its size and SHA-256
(weights larger than 64 MiB by their size and the SHA-256 of their first and last MiB, which hold
the safetensors header and the last tensors), a hub model by the commit of its cached snapshot. A
model folder's identity is its config and weights only (``MODEL_FILES``): what a training run writes
beside them (training_args.bin, its config and card) differs between two runs that trained the same
weights, and the same model copied to another folder is the same model.
"""

from __future__ import annotations

import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import shutil
from typing import Any

from selfcorrect.demo_model import SMOLLM2_ALIAS, converted_dir
from selfcorrect.errors import UserError
from selfcorrect.jsonl import write_atomic

RUN_FILE = "run.json"
MODEL_FILES = ("*.safetensors", "config.json", "adapter_config.json")
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
        return folder_identity(name_or_path, MODEL_FILES)
    if name_or_path == SMOLLM2_ALIAS:
        local = converted_dir()
        return folder_identity(local, MODEL_FILES) if os.path.isdir(local) else UNRESOLVED
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


# Files any command may leave behind when killed mid-write (write_atomic's temporary files).
_TEMPORARY = "*.tmp.*"
_LOCKS: dict[str, int] = {}  # realpath of a claimed output folder -> the open descriptor holding its lock


def lock_output_dir(output_dir: str) -> None:
    """Hold an exclusive lock on ``output_dir`` until this process ends (or ``release_locks``).

    The lock is ``flock`` on the folder itself, so no lock file is left behind and the kernel
    releases it when the holder exits however it exits (kill -9 included): a stale lock cannot
    exist. Under ``accelerate launch`` only the main process claims the folder, so the ranks of one
    launch never contend; a second launch (or command) into the same folder is refused here."""
    key = os.path.realpath(output_dir)
    if key in _LOCKS:
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"{output_dir} is in use by another run that is still going: wait for it to finish, or choose another output_dir"
        ) from None
    _LOCKS[key] = fd


def release_locks() -> None:
    """Give up every output folder this process claimed (``run_cli`` calls it when a command ends)."""
    while _LOCKS:
        os.close(_LOCKS.popitem()[1])


def _matches_any(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _foreign_entries(output_dir: str, owned: list[str]) -> list[str]:
    """Entries of ``output_dir`` this command does not write: anything but its own names, run.json
    and temporary files. A sub-folder that holds its own run (an eval inside an adapter folder) is
    another run's, never this one's to delete, and is not counted."""
    out = []
    for name in sorted(os.listdir(output_dir)):
        if _matches_any(name, [*owned, RUN_FILE, _TEMPORARY]):
            continue
        if os.path.isfile(os.path.join(output_dir, name, RUN_FILE)):
            continue
        out.append(name)
    return out


def _names(entries: list[str]) -> str:
    return ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")


def check_run(output_dir: str, command: str, settings: dict[str, Any], owned: list[str], overwrite: bool) -> bool:
    """Make ``output_dir`` this run's folder, locked for the rest of the process. Returns True when
    it resumes an earlier identical run.

    ``owned`` are the names (files or folders, globs allowed) this command writes there. A folder
    holding another command's run, or this command's run with other settings, is refused, naming
    the first difference. ``overwrite`` deletes this command's own outputs, and only when run.json
    says this command wrote them and the folder holds nothing else: what a run did not write (a
    model, another run, the user's files) is never deleted, and no refusal suggests a flag that
    would delete it."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"output_dir {output_dir} is a file, not a folder")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output_dir {output_dir} ({e.strerror})") from None
    lock_output_dir(output_dir)
    path = os.path.join(output_dir, RUN_FILE)
    record = {"command": command, "settings": settings}
    ours = [n for n in os.listdir(output_dir) if _matches_any(n, owned) and n != RUN_FILE]
    if not os.path.exists(path):
        if ours:
            raise UserError(
                f"{output_dir} already holds {_names(sorted(ours))} without a {RUN_FILE}: files no selfcorrect "
                f"'{command}' run recorded (a model, another tool's output, your own files); choose an empty or new output_dir"
            )
        return _record(path, output_dir, record)
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
            raise ValueError
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable, so what this folder holds is unknown: choose another output_dir") from None
    if old.get("command") != command:
        raise UserError(f"{output_dir} holds a '{old.get('command')}' run, not '{command}': choose another output_dir")
    if overwrite:
        foreign = _foreign_entries(output_dir, owned)
        if foreign:
            raise UserError(
                f"--overwrite deletes only what '{command}' wrote, and {output_dir} also holds {_names(foreign)}: "
                "move those away, or choose another output_dir"
            )
        for name in ours + [RUN_FILE]:
            p = os.path.join(output_dir, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        return _record(path, output_dir, record)
    # A run that stopped before writing any result (a bad model or data file) leaves nothing to
    # mix with: the corrected re-run takes the folder over.
    produced = any(not _matches_any(n, list(_METADATA)) for n in ours)
    resolved = False
    for key in sorted(set(settings) | set(old["settings"])):
        if old["settings"].get(key) == UNRESOLVED and settings.get(key) is not None:
            resolved = True
        elif old["settings"].get(key) != settings.get(key):
            if not produced:
                _record(path, output_dir, record)
                return False
            raise UserError(
                f"{output_dir} was written with {key}={old['settings'].get(key)!r}, this run has {key}={settings.get(key)!r}: "
                "use another output_dir, or --overwrite true to start fresh there"
            )
    if resolved:
        _record(path, output_dir, record)
    return True


def check_outside_inputs(output_dir: str, inputs: dict[str, str | None], out_option: str = "--output_dir") -> None:
    """Refuse an output folder that is, or is inside, a folder the run reads (``inputs``: option ->
    path; files and unset options are skipped): the run's files would land among its inputs, a
    folder dataset would read them back, and --overwrite would have inputs beside what it deletes.

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> check_outside_inputs(os.path.join(d, "..", "out"), {"--dataset_path": d})
    >>> check_outside_inputs(os.path.join(d, "out"), {"--dataset_path": d})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    selfcorrect.errors.UserError: --output_dir .../out is (inside) the --dataset_path folder ..., which this run reads: choose an output folder outside it
    """
    out = os.path.realpath(output_dir)
    for option, folder in inputs.items():
        if folder and os.path.isdir(folder):
            real = os.path.realpath(folder)
            if os.path.commonpath([out, real]) == real:
                raise UserError(
                    f"{out_option} {output_dir} is (inside) the {option} folder {folder}, which this run reads: "
                    "choose an output folder outside it"
                )


def _record(path: str, output_dir: str, record: dict[str, Any]) -> bool:
    try:
        write_atomic(path, json.dumps(record, indent=2))
    except OSError as e:
        raise UserError(f"cannot write to output_dir {output_dir} ({e.strerror})") from None
    return False
