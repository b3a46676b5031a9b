"""Step 4: the bundle folder: hard links from the store, wheels, notebooks, bundle.json,
swapped in whole (:mod:`builder.layout`); left alone when it already is this build."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from builder import SOURCE_ROOT, constants, layout
from builder.artifact import Spec
from builder.extras.runtime_wheels import missing_runtime_wheel, source_fingerprint
from builder.pipeline.report import BuildReport
from builder.sources import ResolvedArtifact
from builder.store import Store
from runtime.constants import DEFAULT_REVISION, WHEELS_DIR
from runtime.manifest import (
    ArtifactEntry,
    FileEntry,
    Manifest,
    ManifestError,
    read_manifest,
)

WHEELS_LOCK_KEY = "[wheels]"  # cannot clash with an artifact id


def _import_optional(module_name: str, func_name: str) -> Callable[..., list[str]] | None:
    """builder.extras.wheels / builder.extras.notebooks (the Kaggle side); None if not installed."""
    try:
        module = __import__(module_name, fromlist=[func_name])
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        return None
    return getattr(module, func_name)


def _wheels_fingerprint(spec: Spec) -> str:
    data: dict[str, Any] = {"wheels": spec.wheels}
    if (spec.wheels or {}).get("include_self", True):
        # The wheel of offline-bundle itself is built from these sources.
        data["project"] = source_fingerprint(SOURCE_ROOT)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _wheelhouse(
    spec: Spec, staging: Path, store: Store, lock: dict[str, Any], new_lock: dict[str, Any],
    report: BuildReport,
) -> list[FileEntry]:
    """wheels/: from the store when [wheels] (and this project) are unchanged, else pip.

    The wheels go into the store like any other file, so a rerun of an unchanged
    build runs no pip and asks no index anything.
    """
    if spec.wheels is None:
        return _runtime_wheelhouse(spec, staging, store, lock, new_lock, report) if spec.stacks else []
    fingerprint = _wheels_fingerprint(spec)
    if (files := _locked_wheels(fingerprint, staging, store, lock, new_lock)) is not None:
        return files
    build_wheelhouse = _import_optional("builder.extras.wheels", "build_wheelhouse")
    if build_wheelhouse is None:
        report.warn(f"{spec.path}: [wheels] skipped: builder.extras.wheels is not installed")
        return []
    rels = sorted(set(build_wheelhouse(spec, staging)))
    return _store_wheels(rels, fingerprint, staging, store, new_lock)


def _runtime_wheelhouse(
    spec: Spec, staging: Path, store: Store, lock: dict[str, Any], new_lock: dict[str, Any],
    report: BuildReport,
) -> list[FileEntry]:
    """wheels/ of a bundle that names stacks and has no [wheels] table: offline-bundle's own
    wheel and its dependencies (click), made with no index at all: the wheel is built from
    this source tree (cached by content), click is repacked from this interpreter. What
    an internet-off notebook needs to `pip install --no-index` the runtime."""
    from builder.extras.runtime_wheels import (
        RuntimeWheelError,
        collect_runtime_wheels,
        project_source_dir,
    )

    source = project_source_dir()
    fingerprint = hashlib.sha256(json.dumps({
        "default-runtime-wheels": 1,
        "project": source_fingerprint(source) if source else None,
        "installed": _installed_versions(),
    }, sort_keys=True).encode()).hexdigest()
    if (files := _locked_wheels(fingerprint, staging, store, lock, new_lock)) is not None:
        return files
    wheels_dir = staging / WHEELS_DIR
    try:
        collect_runtime_wheels(wheels_dir, bundle_wheels=[])
    except RuntimeWheelError as e:
        # The manifest check after the build says what this means for the notebook.
        report.warn(f"{spec.path}: the runtime wheel could not be made: {e}")
        shutil.rmtree(wheels_dir, ignore_errors=True)
        return []
    rels = [f"{WHEELS_DIR}/{wheel.name}" for wheel in sorted(wheels_dir.glob("*.whl"))]
    return _store_wheels(rels, fingerprint, staging, store, new_lock)


def _locked_wheels(fingerprint: str, staging: Path, store: Store, lock: dict[str, Any],
                   new_lock: dict[str, Any]) -> list[FileEntry] | None:
    """The lock's wheels/ files, materialised from the store, when the lock was made for
    this fingerprint and the store still holds every file; else None (build them)."""
    locked = lock.get(WHEELS_LOCK_KEY)
    if not (isinstance(locked, dict) and locked.get("fingerprint") == fingerprint):
        return None
    try:
        files = [FileEntry(f["path"], f["size"], f["sha256"]) for f in locked["files"]]
    except (KeyError, TypeError):
        return None
    if not files or not all(store.has(f.sha256, f.size) for f in files):
        return None
    for f in files:
        store.materialise(f.sha256, staging / f.path)
    new_lock[WHEELS_LOCK_KEY] = locked
    return files


def _store_wheels(rels: list[str], fingerprint: str, staging: Path, store: Store,
                  new_lock: dict[str, Any]) -> list[FileEntry]:
    """Move freshly made wheels (paths under staging) into the store, link them back, and
    record them in the lock under ``fingerprint``."""
    entries = []
    for rel in rels:
        size = (staging / rel).stat().st_size
        sha256 = store.add_file(staging / rel)  # hashes and moves it into the store
        store.materialise(sha256, staging / rel)
        entries.append(FileEntry(rel, size, sha256))
    new_lock[WHEELS_LOCK_KEY] = {"fingerprint": fingerprint, "files": [e.to_json() for e in entries]}
    return entries


def _installed_versions() -> dict[str, str | None]:
    """Versions of offline-bundle and of the dependencies repacked from this interpreter."""
    import importlib.metadata

    versions: dict[str, str | None] = {}
    for name in ("offline-bundle", "click", "tomli"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _notebooks(spec: Spec, staging: Path, report: BuildReport) -> list[FileEntry]:
    """notebooks/STACK.ipynb for the stacks the spec declares (small, written each build)."""
    if not spec.stacks:
        return []
    write_notebooks = _import_optional("builder.extras.notebooks", "write_notebooks")
    if write_notebooks is None:
        report.warn(f"{spec.path}: notebooks skipped: builder.extras.notebooks is not installed")
        return []
    return [layout.file_entry(staging, rel) for rel in sorted(set(write_notebooks(spec, staging)))]


def _created() -> str:
    # SOURCE_DATE_EPOCH makes even `created` reproducible for those who want it.
    epoch = constants.source_date_epoch()
    when = (
        datetime.fromtimestamp(int(epoch), timezone.utc)
        if epoch and epoch.isdigit()
        else datetime.now(timezone.utc)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _artifact_entries(
    spec: Spec, plans: dict[str, ResolvedArtifact]
) -> tuple[list[ArtifactEntry], dict[str, bytes]]:
    """Manifest entries of every artifact, and the bytes of the generated files by path."""
    artifacts: list[ArtifactEntry] = []
    generated: dict[str, bytes] = {}
    for art in spec.artifacts:
        plan = plans[art.id]
        entries: list[FileEntry] = []
        for pf in plan.files:
            assert pf.sha256 is not None and pf.size is not None
            entries.append(FileEntry(pf.path, pf.size, pf.sha256))
        for g in plan.generated:
            generated[g.path] = g.data
            entries.append(FileEntry(g.path, len(g.data), hashlib.sha256(g.data).hexdigest()))
        artifacts.append(
            ArtifactEntry(
                id=art.id,
                source=plan.source,
                ref=plan.ref,
                # What the spec asked for, and what it resolved to (a Hub commit).
                revision=art.get("revision") or (DEFAULT_REVISION if plan.revision else None),
                commit=plan.revision,
                path=plan.path,
                files=entries,
                aliases=list(plan.aliases),
                fallbacks=list(art.fallbacks),
            )
        )
    return artifacts, generated


def _bundle_is_current(
    bundle_dir: Path,
    previous: Manifest,
    manifest: Manifest,
    generated: dict[str, bytes],
    staging: Path,
    store: Store,
    top_level: dict[str, bytes],
) -> bool:
    """True when the existing bundle already is what this build would write.

    Same manifest (apart from ``created``), every fetched file the very store blob
    (same inode: nothing to re-hash), generated files byte for byte. Then the
    build leaves the bundle folder alone.
    """
    old, new = previous.to_json(), manifest.to_json()
    old.pop("created"), new.pop("created")
    if old != new:
        return False
    blob_path = layout.fast_blob_path(store)
    root = str(bundle_dir)
    for f in manifest.all_files():
        here = f"{root}/{f.path}"
        if f.path in generated or f.path.startswith("notebooks/"):
            data = generated.get(f.path)
            if data is None:
                data = (staging / f.path).read_bytes()
            try:
                with open(here, "rb") as fh:
                    if fh.read(len(data) + 1) != data:
                        return False
            except OSError:
                return False
            continue
        try:
            st, blob = os.stat(here), os.stat(blob_path(f.sha256))
        except OSError:
            return False
        if (st.st_ino, st.st_dev) != (blob.st_ino, blob.st_dev) or os.path.islink(here):
            return False
    for name, data in top_level.items():
        try:
            if (bundle_dir / name).read_bytes() != data:
                return False
        except OSError:
            return False
    return True


def _previous_manifest(bundle_dir: Path) -> Manifest | None:
    if not (bundle_dir / "bundle.json").is_file():
        return None
    try:
        return read_manifest(bundle_dir)
    except ManifestError:
        return None


def materialise(
    spec: Spec,
    plans: dict[str, ResolvedArtifact],
    store: Store,
    out: Path,
    bundle_dir: Path,
    report: BuildReport,
    lock: dict[str, Any],
    new_lock: dict[str, Any],
) -> Manifest:
    layout.clear_stale_staging(out, spec.name)
    previous = _previous_manifest(bundle_dir)
    old_files = {f.path: f for f in previous.all_files()} if previous else {}
    staging = layout.new_staging_dir(out, spec.name)
    try:
        artifacts, generated = _artifact_entries(spec, plans)
        # Wheels (linked from the store when cached) and notebooks first: their
        # entries are part of the manifest we compare with the existing bundle.
        extra = _wheelhouse(spec, staging, store, lock, new_lock, report)
        extra += _notebooks(spec, staging, report)
        manifest = Manifest(
            name=spec.name,
            version=spec.version,
            title=spec.title,
            stacks=list(spec.stacks),
            artifacts=artifacts,
            extra_files=extra,
            created=_created(),
            run=spec.run,
        )
        manifest.digest = manifest.compute_digest()
        if (problem := missing_runtime_wheel(manifest)) is not None:
            report.warn(problem)
        top_level = layout.generated_top_level(manifest, kaggle=spec.kaggle, license=spec.license)
        if previous is not None and _bundle_is_current(
            bundle_dir, previous, manifest, generated, staging, store, top_level
        ):
            layout.remove_tree(staging)
            report.unchanged = True
            return previous

        linker = layout.Linker(store, staging)
        for art in manifest.artifacts:
            for f in art.files:
                if f.path in generated:
                    layout.write_bytes(staging, f.path, generated[f.path])
                    continue
                old = old_files.get(f.path)
                reuse = bundle_dir / f.path if old is not None and old == f else None
                linker.link(f.sha256, f.path, reuse)
        layout.write_generated(staging, manifest, top_level)
        layout.check_tree(staging)
        layout.swap_in(staging, bundle_dir)
    except BaseException:
        layout.remove_tree(staging)
        raise
    return manifest
