"""`bundle image`: a CUDA Docker image that carries a bundle and the runtime.

Modules: ``context`` (the build context, assembled from bundle.json's list, never from
the working tree), ``docker`` (the engine: build, push), ``smoke`` (the image, run with
no network, must find its bundle), ``build`` (build_image() running them), ``command``
(the CLI); its errors are declared in builder.errors. Imports builder.errors, builder.credentials, builder.extras
(the runtime wheels) and runtime; the build never imports this package.

    from builder.image import build_image
    report = build_image("bundles-dist/emotion-vit", base_image="pytorch/pytorch:...")
"""

from builder.errors import (
    ContextError,
    DockerUnavailableError,
    ImageBuildError,
    ImageError,
    PushError,
    SmokeCheckError,
)
from builder.image.build import DEFAULT_BASE_IMAGE, ImageReport, build_image, default_tag

__all__ = [
    "DEFAULT_BASE_IMAGE", "ContextError", "DockerUnavailableError", "ImageBuildError", "ImageError",
    "ImageReport", "PushError", "SmokeCheckError", "build_image", "default_tag",
]
