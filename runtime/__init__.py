"""offline-bundle runtime: find attached bundles, switch libraries offline, resolve artifacts.

    import runtime
    runtime.activate()                       # before or after importing transformers / timm
    path = runtime.resolve("google/vit-base-patch16-224-in21k")

Importing this package imports only the standard library (it must run before
torch or transformers in a notebook; a test pins this).
"""

from __future__ import annotations

from typing import Any

from runtime.activate import activate, deactivate
from runtime.errors import (
    ArtifactNotFoundError,
    BundleIntegrityError,
    BundleIntegrityWarning,
    BundleRuntimeError,
    FallbackWarning,
    MissingFromBundleError,
    NoBundleError,
    NoBundleWarning,
    OfflineViolation,
    UnsupportedVersionWarning,
)
from runtime.locate import locate
from runtime.resolve import resolve
from runtime.state import Activation, current

_LAZY = {"verify": "runtime.integrity", "VerifyReport": "runtime.integrity",
         "resolve_with_provenance": "runtime.resolve", "resolutions": "runtime.provenance"}


def __getattr__(name: str) -> Any:
    # verify() hashes (hashlib, html for notebooks): imported on first use, which
    # keeps `import runtime` + activate() cheap. resolve and locate stay eager:
    # they share their names with submodules, whose import would shadow them.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "Activation",
    "ArtifactNotFoundError",
    "BundleIntegrityError",
    "BundleIntegrityWarning",
    "BundleRuntimeError",
    "FallbackWarning",
    "MissingFromBundleError",
    "NoBundleError",
    "NoBundleWarning",
    "OfflineViolation",
    "UnsupportedVersionWarning",
    "VerifyReport",
    "activate",
    "current",
    "deactivate",
    "locate",
    "resolutions",
    "resolve",
    "resolve_with_provenance",
    "verify",
]

