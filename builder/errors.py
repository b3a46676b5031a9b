"""Error classes of the build side.

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
