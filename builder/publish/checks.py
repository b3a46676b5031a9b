"""Checks every way out of this machine runs first: the bundle is whole, and what would
be sent (by `bundle publish` or `bundle pack`) is listed."""

from __future__ import annotations

import os
from pathlib import Path

from builder.errors import BundleCheckError
from runtime.constants import GENERATED_FILES
from runtime.manifest import Manifest, ManifestError, read_manifest


def check_bundle(bundle_dir: str | os.PathLike, *, full: bool = False,
                 progress: bool = False, action: str = "uploaded") -> Manifest:
    """Check a bundle folder before it is uploaded.

    Every file bundle.json lists must exist as a regular file (not a link) with
    the listed size (and sha256 with ``full=True``), and the folder must hold
    nothing else: a stray file would be uploaded to Kaggle unchecked.

    Args:
        bundle_dir: the bundle folder (holds bundle.json).
        full: also hash every file (reads every byte).
        progress: show a byte counter on stderr while hashing.
        action: what the caller will not do when the check fails, for the
            message ("nothing uploaded"; pack says "packed").

    Returns:
        The bundle's manifest.

    Raises:
        BundleCheckError: the manifest is invalid or files are bad; the message
            lists up to five of them and says to rebuild.
    """
    from builder.store import sha256_file
    from runtime.integrity import unlisted_files
    from runtime.progress import byte_bar

    root = Path(bundle_dir)
    try:
        manifest = read_manifest(root)
    except ManifestError as e:
        raise BundleCheckError(str(e)) from None
    problems: list[str] = []
    listed = {f.path for f in manifest.all_files()}
    with byte_bar(manifest.size, "sha256", enabled=full and progress) as bar:
        for entry in manifest.all_files():
            path = root / entry.path
            if path.is_symlink():
                problems.append(f"{entry.path}: is a symlink (Kaggle flattens links)")
            elif not path.is_file():
                problems.append(f"{entry.path}: missing")
            elif path.stat().st_size != entry.size:
                problems.append(f"{entry.path}: {path.stat().st_size} bytes, bundle.json says {entry.size}")
            elif full and sha256_file(path, progress=bar.update) != entry.sha256:
                problems.append(f"{entry.path}: sha256 differs from bundle.json")
    problems += [f"{rel}: not listed in bundle.json" for rel in unlisted_files(root, listed)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BundleCheckError(
            f"{root}: bundle fails verification, nothing {action}: {shown}. "
            "Rebuild it with `bundle build` (or remove the stray files)."
        )
    return manifest


def bundle_files_to_send(root: Path, manifest: Manifest) -> list[tuple[str, Path]]:
    """(label, path) of every file of a bundle folder that publish or pack sends."""
    rels = [f.path for f in manifest.all_files()]
    rels += [name for name in sorted(GENERATED_FILES) if (root / name).is_file()]
    return [(str(root / rel), root / rel) for rel in rels]
