"""`runtime.verify()`: check the attached bundles' files against bundle.json.

quick=True compares sizes (what activate() does); quick=False also hashes every
file with sha256, which reads every byte: minutes for gigabytes, so only on request.
Both also report what `bundle verify` reports besides: files bundle.json does not
list, and symlinks (a bundle holds real files only), so the two always agree.
"""

from __future__ import annotations

import hashlib
import html
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.catalog import AttachedBundle, Problem, attach_all
from runtime.locate import locate
from runtime.manifest import is_generated

_CHUNK = 1 << 20


@dataclass(repr=False)
class VerifyReport:
    """Result of runtime.verify(): bundles checked, files, bytes and every problem found."""

    quick: bool
    bundles: list[Path] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "quick": self.quick,
            "bundles": [str(b) for b in self.bundles],
            "files": self.files,
            "bytes": self.bytes,
            "problems": [
                {"bundle": str(p.bundle), "kind": p.kind, "path": p.path,
                 "artifact": p.artifact, "detail": p.detail}
                for p in self.problems
            ],
        }

    def __repr__(self) -> str:
        how = "sizes" if self.quick else "sizes and sha256"
        head = (f"runtime.verify(): {len(self.bundles)} bundle(s), {self.files} file(s), "
                f"{self.bytes} bytes checked ({how}): " + ("OK" if self.ok else
                f"{len(self.problems)} problem(s)"))
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(str(p))}</li>" for p in self.problems)
        return f"<pre>{html.escape(repr(self).splitlines()[0])}</pre>" + (
            f"<ul>{items}</ul>" if items else "")


def unlisted_files(root: Path, listed: set[str]) -> Iterator[str]:
    """Paths below ``root`` (relative to it) that are not in ``listed``.

    Files, and links to folders (which os.walk does not enter); the generated
    top-level files (README.md, dataset-metadata.json) are not reported. The one
    walk `bundle verify`, `runtime.verify()` and publish/pack checks share.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + links):
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel not in listed and not is_generated(rel):
                yield rel


def _unlisted(bundle: AttachedBundle) -> list[Problem]:
    """Files and symlinks in an attached bundle that its bundle.json does not list."""
    base = len(str(bundle.path)) + 1
    listed = {bundle._real(f.path)[base:] for f in bundle.manifest.all_files()}
    problems = []
    for rel in unlisted_files(bundle.path, listed):
        if os.path.islink(bundle.path / rel):
            problems.append(Problem(bundle.path, "symlink",
                                    "a symlink; bundles hold real files only", rel))
        else:
            problems.append(Problem(bundle.path, "extra", "not listed in bundle.json", rel))
    return problems


def _sha256(path: Path, progress: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return h.hexdigest()


def verify_bundles(bundles: list[AttachedBundle], *, quick: bool = True,
                   progress: bool = True) -> VerifyReport:
    """verify() over already attached bundles (their quick-check problems are reused)."""
    report = VerifyReport(quick=quick, bundles=[b.path for b in bundles])
    for bundle in bundles:
        report.problems.extend(bundle.problems)
        report.problems.extend(_unlisted(bundle))
        files = bundle.manifest.all_files()
        report.files += len(files)
        report.bytes += sum(f.size for f in files)
    if quick:
        return report
    report.problems.extend(hash_problems(bundles, progress=progress,
                                         skip={(p.bundle, p.path) for p in report.problems}))
    return report


def hash_problems(bundles: list[AttachedBundle], *, progress: bool = True,
                  skip: set[tuple[Path, str]] | frozenset = frozenset()) -> list[Problem]:
    """sha256 of every listed file against bundle.json; a Problem for each mismatch.

    A few files are hashed at once (hashlib releases the GIL), which keeps a disk
    or a network file system busy. `skip`: (bundle path, file) pairs already
    known to be missing or of the wrong size.
    """
    import concurrent.futures as cf

    jobs = []
    for bundle in bundles:
        owner = {f.path: a.id for a in bundle.manifest.artifacts for f in a.files}
        jobs += [(bundle, entry, owner.get(entry.path)) for entry in bundle.manifest.all_files()
                 if (bundle.path, entry.path) not in skip]
    from runtime.progress import byte_bar

    bar = byte_bar(sum(entry.size for _, entry, _ in jobs), "verify sha256", enabled=progress)
    problems: list[Problem] = []
    try:
        with cf.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            digests = pool.map(lambda job: _digest_or_error(job[0].file_path(job[1].path), bar),
                               jobs)
            for (bundle, entry, art_id), digest in zip(jobs, digests, strict=True):
                if digest != entry.sha256:
                    detail = (digest[len("error: "):] if digest.startswith("error: ") else
                              f"sha256 {digest[:12]}… != {entry.sha256[:12]}… in bundle.json "
                              "(corrupted or replaced)")
                    problems.append(Problem(bundle.path, "sha256", detail, entry.path, art_id))
    finally:
        bar.close()
    return problems


def _digest_or_error(path: Path, bar: Any) -> str:
    try:
        return _sha256(path, bar)
    except OSError as e:
        return f"error: cannot read: {e.strerror or e}"


def verify(quick: bool = True, *, paths: list[str | os.PathLike] | None = None,
           progress: bool = True) -> VerifyReport:
    """Check bundle files against bundle.json.

    Args:
        quick: sizes only (fast). False also hashes every file with sha256.
        paths: bundle folders to check; default: every bundle `runtime.locate()` finds.
        progress: show a tqdm bar on stderr while hashing (when tqdm is installed).

    Returns:
        A VerifyReport; `.ok` is False when a file is missing, of the wrong size or
        (quick=False) of the wrong sha256, or a bundle.json is unreadable.
    """
    folders = [Path(p) for p in paths] if paths is not None else locate()
    bundles, problems = attach_all(folders)
    report = verify_bundles(bundles, quick=quick, progress=progress)
    # Bundles that could not be attached (unreadable bundle.json, symlinks) have
    # their one problem here; the attached ones' problems are in the report already.
    attached = {b.path for b in bundles}
    report.problems[:0] = [p for p in problems if p.bundle not in attached]
    report.bundles = folders
    return report
