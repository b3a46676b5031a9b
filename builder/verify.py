"""``bundle verify``: check a bundle folder against its bundle.json.

Reports every file that is missing, has the wrong size or sha256 (``bad``), is
not listed in bundle.json (``extra``; the generated top-level files are allowed),
or is a symlink (Kaggle would flatten it). Hashing reads with a large buffer and
runs a few files in parallel, which keeps a disk (or a network file system) busy.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.store import HASH_CHUNK, sha256_file
from runtime._record import json_fields
from runtime.integrity import unlisted_files
from runtime.manifest import FileEntry, Manifest, read_manifest


@dataclass
class Problem:
    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, ("path", "reason"))


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_bundle`."""

    bundle_dir: Path
    quick: bool
    files: int = 0  # files listed in bundle.json
    checked_bytes: int = 0
    bad: list[Problem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad or self.missing or self.extra or self.symlinks)

    def lines(self) -> list[str]:
        """One line per problem, e.g. ``bad      hf/.../model.safetensors: sha256 ...``."""
        out = [f"bad      {p.path}: {p.reason}" for p in self.bad]
        out += [f"missing  {p}" for p in self.missing]
        out += [f"extra    {p}: not listed in bundle.json" for p in self.extra]
        out += [f"symlink  {p}: bundles hold real files only" for p in self.symlinks]
        return out

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, ("bundle_dir", "ok", "quick", "files", "checked_bytes", "bad",
                                  "missing", "extra", "symlinks"))


def _check(root: Path, entry: FileEntry, quick: bool, bar: Any = None) -> tuple[str, str | None]:
    """("ok"|"missing"|"bad"|"symlink", reason)."""
    p = root / entry.path
    if p.is_symlink():
        return "symlink", None
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return "missing", None
    except NotADirectoryError:
        return "missing", None
    if size != entry.size:
        return "bad", f"size {size} != {entry.size} in bundle.json"
    if quick:
        return "ok", None
    try:
        actual = sha256_file(p, chunk_size=HASH_CHUNK, progress=bar.update if bar is not None else None)
    except OSError as e:
        return "bad", f"cannot read: {e.strerror}"
    if actual != entry.sha256:
        return "bad", f"sha256 {actual} != {entry.sha256} in bundle.json"
    return "ok", None


def verify_bundle(
    bundle_dir: str | os.PathLike, quick: bool = False, *, jobs: int | None = None,
    progress: bool = False,
) -> VerifyReport:
    """Check every file of a bundle folder against its bundle.json.

    Args:
        bundle_dir: the bundle folder (holds bundle.json).
        quick: compare sizes only (no hashing): seconds for any size.
        jobs: files hashed in parallel (default: up to 4).
        progress: a byte counter on stderr while hashing (a terminal only).

    Returns:
        A VerifyReport; ``report.ok`` is True when nothing is bad, missing, extra
        or a symlink.

    Raises:
        runtime.manifest.ManifestError: bundle.json is missing or malformed.
    """
    root = Path(bundle_dir)
    manifest: Manifest = read_manifest(root)
    report = VerifyReport(bundle_dir=root, quick=quick)
    files = manifest.all_files()
    report.files = len(files)
    workers = jobs or min(4, os.cpu_count() or 1)
    from runtime.progress import byte_bar

    with byte_bar(sum(f.size for f in files), "verify sha256", enabled=progress and not quick) as bar, \
            cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda e: _check(root, e, quick, bar), files))
    for entry, (status, reason) in zip(files, results, strict=True):
        if status == "missing":
            report.missing.append(entry.path)
        elif status == "bad":
            report.bad.append(Problem(entry.path, reason or "bad"))
        elif status == "symlink":
            report.symlinks.append(entry.path)
        else:
            report.checked_bytes += entry.size if not quick else 0
    for rel in unlisted_files(root, {f.path for f in files}):
        (report.symlinks if os.path.islink(root / rel) else report.extra).append(rel)
    report.extra.sort()
    report.symlinks.sort()
    return report
