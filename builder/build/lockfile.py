"""The build lock (``OUT/.NAME.lock.json``): what each artifact resolved to, so a rerun of an
unchanged spec entry asks no server anything."""

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
    """The build lock of bundle ``name``: next to the bundle, not in it (not published)."""
    return out_dir / f".{name}.lock.json"


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
