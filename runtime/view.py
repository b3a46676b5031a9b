"""One writable folder that merges the caches of every attached bundle.

Libraries expect a single cache folder (``HF_HUB_CACHE``, ``TORCH_HOME``) that
they may write into (``.no_exist`` markers, ``.locks``), while bundles are
several read-only folders (``/kaggle/input`` is read-only). The view is a small
tree of real folders and symlinks to the bundle files::

    VIEW/hf/models--ORG--NAME/refs/main            -> BUNDLE/hf/models--ORG--NAME/refs/main
    VIEW/hf/models--ORG--NAME/snapshots/COMMIT     -> BUNDLE/hf/models--ORG--NAME/snapshots/COMMIT
    VIEW/torch/hub/checkpoints/FILE.pth            -> BUNDLE/torch/hub/checkpoints/FILE.pth

A snapshot held by a single bundle is one folder symlink (cheap even with
hundreds of bundles); a snapshot that several bundles hold is a real folder of
per-file symlinks, the first bundle in search order winning a clash. The view
is planned from the manifests, so building it costs about one syscall per
repository, not one per file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime import constants
from runtime.catalog import AttachedBundle

VIEW_HF = "hf"
VIEW_TORCH = "torch"


@dataclass
class _Plan:
    # "repo_dir/snapshots/COMMIT" -> [(source folder, [files relative to it])], in bundle order
    snapshots: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)
    # "repo_dir/refs/REV" -> source file (first bundle wins)
    refs: dict[str, str] = field(default_factory=dict)
    # path below torch/ -> source file (first bundle wins)
    torch_files: dict[str, str] = field(default_factory=dict)
    # messages about clashes, for Activation.notes
    notes: list[str] = field(default_factory=list)


def _plan(bundles: list[AttachedBundle]) -> _Plan:
    plan = _Plan()
    ref_owner: dict[str, str] = {}
    for bundle in bundles:
        repos: set[str] = set()
        per_snapshot: dict[str, list[str]] = {}
        for artifact in bundle.manifest.artifacts:
            for entry in artifact.files:
                parts = entry.path.split("/")
                if parts[0] == constants.HF_DIR and len(parts) >= 5 and parts[2] == "snapshots":
                    repos.add(parts[1])
                    key = "/".join(parts[1:4])
                    per_snapshot.setdefault(key, []).append("/".join(parts[4:]))
                elif parts[0] == VIEW_TORCH and len(parts) >= 2:
                    rel = "/".join(parts[1:])
                    plan.torch_files.setdefault(rel, str(bundle.file_path(entry.path)))
        hf_root = bundle.file_path(constants.HF_DIR)
        for key, files in per_snapshot.items():
            plan.snapshots.setdefault(key, []).append((str(hf_root / key), files))
        # Refs are read from disk, not the manifest: the builder may or may not list them.
        for repo in sorted(repos):
            try:
                entries = list(os.scandir(hf_root / repo / "refs"))
            except OSError:
                continue
            for e in entries:
                if not e.is_file():
                    continue
                key = f"{repo}/refs/{e.name}"
                if key in plan.refs:
                    if ref_owner[key] != bundle.name:
                        plan.notes.append(
                            f"{repo} {e.name}: both bundles '{ref_owner[key]}' and "
                            f"'{bundle.name}' set it; using '{ref_owner[key]}' (found first)"
                        )
                    continue
                plan.refs[key] = e.path
                ref_owner[key] = bundle.name
    return plan


def build_view(bundles: list[AttachedBundle], view: Path) -> list[str]:
    """Fill the empty folder `view` with the merged caches of `bundles`.

    Args:
        bundles: attached bundles, in search order (earlier wins a clash).
        view: an existing, empty, writable folder.

    Returns:
        Notes about clashes between bundles (which one won).
    """
    plan = _plan(bundles)
    hf = view / VIEW_HF
    os.makedirs(hf / ".locks", exist_ok=True)
    made: set[str] = set()

    def mkdirs(path: str) -> None:
        if path not in made:
            os.makedirs(path, exist_ok=True)
            made.add(path)

    for key, sources in plan.snapshots.items():
        dst = os.path.join(hf, key)
        mkdirs(os.path.dirname(dst))
        if len(sources) == 1:
            os.symlink(sources[0][0], dst, target_is_directory=True)
            continue
        # Several bundles hold the same commit (different file subsets): merge per file.
        for src_dir, files in sources:
            for rel in files:
                target = os.path.join(dst, rel)
                if os.path.lexists(target):
                    continue
                mkdirs(os.path.dirname(target))
                os.symlink(os.path.join(src_dir, rel), target)
    for key, src in plan.refs.items():
        dst = os.path.join(hf, key)
        mkdirs(os.path.dirname(dst))
        os.symlink(src, dst)
    checkpoints = view / constants.TORCH_CHECKPOINTS_DIR
    mkdirs(str(checkpoints))
    for rel, src in plan.torch_files.items():
        dst = os.path.join(view, VIEW_TORCH, rel)
        mkdirs(os.path.dirname(dst))
        os.symlink(src, dst)
    return plan.notes
