"""What a store holds and who still needs it; freeing what nobody does (`bundle store`).

The store only grows: every build adds its blobs, and nothing removes one that no bundle
uses any more. Compare ``hf cache scan`` / ``hf cache delete``; here:

* **roots**: every build records, in ``roots/``, the bundle folder it wrote and its lock
  file (``.NAME.resolved.json``). A blob is *referenced* when a recorded bundle's
  ``bundle.json`` or lock names its sha256, when a bundle in ``./bundles-dist`` or on
  ``$BUNDLE_PATH`` does, or when it has another hard link (a bundle folder made from it
  that no root names: a blob with ``st_nlink > 1`` is never removed).
* **prune** removes unreferenced blobs, partial downloads untouched for a while (a
  2 GB partial is worth resuming; a week-old one is not), scratch files and roots whose
  bundle and lock are both gone.
* **safety**: a build holds ``gc.lock`` shared from its first download to its lock file;
  prune takes it exclusively and stops (naming the reason) if a build holds it, so a
  blob a running build is about to link is never removed under it.

Standard library only (plus runtime.manifest to read bundle.json); written here because
no library manages our store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ROOTS_DIR = "roots"
GC_LOCK = "gc.lock"
#: partial downloads untouched for this long are pruned by default
PARTIAL_MAX_AGE_S = 7 * 24 * 3600
_SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass
class Root:
    """A bundle a build wrote from this store, and the lock that pins its plan."""

    bundle: str
    lock: str | None = None
    spec: str | None = None
    built: float = 0.0
    referenced: int = 0  # blobs of this store it names (filled by inventory())
    exists: bool = True


@dataclass
class Inventory:
    """What ``bundle store ls`` shows (and prune acts on)."""

    root: str
    blobs: int = 0
    blob_bytes: int = 0
    referenced: int = 0
    linked_only: int = 0  # kept because a hard link exists, though no known root names it
    unreferenced: list[dict[str, Any]] = field(default_factory=list)
    partials: list[dict[str, Any]] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)
    roots: list[Root] = field(default_factory=list)

    @property
    def unreferenced_bytes(self) -> int:
        return sum(b["size"] for b in self.unreferenced)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["unreferenced_bytes"] = self.unreferenced_bytes
        return data


def _root_file(store_root: Path, bundle_dir: Path) -> Path:
    key = hashlib.sha256(str(bundle_dir).encode()).hexdigest()[:32]
    return store_root / ROOTS_DIR / f"{key}.json"


def record_root(store_root: Path, bundle_dir: Path, lock_file: Path | None, spec: Path | None) -> None:
    """Remember that ``bundle_dir`` (and ``lock_file``) use blobs of this store."""
    bundle_dir = Path(bundle_dir).resolve()
    path = _root_file(Path(store_root), bundle_dir)
    data = {"bundle": str(bundle_dir), "lock": str(Path(lock_file).resolve()) if lock_file else None,
            "spec": str(Path(spec).resolve()) if spec else None, "built": time.time()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # only bookkeeping for prune; a build never fails for it


@contextlib.contextmanager
def building(store_root: Path) -> Iterator[None]:
    """Held (shared) by a build while it downloads and links: prune waits its turn."""
    with _gc_lock(Path(store_root), exclusive=False, wait=True):
        yield


@contextlib.contextmanager
def _gc_lock(store_root: Path, *, exclusive: bool, wait: bool) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows: no shared locks; prune is not guarded
        yield
        return
    from builder.store.diskio import flocked

    held = flocked(store_root / GC_LOCK, exclusive=exclusive, wait=wait)
    try:
        held.__enter__()
    except BlockingIOError:
        raise StoreError(f"{store_root}: a build is using this store right now; run `bundle store "
                         "prune` again when it has finished") from None
    except OSError as exc:
        raise StoreError(f"cannot open {store_root / GC_LOCK}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def _shas_in(value: Any, found: set[str]) -> None:
    """Every sha256-looking string in a JSON value (bundle.json, a lock file)."""
    if isinstance(value, str):
        if _SHA_RE.match(value):
            found.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _shas_in(item, found)
    elif isinstance(value, list):
        for item in value:
            _shas_in(item, found)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _known_bundles() -> list[Path]:
    """Bundle folders a user has without any root: ./bundles-dist and $BUNDLE_PATH."""
    from runtime import constants

    found = [p for p in Path("bundles-dist").glob("*") if (p / constants.MANIFEST_NAME).is_file()]
    for entry in constants.bundle_path_entries():
        if (entry / constants.MANIFEST_NAME).is_file():
            found.append(entry)
        elif entry.is_dir():
            found += [p for p in entry.iterdir() if (p / constants.MANIFEST_NAME).is_file()]
    return found


def _blobs(store_root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    base = store_root / "blobs" / "sha256"
    if not base.is_dir():
        return
    for entry in os.scandir(base):
        if entry.is_dir(follow_symlinks=False):  # a fan-out store: blobs/sha256/ab/<sha>
            for inner in os.scandir(entry.path):
                if _SHA_RE.match(inner.name):
                    yield inner.name, Path(inner.path), inner.stat(follow_symlinks=False)
        elif _SHA_RE.match(entry.name):
            yield entry.name, Path(entry.path), entry.stat(follow_symlinks=False)


def inventory(store_root: Path, *, partial_max_age: float = PARTIAL_MAX_AGE_S) -> Inventory:
    """Blobs, who references them, partial downloads and scratch files of a store."""
    from runtime.constants import MANIFEST_NAME

    store_root = Path(store_root)
    inv = Inventory(root=str(store_root))
    referenced_by: dict[str, set[str]] = {}
    for path in sorted((store_root / ROOTS_DIR).glob("*.json")):
        data = _read_json(path) or {}
        root = Root(bundle=str(data.get("bundle", "")), lock=data.get("lock"), spec=data.get("spec"),
                    built=float(data.get("built") or 0))
        shas: set[str] = set()
        bundle_json = Path(root.bundle) / MANIFEST_NAME
        lock_exists = bool(root.lock) and Path(root.lock).is_file()
        _shas_in(_read_json(bundle_json), shas)
        if lock_exists:
            _shas_in(_read_json(Path(root.lock)), shas)
        root.exists = bundle_json.is_file() or lock_exists
        referenced_by[str(path)] = shas
        inv.roots.append(root)
    extra: set[str] = set()
    for folder in _known_bundles():
        _shas_in(_read_json(folder / MANIFEST_NAME), extra)
    every = set().union(extra, *referenced_by.values())
    for sha, path, st in _blobs(store_root):
        inv.blobs += 1
        inv.blob_bytes += st.st_size
        if sha in every:
            inv.referenced += 1
        elif st.st_nlink > 1:
            inv.linked_only += 1
        else:
            inv.unreferenced.append({"sha256": sha, "size": st.st_size, "path": str(path)})
    present = {sha for sha, _p, _s in _blobs(store_root)}
    for root, shas in zip(inv.roots, referenced_by.values(), strict=True):
        root.referenced = len(shas & present)
    now = time.time()
    for path in sorted((store_root / "partial").glob("*")):
        if path.is_file():
            st = path.stat()
            inv.partials.append({"path": str(path), "size": st.st_size, "age_s": now - st.st_mtime,
                                 "stale": now - st.st_mtime >= partial_max_age})
    inv.scratch = [str(p) for p in sorted((store_root / "tmp").glob("*")) if p.is_file()]
    return inv


@dataclass
class PruneReport:
    dry_run: bool
    blobs: int = 0
    blob_bytes: int = 0
    partials: int = 0
    partial_bytes: int = 0
    scratch: int = 0
    roots: int = 0
    kept_blobs: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prune(store_root: Path, *, dry_run: bool = False,
          partial_max_age: float = PARTIAL_MAX_AGE_S) -> PruneReport:
    """Remove what no bundle, lock or link needs (see the module docstring).

    Raises:
        StoreError: a build holds the store, or a file cannot be removed.
    """
    store_root = Path(store_root)
    report = PruneReport(dry_run=dry_run)
    with _gc_lock(store_root, exclusive=True, wait=False):
        inv = inventory(store_root, partial_max_age=partial_max_age)
        report.kept_blobs = inv.referenced + inv.linked_only
        doomed: list[tuple[Path, int, str]] = [(Path(b["path"]), b["size"], "blob") for b in inv.unreferenced]
        doomed += [(Path(p["path"]), p["size"], "partial") for p in inv.partials if p["stale"]]
        doomed += [(Path(p), 0, "scratch") for p in inv.scratch]
        doomed += [(_root_file(store_root, Path(r.bundle)), 0, "root") for r in inv.roots if not r.exists]
        for path, size, kind in doomed:
            if not dry_run:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from None
            if kind == "blob":
                report.blobs += 1
                report.blob_bytes += size
            elif kind == "partial":
                report.partials += 1
                report.partial_bytes += size
            elif kind == "scratch":
                report.scratch += 1
            else:
                report.roots += 1
    return report
