"""Exceptions raised by the runtime. Messages name the artifact, the file and the next step."""

from __future__ import annotations

from typing import Any


def log_warning(message: str) -> None:
    """Log ``message`` on the "runtime" logger, importing logging only now.

    ``import runtime`` is on every notebook's first line and must stay cheap;
    logging (with traceback, tokenize, string) costs ~7 ms to import and the
    runtime only logs when something is wrong. The package's NullHandler is
    installed on first use, as ``import runtime`` did before.
    """
    _logger().warning(message)


def _logger() -> Any:
    import logging

    log = logging.getLogger("runtime")
    if not getattr(log, "_offline_bundle_ready", False):
        # A library logs, the application decides where to: no output unless
        # configured (activate() also warns through `warnings`, which notebooks show).
        log.addHandler(logging.NullHandler())
        log._offline_bundle_ready = True  # type: ignore[attr-defined]
    return log


class BundleRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ArtifactNotFoundError(BundleRuntimeError, LookupError):
    """`runtime.resolve(name)` found no usable artifact of that name in any attached bundle.

    The message lists what the attached bundles do hold and how to add the missing
    artifact to a spec. `name` is what was asked for; `available` the names found.
    """

    def __init__(self, message: str, *, name: str = "", available: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.available = available


class MissingFromBundleError(BundleRuntimeError, FileNotFoundError):
    """Unmodified loading code asked for a file that no attached bundle can give.

    Raised under `runtime.activate()` by every loader the runtime knows
    (transformers, diffusers, timm, huggingface_hub's hf_hub_download and
    snapshot_download, torch.hub / torchvision), instead of a library's "check your
    internet connection". The message names the repo or URL, the file, the bundles
    searched, whether a bundle holds the repo but not the file (or a damaged copy of
    it), any declared fallback, and the spec block to add.

    A FileNotFoundError, so code that handles a missing file still does. Where a Hub
    file is merely absent, huggingface_hub's wrappers raise a subclass that is also
    its LocalEntryNotFoundError, so libraries that probe for optional files (a
    processor config, safetensors before .bin) go on as they do with a plain cache.

    Attributes:
        reason: "not-bundled" (no attached bundle holds the repo or URL),
            "file-not-in-bundle" (a bundle holds the repo, not this file), "broken"
            (bundle.json lists the file but it is missing or truncated), "no-bundle"
            (nothing is attached at all).
        repo_id, filename, revision, url: what was asked for (None where not known).
        bundles: (name, path) of every bundle searched.
    """

    def __init__(self, message: str, *, reason: str = "not-bundled", repo_id: str | None = None,
                 filename: str | None = None, revision: str | None = None, url: str | None = None,
                 bundles: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.repo_id = repo_id
        self.filename = filename
        self.revision = revision
        self.url = url
        self.bundles = bundles

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def info(self) -> dict[str, Any]:
        """The keyword arguments that make an equal error (for re-raising at another layer)."""
        return {"reason": self.reason, "repo_id": self.repo_id, "filename": self.filename,
                "revision": self.revision, "url": self.url, "bundles": self.bundles}


class NoBundleError(BundleRuntimeError):
    """`activate(strict=True)` found no bundle; the message names the search roots used."""


class OfflineViolation(BundleRuntimeError):
    """Strict mode stopped a network connection to a non-loopback host.

    Deliberately *not* an OSError/ConnectionError: HTTP clients (urllib3, httpx,
    huggingface_hub's backoff) retry on those, which would turn a clear error into
    minutes of silent retries. This one propagates through them unchanged.
    """

    def __init__(self, message: str, *, host: str = "", port: int | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class BundleIntegrityError(BundleRuntimeError):
    """`activate(verify="full")` found a file that is not what bundle.json says.

    Nothing was activated. `problems` lists each file (missing, wrong size, wrong
    sha256, not listed, a symlink) with its bundle and artifact.
    """

    def __init__(self, message: str, *, problems: tuple = ()) -> None:
        super().__init__(message)
        self.problems = problems


class BundleIntegrityWarning(UserWarning):
    """activate() found files missing or of the wrong size in an attached bundle."""


class FallbackWarning(UserWarning):
    """resolve() used a declared fallback instead of the artifact asked for."""


class UnsupportedVersionWarning(UserWarning):
    """A library is older than the oldest version the runtime supports; names both."""


class NoBundleWarning(UserWarning):
    """activate() found no bundle; every library is offline with an empty cache."""
