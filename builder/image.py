"""`bundle image`: bake a bundle and the runtime into a CUDA Docker image.

The image is built with the Docker SDK from a build context assembled by
`builder.image_context` (never from the user's working tree), so nothing but the files listed in
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

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from builder.errors import BuildError
from builder.image_context import (  # noqa: F401  (ContextError, CTX_*: part of this module's API)
    CTX_ARTIFACTS,
    CTX_DOCKERFILE,
    CTX_META,
    DOCKERFILE_NAME,
    IMAGE_BUNDLES_DIR,
    BuildContext,
    ContextError,
    ImageError,
    assemble_context,
    credential_reason,
    dockerfile_path,
    human_size,
    write_context,
)

# --- Fixed names -------------------------------------------------------------

#: The official PyTorch runtime image the Dockerfile defaults to (torch preinstalled).
#: Keep in step with `ARG BASE_IMAGE` in Dockerfile.gpu and docs/docker.md.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime"
LABEL_NAME = "offline-bundle.bundle.name"
LABEL_VERSION = "offline-bundle.bundle.version"
LABEL_DIGEST = "offline-bundle.bundle.digest"

SMOKE_TIMEOUT_S = 300

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# --- Errors ------------------------------------------------------------------


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


# --- Docker ------------------------------------------------------------------


def connect(*, timeout_s: float = 10.0) -> Any:
    """A Docker client for DOCKER_HOST (or the default socket), retried until it answers.

    Raises:
        DockerUnavailableError: nothing answered within `timeout_s`.
    """
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise DockerUnavailableError(
            "the Docker SDK is not installed; pip install 'offline-bundle[build]'"
        ) from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = docker.from_env()
            client.ping()
            return client
        except DockerException as e:
            last = str(e)
        if time.monotonic() >= deadline:
            where = os.environ.get("DOCKER_HOST") or "the default socket /var/run/docker.sock"
            raise DockerUnavailableError(
                f"no Docker engine answers at {where} ({last.splitlines()[0] if last else 'no reply'}); "
                "start dockerd or set DOCKER_HOST"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def _tar_stream(context: BuildContext, *, progress: bool) -> Iterator[Iterator[bytes]]:
    """The context as tar blocks, written by a thread into a pipe while the daemon reads.

    No temporary copy of the bundle: a 20 GB bundle needs no 20 GB of free temp space.

    Raises:
        ContextError: writing the tar failed (a bundle file vanished or shrank meanwhile).
    """
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            context.write_tar(writer, progress=progress)
        except BaseException as e:  # handed to the consumer below
            failure.append(e)
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=produce, name="build-context-tar", daemon=True)
    thread.start()
    try:
        yield iter(lambda: reader.read(1 << 20), b"")
    finally:
        reader.close()  # a writer the daemon stopped reading gets EPIPE and ends
        thread.join()
        if failure and not isinstance(failure[0], BrokenPipeError):
            # The daemon saw a truncated tar; the cause is on this side.
            if isinstance(failure[0], ContextError):
                raise failure[0]
            raise ContextError(f"writing the build context failed: {failure[0]}") from failure[0]


def _run_build(
    client: Any,
    context: BuildContext,
    *,
    tag: str,
    platform: str | None,
    progress: bool,
    emit: Callable[[str], None],
) -> str:
    """Send the context, stream the build, return the image id or raise ImageBuildError."""
    with _tar_stream(context, progress=progress) as blocks:
        stream = client.api.build(
            fileobj=blocks,
            custom_context=True,
            dockerfile=CTX_DOCKERFILE,
            tag=tag,
            buildargs=context.buildargs,
            platform=platform,
            rm=True,
            forcerm=True,
            pull=False,  # no forced re-pull: a local base is used as is (the daemon pulls only a missing one)
            network_mode="none",  # RUN steps get no network: the build is offline by construction
            use_config_proxy=False,  # ~/.docker/config.json proxies would become build args
            decode=True,
        )
        step = ""
        tail: deque[str] = deque(maxlen=12)
        image_id = ""
        partial = ""  # the daemon splits lines across chunks (and colours RUN stderr)
        for chunk in stream:
            if "stream" in chunk:
                text = chunk["stream"]
                emit(text)
                *lines, partial = (partial + _ANSI_RE.sub("", text)).split("\n")
                for line in lines:
                    line = line.strip()
                    if not line:
                        continue
                    if line.startswith("Step "):
                        step = line
                        tail.clear()
                    elif not line.startswith("---> "):
                        tail.append(line)
                    m = re.match(r"Successfully built ([0-9a-f]+)", line)
                    if m and not image_id:
                        image_id = m.group(1)
            elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            elif "status" in chunk:
                emit(chunk["status"] + "\n")
            if "error" in chunk or "errorDetail" in chunk:
                if partial.strip():
                    tail.append(partial.strip())
                detail = chunk.get("errorDetail") or {}
                message = (detail.get("message") or chunk.get("error") or "").strip()
                output = [
                    ln for ln in tail if not ln.startswith(("Removing intermediate", "Running in"))
                ]
                shown = " | ".join(output[-4:])
                raise ImageBuildError(
                    f"docker build of {tag} failed at {step or 'the first step'}: {message}"
                    + (f" (step output: {shown})" if shown else "")
                    + _step_hint(step),
                    step=step,
                    daemon_message=message,
                    output_tail=output,
                )
    if not image_id:
        raise ImageBuildError(
            f"docker build of {tag} ended without an image id",
            step=step,
            daemon_message="",
            output_tail=list(tail),
        )
    return image_id


def _step_hint(step: str) -> str:
    """What to do next, for the steps of Dockerfile.gpu that fail for a known reason."""
    if "-m venv" in step:
        return "; the base image needs Python >= 3.10 with the venv module (choose it with --base-image)"
    if "pip install" in step:
        return (
            "; a wheel does not fit the base image's Python or platform: rebuild the bundle's "
            "wheelhouse for it ([wheels] python / platform in the spec) or pass --no-wheelhouse"
        )
    return ""


def smoke_check(
    client: Any, image: str, *, bundle_name: str, artifact_ids: list[str]
) -> dict[str, Any]:
    """Run `bundle doctor --json` in `image` with no network; check the bundle and its artifacts.

    Returns:
        {"exit_code", "bundle_found", "artifacts_present", "missing", "doctor"}.

    Raises:
        SmokeCheckError: doctor failed, printed no JSON, did not find the bundle, or
            reports an artifact of it missing.
    """
    container = client.containers.create(
        image, command=["bundle", "doctor", "--json"], network_mode="none"
    )
    try:
        container.start()
        try:
            code = container.wait(timeout=SMOKE_TIMEOUT_S)["StatusCode"]
        except Exception as e:  # requests' ReadTimeout, ConnectionError
            raise SmokeCheckError(
                f"{image}: `bundle doctor --json` did not finish within {SMOKE_TIMEOUT_S} s ({e})"
            ) from None
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    try:
        doctor = json.loads(out)
    except ValueError:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise SmokeCheckError(
            f"{image}: `bundle doctor --json` exited {code} without JSON on stdout ({last}); "
            "the runtime in the image is broken"
        ) from None
    found = _doctor_bundle(doctor, bundle_name)
    if found is None:
        raise SmokeCheckError(
            f"{image}: `bundle doctor` found no bundle named {bundle_name!r} "
            f"(BUNDLE_PATH={IMAGE_BUNDLES_DIR}/{bundle_name}); the image is missing its bundle"
        )
    missing, problems = _doctor_findings(doctor, found, artifact_ids)
    if missing or problems:
        what = []
        if missing:
            what.append(f"missing artifact(s) {', '.join(missing)}")
        what += problems[:5]
        raise SmokeCheckError(
            f"{image}: bundle {bundle_name!r} inside the image: {'; '.join(what)}"
        )
    return {
        "exit_code": code,
        "bundle_found": True,
        "bundle_path": found.get("path"),
        "artifacts_present": list(artifact_ids),
        "missing": [],
        "doctor": doctor,
    }


def _doctor_bundle(doctor: Any, name: str) -> dict[str, Any] | None:
    bundles = doctor.get("bundles") if isinstance(doctor, dict) else None
    for b in bundles or []:
        if isinstance(b, dict) and b.get("name") == name:
            return b
    return None


def _doctor_findings(
    doctor: dict[str, Any], bundle: dict[str, Any], artifact_ids: list[str]
) -> tuple[list[str], list[str]]:
    """(artifacts missing, other problems) for `bundle` in a `bundle doctor --json` report.

    The report (runtime/cli.py) lists each bundle's artifact ids, and problems as
    "PATH (artifact 'ID'): detail" lines; a stack of the bundle lacking an
    artifact is reported under "stacks" with status "missing".
    """
    listed = set(bundle.get("artifacts") or [])
    missing = [a for a in artifact_ids if a not in listed]
    problems: list[str] = []
    root = str(bundle.get("path") or "")
    for text in doctor.get("problems") or []:
        text = str(text)
        if root and not text.startswith(root):
            continue
        m = re.search(r"\(artifact '([^']+)'\)", text)
        if m and m.group(1) in artifact_ids:
            if m.group(1) not in missing:
                missing.append(m.group(1))
        else:
            problems.append(text)
    declared = set(bundle.get("stacks") or [])
    for s in doctor.get("stacks") or []:
        if isinstance(s, dict) and s.get("name") in declared and s.get("status") == "missing":
            problems.append(
                f"stack {s['name']} lacks {', '.join(map(str, s.get('missing') or []))}"
            )
    return missing, problems


def _push(client: Any, tag: str, emit: Callable[[str], None]) -> None:
    repo, _, ref = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    for chunk in client.api.push(repo, tag=ref, stream=True, decode=True):
        if "error" in chunk or "errorDetail" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
            raise PushError(
                f"pushing {tag} failed: {message}; check `docker login` for that registry"
            )
        if "status" in chunk and "progressDetail" not in chunk:
            emit(f"{chunk['status']}\n")


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
        image_id = _run_build(
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
        _push(client, tag, emit)
        report.pushed.append(tag)
    return report


def _arch(platform: str) -> str:
    arch = platform.split("/")[1] if "/" in platform else platform
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)


# --- CLI ---------------------------------------------------------------------


@click.command("image")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tag", "-t", help="Image tag (default NAME:VERSION from bundle.json).")
@click.option(
    "--base-image",
    help=f"FROM image (default {DEFAULT_BASE_IMAGE}); used as is when local, pulled only when missing.",
)
@click.option(
    "--platform", help="Target platform, e.g. linux/amd64 (smoke check skipped when foreign)."
)
@click.option("--push", is_flag=True, help="Push the tag after the smoke check passes.")
@click.option(
    "--context-only",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the build context to this folder and stop (no Docker needed).",
)
@click.option(
    "--runtime-wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Install this offline_bundle-*.whl instead of building one from the source tree.",
)
@click.option(
    "--dockerfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Another Dockerfile with the same context layout (default Dockerfile.gpu).",
)
@click.option(
    "--no-wheelhouse", is_flag=True, help="Do not install the packages of the bundle's wheels/."
)
@click.option(
    "--no-smoke", is_flag=True, help="Skip the offline `bundle doctor` run of the new image."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No build output on stderr.")
def image_command(
    bundle_dir: Path,
    tag: str | None,
    base_image: str | None,
    platform: str | None,
    push: bool,
    context_only: Path | None,
    runtime_wheel: Path | None,
    dockerfile: Path | None,
    no_wheelhouse: bool,
    no_smoke: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Bake BUNDLE_DIR and the runtime into a CUDA Docker image that runs offline.

    Builds Dockerfile.gpu with the Docker engine at DOCKER_HOST from a minimal
    context (the bundle's listed files, the runtime wheels; never credentials),
    then runs `bundle doctor --json` in the image with no network.

    \b
    Examples:
      bundle image bundles-dist/emotion-vit
      bundle image bundles-dist/emotion-vit --tag ghcr.io/me/emotion-vit:1.0.0 --push
      bundle image bundles-dist/emotion-vit --base-image pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime
      bundle image bundles-dist/emotion-vit --context-only /tmp/ctx   # then docker build elsewhere
      docker run --gpus all --network none emotion-vit:1.0.0 bundle run emotion-vit predict --help
    """
    try:
        if context_only is not None:
            context = write_context(
                bundle_dir,
                context_only,
                dockerfile=dockerfile,
                runtime_wheel=runtime_wheel,
                install_wheelhouse=not no_wheelhouse,
                base_image=base_image,
            )
            args = " ".join(
                f"--build-arg {k}={_shell_quote(v)}" for k, v in context.buildargs.items()
            )
            result = {
                "context": str(context_only),
                "size": context.size,
                "buildargs": context.buildargs,
                "runtime_wheel": context.runtime_wheel_origin,
                "command": f"docker build {args} -t {tag or default_tag(context.bundle_name, context.bundle_version)} {context_only}",
            }
            if as_json:
                click.echo(json.dumps(result, indent=2))
            else:
                click.echo(
                    f"wrote the build context of {context.bundle_name} {context.bundle_version} "
                    f"to {context_only} ({human_size(context.size)}); build it with:\n  {result['command']}"
                )
            return
        report = build_image(
            bundle_dir,
            tag=tag,
            base_image=base_image,
            platform=platform,
            push=push,
            smoke=not no_smoke,
            runtime_wheel=runtime_wheel,
            dockerfile=dockerfile,
            install_wheelhouse=not no_wheelhouse,
            progress=not quiet,
        )
    except (BuildError, OSError) as e:  # ImageError, RuntimeWheelError
        raise click.ClickException(" ".join(str(e).split())) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(
        f"built {', '.join(report.tags) or report.image_id}  {report.image_id}  {human_size(report.size)}"
    )
    for key in (LABEL_NAME, LABEL_VERSION, LABEL_DIGEST):
        click.echo(f"  {key}={report.labels.get(key, '')}")
    if report.smoke:
        n = len(report.smoke["artifacts_present"])
        click.echo(
            f"  smoke check (--network none, bundle doctor): bundle found, {n} artifact(s) present"
        )
    for t in report.pushed:
        click.echo(f"  pushed {t}")


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
