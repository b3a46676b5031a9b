"""Artifact sources, registered by name (``hf``, ``torchvision``, ``timm``, ``url``).

Each source is one module that declares the spec fields it takes and knows how to
turn an artifact of the spec into a plan: the files to fetch (URLs, expected
hashes) and where they go in the bundle. Adding a source is adding a module to this
package whose class is decorated with ``@register_source("NAME")`` (the module named
NAME is tried first); nothing else dispatches on source names.

This package imports no heavy library at import time: ``huggingface_hub``,
``torchvision`` and ``timm`` are imported inside ``resolve`` only when a spec uses
the source that needs them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime._record import from_fields, json_fields

if TYPE_CHECKING:
    from builder.artifact import ArtifactSpec

_REGISTRY: dict[str, type[Source]] = {}


@dataclass(frozen=True)
class FieldSpec:
    """One spec field a source accepts: its Python type and whether it is required.

    ``type`` is ``str``, ``int``, ``bool``, ``list`` (a list of strings) or ``dict``
    (a table of strings), or a tuple of those when several are accepted.
    """

    type: type | tuple[type, ...]
    required: bool = False
    help: str = ""


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


class Source:
    """Base class of a source. Subclasses set ``name`` and ``fields`` and implement ``resolve``."""

    name: str = ""
    #: spec fields this source takes (beyond the common ones: id, source, fallbacks, …)
    fields: Mapping[str, FieldSpec] = {}
    #: the field that names what is fetched (the artifact's ``ref``; ``bundle ls SPEC`` shows it)
    ref_field: str = ""

    def check(self, options: dict[str, Any]) -> str | None:
        """Source-specific checks of the spec fields (types are already checked).

        Returns:
            None when fine, else the problem as "field 'X' ...", which the spec
            loader prefixes with the file and artifact.
        """
        return None

    def resolve(self, artifact: ArtifactSpec, ctx: ResolveContext) -> ResolvedArtifact:
        """Turn a spec artifact into a plan. May ask servers (never downloads payloads).

        Raises:
            builder.errors.BuildError: the artifact cannot be resolved; the message
                names the artifact and what to change.
        """
        raise NotImplementedError

    def headers(self, url: str) -> dict[str, str]:
        """HTTP headers for fetching one of this source's files (auth, user agent).

        Computed at fetch time and never stored: they may carry a token. A build
        asks once per host and reuses the answer for every file on that host, so
        the headers must not depend on the rest of the url.
        """
        return {}

    def fingerprint_extra(self) -> dict[str, Any]:
        """Settings outside the spec that change the plan (e.g. the Hub endpoint)."""
        return {}

    def mirror_hint(self, url: str) -> str | None:
        """What a failed download of `url` should suggest instead of --mirror, if anything."""
        return None


def register_source(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: make a Source subclass available under ``name``."""

    def deco(cls: type[Source]) -> type[Source]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def known_sources() -> list[str]:
    """Every source name a spec may use, sorted (imports each source module: light)."""
    for module in _module_names():
        importlib.import_module(f"{__name__}.{module}")
    return sorted(_REGISTRY)


def get_source(name: str) -> Source:
    """An instance of the source registered as ``name``.

    Raises:
        KeyError: no such source.
    """
    if name not in _REGISTRY:
        module = name.replace("-", "_")
        if module in _module_names():
            importlib.import_module(f"{__name__}.{module}")
        else:
            known_sources()
    return _REGISTRY[name]()
