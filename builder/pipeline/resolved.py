"""The resolved plan (``OUT/.NAME.resolved.json``): what each artifact resolved to, so a
rerun of an unchanged spec entry asks no server anything. (Beside it, ``.NAME.building.lock``
is the mutex of one build at a time: a lock in the other sense.)"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from builder.artifact import ArtifactSpec
from builder.sources import Source

LOCK_FORMAT = 1


def lock_path(out_dir: Path, name: str) -> Path:
    """The resolved plan of bundle ``name``: next to the bundle, not in it (not published).
    A folder built before the rename holds ``.NAME.lock.json``: it is read (and replaced)."""
    path = out_dir / f".{name}.resolved.json"
    older = out_dir / f".{name}.lock.json"
    if not path.exists() and older.exists():
        with contextlib.suppress(OSError):
            os.replace(older, path)
    return path


def mutex_path(out_dir: Path, name: str) -> Path:
    """The file whose lock lets one build of bundle ``name`` run at a time."""
    return out_dir / f".{name}.building.lock"


def fingerprint(artifact: ArtifactSpec, source: Source) -> str:
    data = {"artifact": artifact.canonical(), "source": source.fingerprint_extra()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        return {}
    arts = data.get("artifacts")
    return arts if isinstance(arts, dict) else {}


def write_lock(path: Path, entries: dict[str, Any]) -> None:
    text = json.dumps({"format": LOCK_FORMAT, "artifacts": entries}, sort_keys=True, separators=(",", ":"))
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return  # unchanged: a rerun writes nothing
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
