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

A file the quick check found damaged (truncated, replaced by other bytes of
another size) is left out of the view: its snapshot becomes per-file links
without it, so no library can load it, and the loader hooks (runtime.loaders)
explain the miss from the bundle's problems.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime import constants
from runtime.catalog import AttachedBundle

VIEW_HF = "hf"
VIEW_TORCH = "torch"


class _Plan:
    def __init__(self) -> None:
        # repo folder name ("models--ORG--NAME") -> hf roots of the bundles holding it, in order
        self.repos: dict[str, list[str]] = {}
        # "repo/snapshots/COMMIT" -> [(source folder, [files relative to it])], in bundle order
        self.snapshots: dict[str, list[tuple[str, list[str]]]] = {}
        # repo folder name -> the first commit seen for it (what "main" means when no ref says)
        self.first_commit: dict[str, str] = {}
        # path below torch/ -> source file (first bundle wins)
        self.torch_files: dict[str, str] = {}
        # "repo/snapshots/COMMIT" keys and repo names with a damaged file: linked per file
        self.damaged_snapshots: set[str] = set()
        self.damaged_repos: set[str] = set()


def _plan(bundles: list[AttachedBundle]) -> _Plan:
    plan = _Plan()
    for bundle in bundles:
        hf_root = bundle._real(constants.HF_DIR)
        damaged = {p.path for p in bundle.problems if p.kind == "size"}
        for artifact in bundle.manifest.artifacts:
            for entry in artifact.files:
                parts = entry.path.split("/", 4)
                if entry.path in damaged:
                    if parts[0] == constants.HF_DIR and len(parts) == 5:
                        plan.damaged_snapshots.add(f"{parts[1]}/snapshots/{parts[3]}")
                        plan.damaged_repos.add(parts[1])
                    continue  # kept out of the view
                if parts[0] == constants.HF_DIR and len(parts) == 5 and parts[2] == "snapshots":
                    holders = plan.repos.setdefault(parts[1], [])
                    if not holders or holders[-1] != hf_root:
                        holders.append(hf_root)
                    plan.first_commit.setdefault(parts[1], parts[3])
                    key = f"{parts[1]}/snapshots/{parts[3]}"
                    sources = plan.snapshots.setdefault(key, [])
                    src = f"{hf_root}/{key}"
                    if not sources or sources[-1][0] != src:
                        sources.append((src, []))
                    sources[-1][1].append(parts[4])
                elif parts[0] == VIEW_TORCH and len(parts) >= 2:
                    rel = entry.path[len(VIEW_TORCH) + 1 :]
                    plan.torch_files.setdefault(rel, bundle._real(entry.path))
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
    notes: list[str] = []
    hf = f"{view}/{VIEW_HF}"
    os.mkdir(hf)
    os.mkdir(f"{hf}/.locks")
    # transformers 4.x reads this at import: without it, a non-empty cache makes it
    # warn that "all your calls to from_pretrained() will fail" (and, online, try to
    # migrate the cache). Caches transformers wrote hold it.
    with open(f"{hf}/version.txt", "w") as f:
        f.write("1")
    for repo, holders in plan.repos.items():
        # The repo folder itself is real and writable (.no_exist markers go there).
        os.mkdir(f"{hf}/{repo}")
        has_main = any(os.path.exists(f"{h}/{repo}/refs/main") for h in holders)
        if len(holders) == 1 and repo not in plan.damaged_repos:
            # The common case: one bundle holds this repo; link its sub-folders.
            os.symlink(f"{holders[0]}/{repo}/snapshots", f"{hf}/{repo}/snapshots")
            if has_main:
                os.symlink(f"{holders[0]}/{repo}/refs", f"{hf}/{repo}/refs")
                continue
        else:
            os.mkdir(f"{hf}/{repo}/snapshots")
        os.mkdir(f"{hf}/{repo}/refs")
        notes.extend(_merge_refs(repo, holders, f"{hf}/{repo}/refs"))
        if not has_main:
            # The spec pinned a tag or branch other than main; code that names no
            # revision asks for "main" and should get the bundled commit.
            commit = plan.first_commit[repo]
            with open(f"{hf}/{repo}/refs/main", "w") as f:
                f.write(commit)
            notes.append(f"{repo}: no refs/main in the bundle; main -> {commit[:12]} (the bundled commit)")
    for key, sources in plan.snapshots.items():
        repo = key.split("/", 1)[0]
        if len(plan.repos[repo]) == 1 and repo not in plan.damaged_repos:
            continue  # linked as a whole above
        dst = f"{hf}/{key}"
        if len(sources) == 1 and key not in plan.damaged_snapshots:
            os.symlink(sources[0][0], dst, target_is_directory=True)
            continue
        # Several bundles hold the same commit (different file subsets): merge per file.
        for src_dir, files in sources:
            for rel in files:
                target = f"{dst}/{rel}"
                if os.path.lexists(target):
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(f"{src_dir}/{rel}", target)
    checkpoints = f"{view}/{constants.TORCH_CHECKPOINTS_DIR}"
    os.makedirs(checkpoints)
    for rel, src in plan.torch_files.items():
        dst = f"{view}/{VIEW_TORCH}/{rel}"
        if not dst.startswith(checkpoints + "/") or "/" in dst[len(checkpoints) + 1 :]:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(src, dst)
    return notes


def _merge_refs(repo: str, holders: list[str], dst: str) -> list[str]:
    """Link every refs/REV of the bundles holding `repo`; the first bundle wins a clash."""
    notes: list[str] = []
    owner: dict[str, str] = {}
    for hf_root in holders:
        try:
            entries = list(os.scandir(f"{hf_root}/{repo}/refs"))
        except OSError:
            continue
        for e in entries:
            if not e.is_file():
                continue
            if e.name in owner:
                if Path(owner[e.name]).read_text() != Path(e.path).read_text():
                    notes.append(
                        f"{repo} refs/{e.name}: bundles disagree on the commit; using "
                        f"{owner[e.name]} (found first), not {e.path}"
                    )
                continue
            owner[e.name] = e.path
            os.symlink(e.path, f"{dst}/{e.name}")
    return notes
