"""What `bundle image` can fail with; every message says what failed and what to do."""

from __future__ import annotations

from builder.errors import BuildError


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
