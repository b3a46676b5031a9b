"""Talking to the Docker engine: connect, stream the build context, run the build, push."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from builder import constants
from builder.errors import DockerUnavailableError, ImageBuildError, PushError
from builder.image.context import (
    CTX_DOCKERFILE,
    BuildContext,
    ContextError,
)

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
            where = constants.docker_host() or "the default socket /var/run/docker.sock"
            raise DockerUnavailableError(
                f"no Docker engine answers at {where} ({last.splitlines()[0] if last else 'no reply'}); "
                "start dockerd or set DOCKER_HOST"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def tar_stream(context: BuildContext, *, progress: bool) -> Iterator[Iterator[bytes]]:
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


def run_build(
    client: Any,
    context: BuildContext,
    *,
    tag: str,
    platform: str | None,
    progress: bool,
    emit: Callable[[str], None],
) -> str:
    """Send the context, stream the build, return the image id or raise ImageBuildError."""
    with tar_stream(context, progress=progress) as blocks:
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
                *lines, partial = (partial + ANSI_RE.sub("", text)).split("\n")
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


def push_image(client: Any, tag: str, emit: Callable[[str], None]) -> None:
    repo, _, ref = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    for chunk in client.api.push(repo, tag=ref, stream=True, decode=True):
        if "error" in chunk or "errorDetail" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
            raise PushError(
                f"pushing {tag} failed: {message}; check `docker login` for that registry"
            )
        if "status" in chunk and "progressDetail" not in chunk:
            emit(f"{chunk['status']}\n")
