"""Writing a bundle folder: staging, materialising from the store, generated files, swap.

A build never writes under the bundle's final name. Everything goes into a
sibling staging folder (``OUT/.NAME.staging-*``); when the folder is complete it
replaces ``OUT/NAME`` in one step (``renameat2(RENAME_EXCHANGE)`` on Linux, two
renames elsewhere), and the previous bundle is removed afterwards. A crash
leaves at most a stale staging folder, which the next build clears.

Generated top-level files (``bundle.json``, ``dataset-metadata.json``, ``README.md``)
are derived from the manifest; see :func:`write_generated`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from builder.errors import BuildError
from builder.extras.first_cell import first_cell
from builder.store import HASH_CHUNK, LINK_REFUSED, sha256_file
from runtime.constants import (
    KAGGLE_METADATA_NAME,
    README_NAME,
    WHEELS_DIR,
)
from runtime.manifest import FileEntry, Manifest, ManifestError, check_relative_path, write_manifest
from runtime.sizes import human_size

STAGING_PREFIX = "staging"


def file_entry(bundle_dir: Path, rel: str) -> FileEntry:
    """Hash one file of the bundle folder into a manifest entry."""
    p = bundle_dir / rel
    return FileEntry(path=rel, size=p.stat().st_size, sha256=sha256_file(p, chunk_size=HASH_CHUNK))


# --- staging ---------------------------------------------------------------


def new_staging_dir(out_dir: Path, name: str) -> Path:
    """A fresh, empty sibling of ``out_dir/name`` to build into."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{name}.{STAGING_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def clear_stale_staging(out_dir: Path, name: str) -> None:
    """Remove staging folders of builds that died (their process is gone)."""
    for p in out_dir.glob(f".{name}.{STAGING_PREFIX}-*"):
        parts = p.name.rsplit("-", 2)
        try:
            pid = int(parts[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        remove_tree(p)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def inside(staging: Path | str, rel: str) -> str:
    """``staging/rel`` after checking ``rel`` with the runtime's own path rule.

    Every write into a bundle goes through here, so no path from a spec, a
    source or a server can land outside the staging folder.

    Raises:
        BuildError: ``rel`` is absolute, has '..', '.' or empty parts, a
            backslash or a control character.
    """
    try:
        check_relative_path(rel, "bundle path")
    except ManifestError as e:
        raise BuildError(f"{e}; refusing to write it") from None
    return f"{staging}/{rel}"


def write_bytes(staging: Path, rel: str, data: bytes) -> None:
    """Write a small generated file (world-readable) into the staging folder."""
    dest = Path(inside(staging, rel))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    os.chmod(dest, 0o644)


def fast_blob_path(store) -> Callable[[str], str]:
    """``store.blob_path`` as a plain-string function (pathlib costs ~30 µs a call,
    which is most of a no-op rebuild of a bundle with thousands of files)."""
    probe = "ab" + "0" * 62
    sample = str(store.blob_path(probe))
    if sample.endswith(f"/ab/{probe}"):  # a store with fan-out folders
        prefix = sample[: -len(probe) - 4]
        return lambda sha256: f"{prefix}/{sha256[:2]}/{sha256}"
    if sample.endswith(f"/{probe}"):  # the flat layout
        prefix = sample[: -len(probe) - 1]
        return lambda sha256: f"{prefix}/{sha256}"
    return lambda sha256: str(store.blob_path(sha256))


class Linker:
    """Puts store blobs into a staging folder by hard link, with few system calls.

    One ``link()`` per file (the staging folder is fresh, so there is nothing to
    replace); folders are created once. Where the store lives on another file
    system, the previous bundle's copy of the same file (same path, size and
    sha256 in its manifest) is hard-linked instead of copying gigabytes again,
    and only new files are copied (``Store.materialise``).
    """

    def __init__(self, store, staging: Path) -> None:
        self.store = store
        self.staging = str(staging)
        self.blob_path = fast_blob_path(store)
        self._made: set[str] = set()

    def link(self, sha256: str, rel: str, previous: Path | None = None) -> str:
        dest = inside(self.staging, rel)
        parent = dest.rsplit("/", 1)[0]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        try:
            os.link(self.blob_path(sha256), dest)
            return "link"
        except OSError as e:
            if e.errno not in LINK_REFUSED:
                if not self.store.has(sha256):
                    raise BuildError(f"{rel}: blob {sha256} is missing from the store {self.store.root}") from None
                raise
        if previous is not None:
            with contextlib.suppress(OSError):
                os.link(previous, dest)
                return "reuse"
        return self.store.materialise(sha256, Path(dest))


# --- swap ------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(staging: Path, final: Path) -> None:
    """Make ``staging`` the bundle at ``final``; the previous bundle is removed.

    There is no moment at which ``final`` holds a mix of old and new files.
    """
    if not final.exists():
        os.rename(staging, final)
        return
    if not _exchange(staging, final):
        # No atomic exchange: move the old one aside, then the new one in.
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
        os.rename(staging, final)
        staging = aside
    remove_tree(staging)  # now the previous bundle


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only bundles (folders chmod a-w)."""

    def onerror(func, p, exc_info):
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IMODE(os.stat(parent).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.stat(p).st_mode) | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
        func(p)

    if path.exists():
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(path, onerror=onerror)


def check_tree(staging: Path) -> None:
    """No symlinks, no empty folders (Kaggle flattens the first and drops the second)."""
    for root, dirs, files in os.walk(staging):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise BuildError(f"internal: symlink {os.path.join(root, name)} in a bundle")
        if not dirs and not files and Path(root) != staging:
            os.rmdir(root)


# --- generated top-level files ---------------------------------------------


def dataset_metadata(manifest: Manifest, *, kaggle: str | None, license: str) -> dict:
    """Kaggle's dataset-metadata.json: id OWNER/SLUG (or the bare slug), title, licenses."""
    return {
        "id": kaggle or manifest.name,
        "title": manifest.title,
        "licenses": [{"name": license}],
    }


def readme_text(manifest: Manifest, *, kaggle: str | None) -> str:
    """The bundle's README.md: what is in it and the notebook cell that uses it."""
    slug = (kaggle or manifest.name).split("/")[-1]
    has_wheels = any(f.path.startswith(WHEELS_DIR + "/") for f in manifest.extra_files)
    lines = [
        f"# {manifest.title or manifest.name}",
        "",
        f"Offline bundle `{manifest.name}` version {manifest.version}, built by "
        "[offline-bundle](https://pypi.org/project/offline-bundle/).",
        f"Digest: `{manifest.digest}`. Every file below is listed with its size and "
        "sha256 in `bundle.json`.",
        "",
        "## Use it in a notebook with the internet off",
        "",
    ]
    if has_wheels:
        lines += [
            f"On Kaggle, attach it (*Add Input*): it mounts at `/kaggle/input/{slug}/` or "
            f"`/kaggle/input/datasets/OWNER/{slug}/`. The first cell installs the runtime from "
            f"this bundle's `{WHEELS_DIR}/` (no package index):",
            "",
            "```python",
            first_cell("dataset").rstrip("\n"),
            "```",
            "",
            "Attached as a Kaggle Model instead (`bundle publish --as model`), the same cell with "
            "the Models mounts:",
            "",
            "```python",
            first_cell("model").rstrip("\n"),
            "```",
            "",
            f"Elsewhere (a GPU host, Colab Drive): `pip install --no-index --find-links "
            f"path/to/this/bundle/{WHEELS_DIR} offline-bundle`, then "
            "`BUNDLE_PATH=path/to/this/bundle`.",
            "",
        ]
    else:
        lines += [
            "This bundle carries no runtime wheel: install offline-bundle in the notebook's "
            "environment first (with the internet on, or from another bundle's wheels/).",
            "",
        ]
    lines += ["Then each artifact by id:", "", "```python", "import runtime",
              "runtime.activate(strict=True)  # finds this bundle, switches every library offline"]
    for a in manifest.artifacts:
        lines.append(f'path = runtime.resolve("{a.id}")  # {a.source}: {a.ref}')
    lines += ["```", ""]
    lines += [
        "Unmodified loading code works too once `runtime.activate()` ran: "
        "`from_pretrained(\"ORG/NAME\")`, torchvision `weights=...`, "
        "timm `create_model(..., pretrained=True)`.",
        "",
        "## Contents",
        "",
        "| id | source | ref | revision | files | size |",
        "|---|---|---|---|---|---|",
    ]
    for a in manifest.artifacts:
        rev = (a.commit or a.revision or "")[:12]
        lines.append(
            f"| `{a.id}` | {a.source} | `{a.ref}` | {rev} | {len(a.files)} | {human_size(a.size)} |"
        )
    if manifest.extra_files:
        lines += ["", f"Extra files: {len(manifest.extra_files)} (wheels, notebooks)."]
    lines += [
        "",
        "Check the files against `bundle.json` with `bundle verify path/to/this/bundle`.",
        "",
    ]
    return "\n".join(lines)


def generated_top_level(manifest: Manifest, *, kaggle: str | None, license: str) -> dict[str, bytes]:
    """dataset-metadata.json and README.md, by name (derived from the manifest and spec)."""
    meta = dataset_metadata(manifest, kaggle=kaggle, license=license)
    return {
        KAGGLE_METADATA_NAME: (json.dumps(meta, indent=2) + "\n").encode(),
        README_NAME: readme_text(manifest, kaggle=kaggle).encode(),
    }


def write_generated(staging: Path, manifest: Manifest, top_level: dict[str, bytes]) -> None:
    """bundle.json (digest filled in) and the other generated top-level files."""
    write_manifest(staging, manifest)
    os.chmod(staging / "bundle.json", 0o644)
    for name, data in top_level.items():
        write_bytes(staging, name, data)


def list_files(root: Path, under: Iterable[str]) -> list[str]:
    """Bundle-relative paths of every regular file below the given sub-folders."""
    found = []
    for sub in under:
        base = root / sub
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file() and not p.is_symlink():
                    found.append(p.relative_to(root).as_posix())
    return found
