"""What `bundle image` can fail with (declared in builder.errors with every builder error);
every message says what failed and what to do."""

from __future__ import annotations

from builder.errors import (
    ContextError,
    DockerUnavailableError,
    ImageBuildError,
    ImageError,
    PushError,
    SmokeCheckError,
)

__all__ = ["ContextError", "DockerUnavailableError", "ImageBuildError", "ImageError",
           "PushError", "SmokeCheckError"]
