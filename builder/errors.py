"""Error classes of the build side: every public error of ``builder`` is declared here
(the runtime's are in ``runtime.errors``); the modules that raise them import them.

Every message names what failed (the artifact, the file, the URL) and says what
to do next, so the CLI can print it as one line with no traceback.
"""

from __future__ import annotations


class BuildError(Exception):
    """Base class: a build could not finish. The message names the artifact."""

    def __init__(self, message: str, *, artifact: str | None = None) -> None:
        super().__init__(message)
        self.artifact = artifact


class SpecError(BuildError):
    """A spec file is invalid (names the file, the artifact and the field)."""


class FetchError(BuildError):
    """A download failed.

    Attributes:
        url: the URL that failed last (never carries credentials).
        reason: short machine-friendly cause ("http 404", "stall", "reset", ...).
        permanent: True when retrying cannot help (4xx, bad hash, refused URL).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        reason: str = "",
        permanent: bool = False,
        artifact: str | None = None,
    ) -> None:
        super().__init__(message, artifact=artifact)
        self.url = url
        self.reason = reason
        self.permanent = permanent


class IntegrityError(FetchError):
    """Downloaded bytes do not match the expected sha256 / size (permanent)."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        reason: str = "integrity",
        permanent: bool = True,
        artifact: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message, url=url, reason=reason, permanent=permanent, artifact=artifact)
        self.expected = expected
        self.actual = actual


class StoreError(BuildError):
    """The content-addressed store could not be read or written (disk full, permissions)."""


class CredentialError(BuildError):
    """A credential would have been written or sent; the message names where, never what."""


class CaptureError(BuildError):
    """`bundle capture` could not run or its results could not be written."""


class WheelhouseError(BuildError):
    """pip could not fill the wheelhouse; the message names the requirements and pip's reason."""


class RuntimeWheelError(BuildError):
    """No offline-bundle wheel (or dependency wheel) can be had offline; says what to pass."""


# --- bundle image ------------------------------------------------------------------


class ImageError(BuildError):
    """`bundle image` could not finish. The message says what failed and what to do."""


class ContextError(ImageError):
    """The bundle cannot go into a build context (incomplete, unsafe, or a credential in it)."""


class DockerUnavailableError(ImageError):
    """No Docker engine answers at DOCKER_HOST (or the default socket)."""


class ImageBuildError(ImageError):
    """The daemon failed a build step.

    Attributes:
        step: the Dockerfile step that failed ("Step 5/17 : RUN ..."), if known.
        daemon_message: the daemon's error message, verbatim.
        output_tail: the last lines the step printed.
    """

    def __init__(self, message: str, *, step: str, daemon_message: str, output_tail: list[str]):
        super().__init__(message)
        self.step = step
        self.daemon_message = daemon_message
        self.output_tail = output_tail


class SmokeCheckError(ImageError):
    """The built image, run with no network, did not find its bundle or an artifact."""


class PushError(ImageError):
    """The registry refused the push (message from the daemon)."""


# --- bundle pack / unpack and bundle publish ----------------------------------------
# Not BuildErrors: they concern a built bundle, never a build.


class PackError(Exception):
    """The bundle could not be packed, or an archive could not be unpacked."""


class UnsafeArchiveError(PackError):
    """An archive member would land outside the target folder (or is a link)."""


class PublishError(Exception):
    """`bundle publish` could not finish; the message is one line that says what to do."""


class BundleCheckError(PublishError):
    """The bundle folder fails verification (missing, resized, stray or linked files)."""


class KaggleMetadataError(PublishError):
    """Dataset id, title, subtitle or license break Kaggle's rules."""


class KaggleAuthError(PublishError):
    """No usable Kaggle credentials were found."""


class KaggleServerError(PublishError):
    """Kaggle answered with an error (HTTP status or an error field in a 200 reply).

    Attributes:
        method: the API method that failed, e.g. "CreateDataset".
        status: the HTTP status, or None for an error carried in a 200 reply.
        server_message: what the server said.
    """

    def __init__(self, message: str, *, method: str, status: int | None, server_message: str):
        super().__init__(message)
        self.method = method
        self.status = status
        self.server_message = server_message
