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


# --- Errors of the stacks and the code they share -------------------------------
# Every public error the runtime raises is declared here, so one ``except
# BundleRuntimeError`` catches them all; each is also the builtin a caller may
# already catch (ValueError, OSError, ...). The modules that raise them import them
# from here, and the old import paths (``runtime.vision.errors``,
# ``runtime.train.checkpoint``, ...) still work.


class ManifestError(BundleRuntimeError, ValueError):
    """bundle.json is missing, unreadable or malformed. The message names the file and field."""


class NetworkNamespaceError(BundleRuntimeError, OSError):
    """The operating system refused a private network namespace; the message says why."""


class UnknownStackError(BundleRuntimeError, KeyError):
    """No stack registers the name asked for; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(BundleRuntimeError, RuntimeError):
    """A checkpoint (a stack's best.pt or last.pt, a masked-ssl encoder.pt, a DDRM model
    file) is missing, unreadable, or was written for another stack or network; the
    message names the file and what to pass instead."""


class PrecisionError(BundleRuntimeError, ValueError):
    """A precision that the device cannot run was requested."""


class IncompleteWeightsError(BundleRuntimeError, RuntimeError):
    """A backbone checkpoint lacks weights the model needs (they would stay random)."""


class AudioDecodeError(BundleRuntimeError, RuntimeError):
    """An audio file could not be decoded."""


class DeamLayoutError(BundleRuntimeError, ValueError):
    """A data folder is neither the DEAM layout nor the plain layout, or is inconsistent."""


class DistillConfigError(BundleRuntimeError, ValueError):
    """Checkpoints or options that do not fit together (features, split, kinds)."""


class GanConfigError(BundleRuntimeError, ValueError):
    """A GAN size or width that the networks cannot be built with."""


class StudentModelError(BundleRuntimeError, ValueError):
    """The student name is not a timm model with pretrained weights."""


class FlagError(BundleRuntimeError, ValueError):
    """A DDRM --model-flags / --classifier-flags string could not be understood."""


class RestoreError(BundleRuntimeError):
    """A DDRM request (inputs, labels, options) cannot run; the message says what to change."""


class VisionError(BundleRuntimeError):
    """Base class of the vision stacks' errors: the message says why and what to do."""


class DatasetError(VisionError):
    """An image folder is missing, empty or not laid out as the stack expects."""


class MissingWeightsError(VisionError):
    """Pretrained torchvision weights are not in any attached bundle."""


class UnknownArchitectureError(VisionError):
    """An --arch name that the registry does not know."""


class UnsafeWeightsError(VisionError):
    """A weights file holds pickled objects other than tensors: it is not loaded."""


class OptionError(VisionError, ValueError):
    """Option values the stack cannot run with (e.g. an image size the model cannot take)."""


class BundleIntegrityWarning(UserWarning):
    """activate() found files missing or of the wrong size in an attached bundle."""


class FallbackWarning(UserWarning):
    """resolve() used a declared fallback instead of the artifact asked for."""


class UnsupportedVersionWarning(UserWarning):
    """A library is older than the oldest version the runtime supports; names both."""


class NoBundleWarning(UserWarning):
    """activate() found no bundle; every library is offline with an empty cache."""
