"""Helpers for the runtime tests: lay out bundle folders by hand with runtime.manifest.

These are real bundles in the documented layout (DESIGN.md), written without the
builder so that runtime tests do not depend on the network stand-ins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from runtime.manifest import ArtifactEntry, FileEntry, Manifest, write_manifest


@dataclass
class Art:
    """An artifact to lay out: files relative to the bundle folder."""

    id: str
    source: str
    ref: str
    path: str
    files: dict[str, bytes]
    revision: str | None = None
    aliases: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


def hf_art(art_id: str, repo: str, files: dict[str, bytes], *, commit: str | None = None,
           source: str = "hf", aliases: list[str] | None = None,
           fallbacks: list[str] | None = None, ref: str | None = None) -> Art:
    """An hf-layout artifact: hf/models--ORG--NAME/{refs/main,snapshots/COMMIT/...}."""
    commit = commit or hashlib.sha1(repo.encode()).hexdigest()
    repo_dir = "hf/models--" + repo.replace("/", "--")
    snap = f"{repo_dir}/snapshots/{commit}"
    laid = {f"{snap}/{name}": data for name, data in files.items()}
    laid[f"{repo_dir}/refs/main"] = commit.encode()
    return Art(art_id, source, ref or repo, snap, laid, revision=commit,
               aliases=aliases or [], fallbacks=fallbacks or [])


def torch_art(art_id: str, weights: str, filename: str, data: bytes) -> Art:
    path = f"torch/hub/checkpoints/{filename}"
    return Art(art_id, "torchvision", weights, path, {path: data}, aliases=[filename])


def make_bundle(folder: Path, name: str, arts: list[Art], *, version: str = "1.0.0",
                stacks: list[str] | None = None) -> Path:
    """Write the files and bundle.json of a bundle at `folder`; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for art in arts:
        files = []
        for rel, data in art.files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
        entries.append(ArtifactEntry(id=art.id, source=art.source, ref=art.ref,
                                     revision=art.revision, path=art.path, files=files,
                                     aliases=art.aliases, fallbacks=art.fallbacks))
    write_manifest(folder, Manifest(name=name, version=version, artifacts=entries,
                                    stacks=stacks or [], created="2026-11-21T00:00:00Z"))
    return folder
