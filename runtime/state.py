"""The activation in force: what ``runtime.activate()`` attached, for every module to read.

activate() sets it; resolve(), the loaders and provenance read it through
:func:`current`, so none of them imports activate (which imports them).
"""

from __future__ import annotations

from pathlib import Path

from runtime._record import FrozenRecord, Record
from runtime.catalog import AttachedBundle, Problem

_current: Activation | None = None


def current() -> Activation | None:
    """The Activation in force, or None before activate() / after deactivate()."""
    return _current


def set_current(activation: Activation | None) -> None:
    """What activate() attached (None: deactivate())."""
    global _current
    _current = activation


class ArtifactInfo(FrozenRecord):
    """One artifact of an attached bundle, as the Activation summary shows it."""

    __slots__ = ("id", "source", "ref", "bundle", "path", "size", "ok")
    _fields = __slots__

    def __init__(
        self, id: str, source: str, ref: str, bundle: str, path: Path, size: int, ok: bool
    ) -> None:
        for name, value in zip(self._fields, (id, source, ref, bundle, path, size, ok), strict=True):
            self._set(name, value)


class Activation(Record):
    """What activate() attached and changed. Prints as a summary (text or notebook HTML)."""

    _fields = ("bundles", "view", "env", "strict", "problems", "patched", "notes", "verified")

    def __init__(
        self,
        bundles: list[AttachedBundle],
        view: Path | None,
        env: dict[str, str],
        strict: bool,
        problems: list[Problem] | None = None,
        patched: list[str] | None = None,
        notes: list[str] | None = None,
        verified: str = "quick",
    ) -> None:
        self.bundles = bundles
        self.view = view
        self.env = env
        self.strict = strict
        self.problems = [] if problems is None else problems
        self.patched = [] if patched is None else patched
        self.notes = [] if notes is None else notes
        #: "quick" (sizes checked) or "full" (every file hashed against bundle.json)
        self.verified = verified

    @property
    def artifacts(self) -> list[ArtifactInfo]:
        return [
            ArtifactInfo(a.id, a.source, a.ref, b.name, b.file_path(a.path), a.size, b.artifact_ok(a))
            for b in self.bundles
            for a in b.manifest.artifacts
        ]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        mode = "strict offline" if self.strict else "offline"
        checked = "every file hashed" if self.verified == "full" else "sizes checked"
        lines = [f"runtime.activate(): {len(self.bundles)} bundle(s), {mode}, {checked}, "
                 f"view {self.view}"]
        for b in self.bundles:
            lines.append(f"  {b.name} {b.version}  {b.path}")
            for a in b.manifest.artifacts:
                flag = "ok" if b.artifact_ok(a) else "INCOMPLETE"
                lines.append(f"    {a.id:<24} {a.source:<11} {_size(a.size):>9}  {flag:<10} {a.ref}")
        for p in self.problems:
            lines.append(f"  problem: {p}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        if self.patched:
            lines.append(f"  patched: {', '.join(self.patched)}")
        lines.append("  env: " + " ".join(f"{k}={v}" for k, v in self.env.items()))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape as e

        mode = "strict offline" if self.strict else "offline"
        rows = "".join(
            f"<tr><td>{e(a.bundle)}</td><td><code>{e(a.id)}</code></td><td>{e(a.source)}</td>"
            f"<td>{e(a.ref)}</td><td style='text-align:right'>{_size(a.size)}</td>"
            f"<td>{'✅' if a.ok else '❌ incomplete'}</td></tr>"
            for a in self.artifacts
        )
        problems = "".join(f"<li>{e(str(p))}</li>" for p in self.problems)
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        return (
            f"<div><b>runtime.activate()</b>: {len(self.bundles)} bundle(s), {mode}"
            f"<table><tr><th>bundle</th><th>id</th><th>source</th><th>ref</th><th>size</th>"
            f"<th></th></tr>{rows}</table>"
            + (f"<p><b>Problems</b></p><ul>{problems}</ul>" if problems else "")
            + (f"<p>Notes</p><ul>{notes}</ul>" if notes else "")
            + f"<p><small>view {e(str(self.view))}; "
            + e(" ".join(f"{k}={v}" for k, v in self.env.items()))
            + "</small></p></div>"
        )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
