"""Atomic writes: every file or folder mirage-env writes appears under its final name complete or not at all.

A file is written to a hidden temporary sibling, flushed to disk (fsync) and renamed over the final name
(``os.replace``); the folder is fsynced after the rename so that the rename itself is durable. A folder (a
training checkpoint, a weights folder) is written to a temporary sibling folder, fsynced file by file, and
switched in by two renames: the old folder to a backup name, the new one to the final name; then the backup is
removed. :func:`recover_dir` (run before every folder write and by readers such as ``Trainer`` resume) finishes a
switch that a kill interrupted: the backup comes back when the final name is missing, and is removed otherwise.

    with atomic_file("out/video.mp4") as tmp:      # tmp keeps the suffix, so writers pick the same format
        write_something(tmp)
    with atomic_dir("runs/tiny/weights") as tmp:   # an empty folder; fill it, it replaces the old one on exit
        model.save_pretrained(tmp)
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".tmp-"
"""Temporary siblings of ``<stem><suffix>`` are named ``.<stem>.tmp-<hex><suffix>`` (files and folders)."""


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.stem}{TEMP_MARK}{secrets.token_hex(4)}{path.suffix}")


def backup_dir(path: str | Path) -> Path:
    """Where :func:`atomic_dir` keeps the previous folder while it switches the new one in."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) for a writer to create; when the block ends without an
    error the file is fsynced and renamed onto ``path``, otherwise it is removed. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_sibling(path)
    try:
        yield temp
        fsync_path(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path, parts: Collection[str] | None = None) -> Iterator[Path]:
    """An empty temporary folder beside ``path``; when the block ends without an error everything in it is
    fsynced and it replaces ``path`` (see the module docstring), otherwise it is removed. With ``parts``, only
    those top-level entries of ``path`` are replaced (written anew or dropped): the other entries of the old
    folder are carried into the new one as hard links (copies where the file system has none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    temp = _temp_sibling(path)
    temp.mkdir()
    try:
        yield temp
        if parts is not None and path.is_dir():
            _carry_over(path, temp, set(parts))
        for entry in sorted(temp.rglob("*"), reverse=True):  # files before the folders holding them
            fsync_path(entry)
        fsync_path(temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _switch(temp, path)


def _carry_over(old: Path, new: Path, parts: set[str]) -> None:
    for entry in old.iterdir():
        if entry.name in parts or (new / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, new / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, new / entry.name)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _switch(temp: Path, path: Path) -> None:
    backup = backup_dir(path)
    if path.exists():
        os.rename(path, backup)
        fsync_path(path.parent)
    os.rename(temp, path)
    fsync_path(path.parent)
    if backup.exists():
        shutil.rmtree(backup)


def recover_dir(path: str | Path) -> None:
    """Finish a folder switch of :func:`atomic_dir` that was interrupted, and remove its leftover temporary
    folders: with ``path`` missing its backup is renamed back, with both present the backup is removed."""
    path = Path(path)
    backup = backup_dir(path)
    if backup.exists():
        if path.exists():
            shutil.rmtree(backup)
        else:
            os.rename(backup, path)
            fsync_path(path.parent)
    remove_temps(path)


def remove_temps(path: str | Path) -> None:
    """Remove the temporary siblings that killed writes of ``path`` left behind (only safe where no other
    process is writing ``path`` at the same time)."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.stem)}{TEMP_MARK}*{glob.escape(path.suffix)}"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def check_writable(path: str | Path, folder: bool = False) -> Path:
    """``path`` as a Path; raises ValueError unless a file (or with ``folder``, a folder) can be written there:
    nothing of the other kind may sit at ``path`` and its nearest existing ancestor must be a writable folder."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a file" if folder else "a folder"
        raise ValueError(f"cannot write {str(path)!r}: {kind} of that name exists")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(path)!r}: no write permission in {str(ancestor)!r}")
    return path
