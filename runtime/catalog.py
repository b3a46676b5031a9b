"""What the located bundles hold: manifests read, layout quirks mapped, sizes checked.

Used by activate(), resolve(), verify() and `bundle doctor`. Reading a bundle
costs one read of bundle.json and one lstat() per listed file and per folder
holding them (the quick integrity check, symlinks refused); nothing is hashed here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runtime import constants
from runtime._record import FrozenRecord, Record
from runtime.manifest import ArtifactEntry, Manifest, ManifestError, read_manifest

#: Top-level folders of the bundle layout. Kaggle uploads each one as an archive
#: (`dir_mode="zip"`) and unpacks it; some unpackings add one more level
#: (`hf/hf/...`), which `_layout_root` detects.
LAYOUT_DIRS = (
    constants.HF_DIR,
    constants.TORCH_CHECKPOINTS_DIR.split("/")[0],
    constants.FILES_DIR,
    constants.WHEELS_DIR,
    constants.NOTEBOOKS_DIR,
)


class Problem(FrozenRecord):
    """Something wrong with an attached bundle, found without hashing unless verify() asked."""

    __slots__ = ("bundle", "kind", "detail", "path", "artifact")
    _fields = __slots__

    def __init__(
        self,
        bundle: Path,
        kind: str,  # "manifest" | "missing" | "size" | "sha256" | "archive" | "symlink" | "extra"
        detail: str,
        path: str = "",
        artifact: str | None = None,
    ) -> None:
        self._set("bundle", bundle)
        self._set("kind", kind)
        self._set("detail", detail)
        self._set("path", path)
        self._set("artifact", artifact)

    def __str__(self) -> str:
        where = f"{self.bundle / self.path}" if self.path else str(self.bundle)
        what = f" (artifact '{self.artifact}')" if self.artifact else ""
        return f"{where}{what}: {self.detail}"


class AttachedBundle(Record):
    """A located bundle folder and its manifest."""

    _fields = ("path", "manifest", "roots", "problems")

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        roots: dict[str, str] | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        #: layout dir name -> folder (relative to `path`) that really holds it, e.g. {"hf": "hf/hf"}
        self.roots = {} if roots is None else roots
        self.problems = [] if problems is None else problems
        self._base = str(path)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def file_path(self, rel: str) -> Path:
        """Where the manifest path `rel` really is on disk (after Kaggle unpacking quirks)."""
        return Path(self._real(rel))

    def _real(self, rel: str) -> str:
        if self.roots:
            top, sep, rest = rel.partition("/")
            rel = self.roots.get(top, top) + sep + rest
        return f"{self._base}/{rel}"

    def artifact_ok(self, artifact: ArtifactEntry) -> bool:
        """True when the quick check found every file of `artifact` present with its size."""
        return not any(p.artifact == artifact.id for p in self.problems)


def _nested_root(bundle: str, top: str, rel: str) -> str | None:
    """`top/top` when a file listed as `rel` (under `top/`) sits one level deeper; else None."""
    nested = f"{top}/{top}"
    if os.path.exists(os.path.join(bundle, nested + rel[len(top):])):
        return nested
    return None


_LINK = -1  # _size_of: the path is a symlink


def _size_of(path: str) -> int | None:
    """Size of the regular file at `path`; None when missing; _LINK for a symlink.

    lstat, not stat: a bundle holds no symlinks (DESIGN.md) and one could point anywhere.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return _LINK if stat.S_ISLNK(st.st_mode) else st.st_size


def _linked_folder(base: str, real: str, seen: dict[str, str]) -> str | None:
    """The first folder between `base` and the file at `real` that is a symlink, or None.

    lstat of the file alone follows a linked folder above it (`snapshots/COMMIT ->
    /elsewhere`). `seen` maps each folder already looked at to the linked folder at
    or above it ("" for none), so a bundle costs one lstat per distinct folder and
    one dict lookup per file. `base` itself may be a link (a dataset mounted under
    another name).
    """
    return _link_above(base, real.rpartition("/")[0], seen) or None


def _link_above(base: str, folder: str, seen: dict[str, str]) -> str:
    hit = seen.get(folder)
    if hit is not None:
        return hit
    if len(folder) <= len(base):
        found = ""
    else:
        found = _link_above(base, folder.rpartition("/")[0], seen)
        if not found and _size_of(folder) == _LINK:
            found = folder[len(base) + 1 :]
    seen[folder] = found
    return found


def attach(folder: Path) -> AttachedBundle | Problem:
    """Read `folder`'s manifest and size-check its files (one lstat each, no hashing).

    Returns:
        The AttachedBundle, its missing or mis-sized files listed in `.problems`; or a
        Problem when the bundle cannot be attached at all (unusable bundle.json, symlinks).
    """
    try:
        manifest = read_manifest(folder)
    except ManifestError as e:
        return Problem(folder, "manifest", str(e), path=constants.MANIFEST_NAME)
    bundle = AttachedBundle(path=folder, manifest=manifest)
    base = str(folder)
    owners = [(a.id, f) for a in manifest.artifacts for f in a.files]
    owners += [(None, f) for f in manifest.extra_files]
    links: list[str] = []
    seen_folders: dict[str, str] = {}
    for art_id, entry in owners:
        size = _size_of(bundle._real(entry.path))
        top = entry.path.split("/", 1)[0]
        if size is None and top in LAYOUT_DIRS and top not in bundle.roots and "/" in entry.path:
            # The first missing file under a layout dir: was it unpacked one level deeper?
            nested = _nested_root(base, top, entry.path)
            bundle.roots[top] = nested or top
            if nested:
                size = _size_of(bundle._real(entry.path))
            elif os.path.exists(os.path.join(base, top + ".zip")):
                bundle.problems.append(
                    Problem(
                        folder,
                        "archive",
                        f"{top}.zip was not unpacked; unzip it next to bundle.json "
                        f"(python -m zipfile -e {folder / (top + '.zip')} DEST) and point "
                        "BUNDLE_PATH at DEST",
                        path=top + ".zip",
                    )
                )
        linked = None if size is None else _linked_folder(base, bundle._real(entry.path), seen_folders)
        if linked is not None:
            if linked not in links:
                links.append(linked)
        elif size == _LINK:
            links.append(entry.path)
        elif size is None:
            bundle.problems.append(
                Problem(folder, "missing", "listed in bundle.json but missing", entry.path, art_id)
            )
        elif size != entry.size:
            bundle.problems.append(
                Problem(
                    folder,
                    "size",
                    f"size {size} != {entry.size} in bundle.json (truncated or replaced)",
                    entry.path,
                    art_id,
                )
            )
    if links:
        # Refused whole: the view links whole folders, so one symlink would be served.
        shown = ", ".join(links[:3]) + (f" (+{len(links) - 3} more)" if len(links) > 3 else "")
        return Problem(
            folder,
            "symlink",
            f"not attached: holds symlinks ({shown}); bundles hold real files only "
            "(rebuild it with `bundle build`)",
            path=links[0],
        )
    return bundle


def attach_all(folders: list[Path]) -> tuple[list[AttachedBundle], list[Problem]]:
    """Attach each folder; unreadable manifests become Problems instead of errors."""
    bundles: list[AttachedBundle] = []
    problems: list[Problem] = []
    for folder in folders:
        result = attach(folder)
        if isinstance(result, Problem):
            problems.append(result)
        else:
            bundles.append(result)
            problems.extend(result.problems)
    return bundles, problems
