"""`runtime.verify()`: check the attached bundles' files against bundle.json.

quick=True compares sizes (what activate() does); quick=False also hashes every
file with sha256, which reads every byte: minutes for gigabytes, so only on request.
"""

from __future__ import annotations

import hashlib
import html
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.catalog import AttachedBundle, Problem, attach_all
from runtime.locate import locate

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


def _sha256(path: Path, progress: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return h.hexdigest()


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the runtime does not depend on tqdm
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="verify sha256", file=sys.stderr)


def verify_bundles(bundles: list[AttachedBundle], *, quick: bool = True,
                   progress: bool = True) -> VerifyReport:
    """verify() over already attached bundles (their quick-check problems are reused)."""
    report = VerifyReport(quick=quick, bundles=[b.path for b in bundles])
    for bundle in bundles:
        report.problems.extend(bundle.problems)
        files = bundle.manifest.all_files()
        report.files += len(files)
        report.bytes += sum(f.size for f in files)
    if quick:
        return report
    bad = {(p.bundle, p.path) for p in report.problems}
    bar = _progress_bar(report.bytes, progress)
    try:
        for bundle in bundles:
            owner = {f.path: a.id for a in bundle.manifest.artifacts for f in a.files}
            for entry in bundle.manifest.all_files():
                if (bundle.path, entry.path) in bad:
                    continue  # already missing or of the wrong size
                digest = _sha256(bundle.file_path(entry.path), bar)
                if digest != entry.sha256:
                    report.problems.append(Problem(
                        bundle.path, "sha256",
                        f"sha256 {digest[:12]}… != {entry.sha256[:12]}… in bundle.json (corrupted)",
                        entry.path, owner.get(entry.path)))
    finally:
        if bar is not None:
            bar.close()
    return report


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
    # Manifest problems (unreadable bundle.json) belong to no attached bundle.
    report.problems[:0] = [p for p in problems if p.kind == "manifest"]
    report.bundles = folders
    return report
