"""What a source makes of one spec artifact: the plan of its files (kept in the resolved
plan beside the bundle, so a rerun asks no server), and what a source may be told."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime._record import from_fields, json_fields


@dataclass
class PlannedFile:
    """One file of an artifact: where it goes in the bundle and how to get it.

    The expected hashes are data (not callbacks) so that a plan can be written to
    the build lock and reused by a rerun without asking any server again.
    """

    path: str  # bundle-relative POSIX path
    urls: list[str]  # tried in order (spec mirrors after the primary URL)
    sha256: str | None = None  # None: unknown before the download (git-stored hub files, TOFU)
    size: int | None = None
    git_sha1: str | None = None  # hub files kept in git: the blob id the Hub reports
    sha256_prefix: str | None = None  # torch.hub style hash prefix in the file name

    def to_json(self) -> dict[str, Any]:
        from builder.credentials import redact_url

        # What the resolved plan keeps: no signature or token is written to disk.
        return json_fields(self, ("path",), urls=[redact_url(u) for u in self.urls],
                           **{k: getattr(self, k) for k in ("sha256", "size", "git_sha1", "sha256_prefix")})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlannedFile:
        return from_fields(cls, dict(data), ("path", "sha256", "size", "git_sha1", "sha256_prefix"),
                           urls=list(data["urls"]))


@dataclass
class GeneratedFile:
    """A small file the source writes itself (e.g. the hub cache's ``refs/main``)."""

    path: str
    data: bytes

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "text": self.data.decode("utf-8")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneratedFile:
        return cls(path=data["path"], data=data["text"].encode("utf-8"))


@dataclass
class ResolvedArtifact:
    """What a source made of one spec artifact: names, revision and the file plan."""

    id: str
    source: str
    ref: str  # user-facing name: repo id, weights enum, timm model, URL
    revision: str | None  # commit for hub sources; None where there is none
    path: str  # what runtime.resolve() returns, relative to the bundle
    files: list[PlannedFile]
    generated: list[GeneratedFile] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, ("id", "source", "ref", "revision", "path", "aliases", "files",
                                  "generated"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedArtifact:
        return from_fields(
            cls, dict(data), ("id", "source", "ref", "path"), revision=data.get("revision"),
            aliases=list(data.get("aliases", [])),
            files=[PlannedFile.from_json(f) for f in data["files"]],
            generated=[GeneratedFile.from_json(g) for g in data.get("generated", [])])


@dataclass
class ResolveContext:
    """What a source may need beyond its artifact: build options."""

    trust_on_first_use: bool = False
    spec_path: str = ""
