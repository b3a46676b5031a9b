"""offline-bundle runtime: find attached bundles, switch libraries offline, resolve artifacts.

    import runtime
    runtime.activate()                       # before or after importing transformers / timm
    path = runtime.resolve("google/vit-base-patch16-224-in21k")

Importing this package imports only the standard library (it must run before
torch or transformers in a notebook; a test pins this).
"""

from __future__ import annotations

import logging

from runtime.activate import Activation, activate, current, deactivate
from runtime.errors import (
    ArtifactNotFoundError,
    BundleIntegrityWarning,
    BundleRuntimeError,
    FallbackWarning,
    NoBundleWarning,
    OfflineViolation,
)
from runtime.integrity import VerifyReport, verify
from runtime.locate import locate
from runtime.resolve import resolve

# A library logs, the application decides where to: no output unless configured
# (activate() also warns through `warnings`, which notebooks show).
logging.getLogger("runtime").addHandler(logging.NullHandler())

__all__ = [
    "Activation",
    "ArtifactNotFoundError",
    "BundleIntegrityWarning",
    "BundleRuntimeError",
    "FallbackWarning",
    "NoBundleWarning",
    "OfflineViolation",
    "VerifyReport",
    "activate",
    "current",
    "deactivate",
    "locate",
    "resolve",
    "verify",
]

