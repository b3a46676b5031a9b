"""Which bundle, artifact and bytes a run used: `runtime.resolve_with_provenance()`.

Every stack writes the record into its checkpoints and summary / metrics JSON as a
`provenance` block and prints it in one line at start, so a result is never
separated from what produced it (the fallback a run took included):

    {"requested": "vit-base-in21k",
     "bundle": {"name": "emotion-vit", "version": "1.0.0", "digest": "…", "path": "…"},
     "artifact": {"id": "vit-base", "source": "hf", "ref": "google/vit-base-patch16-224",
                  "revision": "<commit>"},
     "ref": "google/vit-base-patch16-224@<commit>",
     "files": [{"path": "hf/…/model.safetensors", "size": 346…, "sha256": "…"}, …],
     "fallback": {"from": "vit-base-in21k", "reason": "primary artifact … is incomplete: …"}}

A user's own folder or file (`--model PATH`) gets `{"requested": PATH, "local": …,
"files": [...]}` with the sha256 of its files, hashed here. Nothing heavy is imported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime._record import FrozenRecord

#: Files of a local folder hashed for its provenance (weights and configs, not a dataset).
_LOCAL_MAX_FILES = 64


class Resolved(FrozenRecord):
    """What runtime.resolve_with_provenance() returns: the path and where it came from."""

    __slots__ = ("path", "provenance")
    _fields = __slots__

    def __init__(self, path: Path, provenance: dict[str, Any]) -> None:
        self._set("path", path)
        self._set("provenance", provenance)


_resolutions: list[dict[str, Any]] = []


def resolutions() -> list[dict[str, Any]]:
    """Every provenance record resolve()/resolve_with_provenance() made in this process."""
    return list(_resolutions)


def of_artifact(requested: str, bundle: Any, artifact: Any, fallback: dict | None) -> dict[str, Any]:
    """The provenance block of an artifact of an attached bundle."""
    ref = artifact.ref
    if artifact.commit:
        ref = f"{artifact.ref}@{artifact.commit}"
    record = {
        "requested": str(requested),
        "bundle": {"name": bundle.name, "version": bundle.version,
                   "digest": bundle.manifest.digest, "path": str(bundle.path)},
        "artifact": {"id": artifact.id, "source": artifact.source, "ref": artifact.ref,
                     "revision": artifact.revision, "commit": artifact.commit},
        "ref": ref,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in artifact.files],
        "fallback": fallback,
    }
    _resolutions.append(record)
    return record


def of_local(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance block of a user's own folder or file (its files hashed now)."""
    root = Path(path).expanduser().resolve()
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                       and ".cache" not in p.parts)[:_LOCAL_MAX_FILES]
    entries = []
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        rel = p.name if root.is_file() else p.relative_to(root).as_posix()
        entries.append({"path": rel, "size": p.stat().st_size, "sha256": h.hexdigest()})
    record = {"requested": str(path), "local": str(root), "files": entries, "fallback": None}
    _resolutions.append(record)
    return record


def write_beside(output: str | os.PathLike, record: dict[str, Any]) -> Path:
    """``OUTPUT.provenance.json``: where an output that cannot hold it (a CSV, a folder of
    masks) came from. Returns its path."""
    import json

    from runtime.atomic import atomic_write

    target = Path(output)
    side = target / "provenance.json" if target.is_dir() else target.with_name(
        target.name + ".provenance.json")
    with atomic_write(side) as fh:
        fh.write((json.dumps(record, indent=1) + "\n").encode())
    return side


def _main_file(record: dict[str, Any]) -> dict[str, Any] | None:
    files = record.get("files") or []
    weights = [f for f in files if f["path"].endswith((".safetensors", ".bin", ".pth", ".pt", ".ckpt"))]
    return max(weights or files, key=lambda f: f["size"], default=None)


def line(record: dict[str, Any] | None, what: str = "model") -> str:
    """One line for the log: what was asked for, what was used, and its largest file's sha256."""
    if not record:
        return f"provenance: {what}: none (trained from scratch)"
    main = _main_file(record)
    digest = f", {Path(main['path']).name} sha256 {main['sha256'][:16]}" if main else ""
    if "local" in record:
        return f"provenance: {what} {record['requested']} = local {record['local']}{digest}"
    bundle = record["bundle"]
    used = f"{record['artifact']['id']} = {record['ref']}"
    text = (f"provenance: {what} {record['requested']}: bundle {bundle['name']} {bundle['version']} "
            f"(digest {bundle['digest'][:12]}), artifact {used}{digest}")
    if record.get("fallback"):
        text += f"; FALLBACK taken: {record['fallback']['reason']}"
    return text


def say_loaded(model: Any, checkpoint: Any, config: dict[str, Any], device: Any,
               log: Callable[[str], None]) -> None:
    """Put a model rebuilt from ``checkpoint`` on ``device`` in eval mode, and say where it
    came from: the checkpoint's path and the provenance its config carries."""
    from pathlib import Path

    if device is not None:
        model.to(device)
    model.eval()
    log(f"checkpoint: {Path(checkpoint).resolve()}")
    for text in lines(config.get("provenance")):
        log(text)


def lines(block: dict[str, dict[str, Any] | None] | None) -> list[str]:
    """One log line per role of a stack's provenance block ({"backbone": record, ...})."""
    if not block:
        return ["provenance: none recorded (a checkpoint from before provenance was kept)"]
    return [line(record, role) for role, record in block.items()]
