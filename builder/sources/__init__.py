"""Artifact sources, registered by name (``hf``, ``torchvision``, ``timm``, ``url``, ``local``).

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

__all__ = ["FieldSpec", "GeneratedFile", "HUB_SNAPSHOT_FIELDS", "PlannedFile", "ResolveContext", "TORCH_HUB_FIELD",
           "ResolvedArtifact", "Source", "URL_FILE_FIELDS", "get_source", "known_sources",
           "register_source"]

from builder.sources.records import (
    GeneratedFile,
    PlannedFile,
    ResolveContext,
    ResolvedArtifact,
)

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


class Source:
    """Base class of a source. Subclasses set ``name`` and ``fields`` and implement ``resolve``."""

    name: str = ""
    #: spec fields this source takes (beyond the common ones: id, source, fallbacks, …)
    fields: Mapping[str, FieldSpec] = {}
    #: the field that names what is fetched (the artifact's ``ref``; ``bundle ls SPEC`` shows it)
    ref_field: str = ""
    #: False: resolve on every build (the plan depends on more than the spec: local files)
    reuse_plan: bool = True
    #: True: the plan names files of this machine (``file://``), which the build copies;
    #: no other source's plan may hold such a URL
    local_files: bool = False

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


#: The fields of a file fetched from a URL and checked: pinned hash, size, other URLs.
URL_FILE_FIELDS: dict[str, FieldSpec] = {
    "sha256": FieldSpec(str, help="sha256 of the file (pins it; required unless "
                                  "--trust-on-first-use)"),
    "size": FieldSpec(int, help="expected size in bytes"),
    "mirrors": FieldSpec(list, help="other URLs serving the same bytes, tried in order"),
}
#: Where one file goes in the bundle (url and local sources).
TORCH_HUB_FIELD = FieldSpec(bool, help="keep the file in torch/hub/checkpoints/ (where "
                            "torch.hub.load_state_dict_from_url finds it offline)")
#: The fields of a snapshot of a Hub repo: which revision, which files.
HUB_SNAPSHOT_FIELDS: dict[str, FieldSpec] = {
    "revision": FieldSpec(str, help='branch, tag or commit (default "main")'),
    "include": FieldSpec(list, help='glob patterns of files to take, e.g. ["*.json", "*.safetensors"]'),
    "exclude": FieldSpec(list, help="glob patterns of files to leave out"),
}


def register_source(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: make a Source subclass available under ``name``."""

    def deco(cls: type[Source]) -> type[Source]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name != "records")


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
