"""Checksum manifests of weights folders: ``manifest.json`` lists the size and SHA-256 of every file beside it.

The exporter (:mod:`mirage_env.train.export`) writes one into every folder it exports, the shipped tiny weights
included; :func:`~mirage_env.models.wan.from_preset` verifies it when a folder has one, so flipped bytes, a
truncated file, a file replaced without re-exporting or an unlisted file raise ``ValueError`` naming the file.
Folders without a manifest load as before. Hidden files (names starting with ``.``) are neither listed nor checked.

Layout (paths relative to the folder, ``/``-separated, sorted)::

    {"format": "mirage-env-weights-manifest", "version": 1,
     "files": {"lora/adapter_config.json": {"size": 512, "sha256": "3f1c..."}, ...}}
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "mirage-env-weights-manifest"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listed_files(folder: Path) -> list[str]:
    """Files under ``folder`` a manifest covers: all but the manifest itself and hidden ones, relative, sorted."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and relative.as_posix() != MANIFEST_FILE and \
                not any(part.startswith(".") for part in relative.parts):
            files.append(relative.as_posix())
    return sorted(files)


def build_manifest(folder: str | Path) -> dict:
    """The manifest of ``folder`` as it is now."""
    folder = Path(folder)
    files = {name: {"size": (folder / name).stat().st_size, "sha256": file_digest(folder / name)}
             for name in _listed_files(folder)}
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files}


def write_manifest(folder: str | Path) -> Path:
    """Write ``folder/manifest.json`` for the files in ``folder`` (complete or not at all); returns its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    text = json.dumps(build_manifest(folder), indent=1, sort_keys=True) + "\n"
    target = folder / MANIFEST_FILE
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST_FILE}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def manifest_problems(folder: str | Path) -> list[str]:
    """What differs between ``folder`` and its manifest (empty when they agree); ValueError if it has none or
    the manifest is unreadable."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
        listed = manifest["files"]
        ok = manifest["format"] == MANIFEST_FORMAT and manifest["version"] == MANIFEST_VERSION
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable weights manifest ({error!r})") from None
    if not ok or not isinstance(listed, dict):
        raise ValueError(f"{path}: not a {MANIFEST_FORMAT} of version {MANIFEST_VERSION}")
    problems = []
    for name, entry in sorted(listed.items()):
        file = folder / name
        if not file.is_file():
            problems.append(f"{file} is missing")
        elif file.stat().st_size != entry.get("size"):
            problems.append(f"{file} has {file.stat().st_size} bytes, the manifest says {entry.get('size')}")
        elif file_digest(file) != entry.get("sha256"):
            problems.append(f"{file} has another SHA-256 than the manifest says (changed or corrupt)")
    problems += [f"{folder / name} is not in the manifest" for name in _listed_files(folder) if name not in listed]
    return problems


def verify_manifest(folder: str | Path) -> bool:
    """Check ``folder`` against its ``manifest.json``: False when it has none, True when every file matches;
    ValueError naming the files otherwise."""
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        return False
    problems = manifest_problems(folder)
    if problems:
        raise ValueError(f"weights folder {folder} does not match its {MANIFEST_FILE}: " + "; ".join(problems)
                         + ". Re-export the weights (python -m mirage_env.train.export) or reinstall mirage-env.")
    return True
