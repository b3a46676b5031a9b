"""`bundle image`: bake a bundle and the runtime into a CUDA Docker image.

The image is built with the Docker SDK from a build context assembled by
`builder.image.context` (never from the user's working tree), so nothing but the files listed in
bundle.json, the runtime wheels and the Dockerfile can reach a layer: no `.git`,
no store, no kaggle.json, no Hugging Face token. After building, the image is
run once with no network (`bundle doctor --json`) to prove the bundle is found
and complete.

    from builder.image import build_image
    report = build_image("bundles-dist/emotion-vit", base_image="pytorch/pytorch:...")
    print(report.image_id, report.labels["offline-bundle.bundle.digest"])

Only click and the standard library are imported at module level: `docker`
and `tqdm` are imported inside the functions that need them.
"""


from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import ImageBuildError
from builder.image.context import assemble_context
from builder.image.docker import connect, push_image, run_build
from builder.image.smoke import smoke_check
from runtime.sizes import human_size

# --- Fixed names -------------------------------------------------------------

#: The official PyTorch runtime image the Dockerfile defaults to (torch preinstalled).
#: Keep in step with `ARG BASE_IMAGE` in Dockerfile.gpu and docs/docker.md.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime"
LABEL_NAME = "offline-bundle.bundle.name"
LABEL_VERSION = "offline-bundle.bundle.version"
LABEL_DIGEST = "offline-bundle.bundle.digest"


# --- Records -----------------------------------------------------------------


@dataclass
class ImageReport:
    """What `build_image` made: the image and what the smoke check saw."""

    image_id: str
    tags: list[str]
    size: int
    labels: dict[str, str]
    bundle_name: str
    bundle_version: str
    bundle_digest: str
    runtime_wheel_origin: str
    smoke: dict[str, Any] | None = None
    pushed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "tags": self.tags,
            "size": self.size,
            "labels": self.labels,
            "bundle": {
                "name": self.bundle_name,
                "version": self.bundle_version,
                "digest": self.bundle_digest,
            },
            "runtime_wheel": self.runtime_wheel_origin,
            "smoke": self.smoke,
            "pushed": self.pushed,
        }


def default_tag(name: str, version: str) -> str:
    """`NAME:VERSION`, with characters a Docker tag cannot hold replaced by '-'."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:128].lstrip(".-") or "latest"
    return f"{name}:{tag}"


def build_image(
    bundle_dir: str | os.PathLike,
    *,
    tag: str | None = None,
    base_image: str | None = None,
    platform: str | None = None,
    push: bool = False,
    smoke: bool = True,
    runtime_wheel: str | os.PathLike | None = None,
    dockerfile: str | os.PathLike | None = None,
    install_wheelhouse: bool = True,
    client: Any = None,
    progress: bool = True,
) -> ImageReport:
    """Build the Docker image of a bundle, smoke-check it offline, optionally push it.

    Args:
        bundle_dir: the bundle folder (holds bundle.json).
        tag: image tag; default `NAME:VERSION` from bundle.json.
        base_image: FROM image; default the PyTorch CUDA runtime image of Dockerfile.gpu.
            Used as is when the daemon has it; pulled by the daemon only when missing.
        platform: e.g. "linux/amd64"; the smoke check is skipped for a foreign platform.
        push: push the tag after a passing smoke check.
        smoke: run `bundle doctor --json` in the image with no network.
        runtime_wheel: an offline_bundle-*.whl to install (default: built from this source tree).
        dockerfile: another Dockerfile with the same context contract.
        install_wheelhouse: install the packages of the bundle's wheels/ too.
        client: a docker.DockerClient (default: `connect()`).
        progress: stream build output and a progress bar to stderr.

    Returns:
        ImageReport: image id, tags, size, labels, the smoke check's result.

    Raises:
        ContextError (incomplete bundle, credential in the context), RuntimeWheelError,
        DockerUnavailableError, ImageBuildError (the daemon's message and the failing
        step), SmokeCheckError, PushError: all BuildError subclasses.
    """
    from runtime.manifest import read_manifest

    def emit(text: str) -> None:
        if progress:
            sys.stderr.write(text)
            sys.stderr.flush()

    bundle_dir = Path(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="ob-image-") as work:
        # The bundle is checked (and the context assembled) before any daemon is asked.
        context = assemble_context(
            bundle_dir,
            work_dir=Path(work),
            dockerfile=Path(dockerfile) if dockerfile else None,
            runtime_wheel=Path(runtime_wheel) if runtime_wheel else None,
            install_wheelhouse=install_wheelhouse,
            base_image=base_image,
        )
        tag = tag or default_tag(context.bundle_name, context.bundle_version)
        client = client or connect()
        emit(
            f"building {tag} from {bundle_dir} ({human_size(context.size)} context; runtime {context.runtime_wheel_origin})\n"
        )
        image_id = run_build(
            client, context, tag=tag, platform=platform, progress=progress, emit=emit
        )

    image = client.images.get(image_id)
    report = ImageReport(
        image_id=image.id,
        tags=list(image.tags),
        size=int(image.attrs.get("Size") or 0),
        labels=dict((image.attrs.get("Config") or {}).get("Labels") or {}),
        bundle_name=context.bundle_name,
        bundle_version=context.bundle_version,
        bundle_digest=context.bundle_digest,
        runtime_wheel_origin=context.runtime_wheel_origin,
    )
    if report.labels.get(LABEL_DIGEST) != context.bundle_digest:
        raise ImageBuildError(
            f"{tag}: label {LABEL_DIGEST} is {report.labels.get(LABEL_DIGEST)!r}, expected the bundle "
            f"digest {context.bundle_digest}; is --dockerfile missing the LABEL block of Dockerfile.gpu?",
            step="LABEL",
            daemon_message="",
            output_tail=[],
        )
    foreign = platform and _arch(platform) != _arch(client.version().get("Arch", ""))
    if smoke and not foreign:
        manifest = read_manifest(bundle_dir)
        emit(f"smoke check: bundle doctor --json in {tag} with --network none\n")
        report.smoke = smoke_check(
            client,
            image.id,
            bundle_name=context.bundle_name,
            artifact_ids=[a.id for a in manifest.artifacts],
        )
    elif smoke:
        emit(f"smoke check skipped: {platform} is not the daemon's platform\n")
    if push:
        push_image(client, tag, emit)
        report.pushed.append(tag)
    return report


def _arch(platform: str) -> str:
    arch = platform.split("/")[1] if "/" in platform else platform
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)
