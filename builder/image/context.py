"""The build context of a bundle image: exactly what may reach the daemon, nothing else.

Only the files bundle.json lists (plus its generated top-level files), the
runtime wheels, the Dockerfile and the entrypoint go in; stray files in the
bundle folder (`.git`, a kaggle.json) never do, and a context file named like a
credential stops the build. Files keep no owner, mode or time from the build
host (root, 0644/0755, mtime 0), so weights saved 0600 stay readable by the
image's non-root user.

Standard library only (tqdm, for the progress bar, is imported when used).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from builder.credentials import credential_reason
from builder.errors import ContextError, ImageError
from builder.extras.runtime_wheels import (
    PROJECT_DISTRIBUTION,
    collect_runtime_wheels,
    project_source_dir,
    wheel_distribution,
)

DOCKERFILE_NAME = "Dockerfile.gpu"
#: Where the image keeps the bundle: /opt/bundles/NAME (a default runtime search root).
IMAGE_BUNDLES_DIR = "/opt/bundles"
IMAGE_RUNTIME_DIR = "/opt/offline-bundle"

# Paths inside the build context (Dockerfile.gpu copies them in this order).
CTX_DOCKERFILE = "Dockerfile"
CTX_ARTIFACTS = "bundle/artifacts"
CTX_META = "bundle/meta"
CTX_RUNTIME_WHEELS = "runtime/wheels"
CTX_REQUIREMENTS = "runtime/requirements.txt"
CTX_ENTRYPOINT = "docker-entrypoint.sh"

# `docker run IMAGE run STACK ...`, `docker run IMAGE bundle run STACK ...` and
# `docker run IMAGE python x.py` all do what they say: a first argument that is
# not a program on PATH (or is an option) is a `bundle` subcommand.
ENTRYPOINT_SCRIPT = """\
#!/bin/sh
# docker-entrypoint.sh (offline-bundle): run `bundle`.
#   IMAGE                       -> bundle doctor (the image's CMD)
#   IMAGE run STACK ...         -> bundle run STACK ...
#   IMAGE --help                -> bundle --help
#   IMAGE bundle run STACK ...  -> bundle run STACK ...
#   IMAGE python train.py       -> python train.py (any program on PATH; use `bundle ls`, not `ls`)
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then
  set -- bundle "$@"
fi
exec "$@"
"""




# --- Records -----------------------------------------------------------------


@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: copied from `source` or written from `data`."""

    arcname: str
    source: Path | None = None
    data: bytes | None = None
    size: int = 0
    executable: bool = False


@dataclass
class BuildContext:
    """The minimal build context for one bundle: what goes to the daemon, nothing else.

    Attributes:
        bundle_name, bundle_version, bundle_digest: from bundle.json.
        files: every file of the context, in a stable order.
        buildargs: the `--build-arg`s Dockerfile.gpu expects.
        runtime_wheels: file names under runtime/wheels/.
        wheelhouse_packages: distributions installed from the bundle's wheels/.
        runtime_wheel_origin: where the offline-bundle wheel came from.
    """

    bundle_name: str
    bundle_version: str
    bundle_digest: str
    files: list[ContextFile]
    buildargs: dict[str, str]
    runtime_wheels: list[str]
    wheelhouse_packages: list[str]
    runtime_wheel_origin: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def write_dir(self, dest: str | os.PathLike) -> Path:
        """Write the context as a folder (for `docker build` / buildx elsewhere).

        Files are hard-linked from the bundle when already world-readable, copied
        (and made world-readable) otherwise; the bundle itself is never modified.

        Raises:
            ContextError: `dest` exists and is not empty.
        """
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise ContextError(f"{dest}: context folder exists and is not empty; pick a new folder")
        dest.mkdir(parents=True, exist_ok=True)
        for f in self.files:
            target = dest / f.arcname
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.data is not None:
                target.write_bytes(f.data)
            else:
                assert f.source is not None
                if f.source.stat().st_mode & stat.S_IROTH:
                    try:
                        os.link(f.source, target)
                        continue
                    except OSError:
                        pass  # another file system, or links not allowed: copy
                shutil.copyfile(f.source, target)
            target.chmod(0o755 if f.executable else 0o644)
        (dest / "buildargs.json").write_text(json.dumps(self.buildargs, indent=2) + "\n")
        return dest

    def write_tar(self, fileobj: IO[bytes], *, progress: bool = False) -> None:
        """Write the context as an uncompressed tar (what the Docker API takes).

        Owners, modes and times are normalised (root, 0644/0755, mtime 0): files
        saved with mode 0600 (save_pretrained does that) stay readable by the
        image's non-root user, and the layers do not depend on the build host.
        """
        bar = _progress_bar(self.size, "context", enabled=progress)
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for d in _parent_dirs(f.arcname for f in self.files):
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            for f in self.files:
                info = tarfile.TarInfo(f.arcname)
                info.mode = 0o755 if f.executable else 0o644
                info.size = f.size
                if f.data is not None:
                    tar.addfile(info, io.BytesIO(f.data))
                else:
                    assert f.source is not None
                    try:
                        with open(f.source, "rb") as fh:
                            tar.addfile(info, _CountingReader(fh, bar))
                    except OSError as e:
                        if isinstance(e, BrokenPipeError):
                            raise  # the reader went away; not this file's fault
                        raise ContextError(
                            f"{f.source}: changed or vanished while the build context was sent "
                            f"({e}); is a build writing into the bundle? run `bundle verify` and retry"
                        ) from None
        bar.close()


# --- Credentials -------------------------------------------------------------


def assert_no_credentials(paths: Iterable[str]) -> None:
    """Refuse a context that holds a file named like a credential.

    Raises:
        ContextError: names the first such file and why.
    """
    for path in paths:
        reason = credential_reason(path)
        if reason:
            raise ContextError(
                f"refusing to put {path!r} into the image build context: {reason}. "
                "Credentials must never reach an image layer; remove it from the bundle."
            )


# --- The bundle --------------------------------------------------------------


def check_bundle_files(bundle_dir: Path, manifest: Any) -> None:
    """Quick check (sizes, no hashes) that every file of bundle.json is there as listed.

    Also refuses symlinks and paths that leave the bundle: the context must carry
    real files of this bundle only.

    Raises:
        ContextError: lists every missing, resized or unsafe file and says to rebuild.
    """
    root = bundle_dir.resolve()
    problems: list[str] = []
    for f in manifest.all_files():
        path = bundle_dir / f.path
        if path.is_symlink():
            problems.append(f"{f.path}: is a symlink (bundles hold real files only)")
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            problems.append(f"{f.path}: missing")
            continue
        if not path.resolve().is_relative_to(root):
            problems.append(f"{f.path}: resolves outside the bundle")
        elif not stat.S_ISREG(st.st_mode):
            problems.append(f"{f.path}: not a regular file")
        elif st.st_size != f.size:
            problems.append(f"{f.path}: size {st.st_size}, bundle.json says {f.size}")
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise ContextError(
            f"{bundle_dir}: bundle is incomplete or damaged ({shown}); "
            f"run `bundle verify {bundle_dir}` and rebuild it with `bundle build`"
        )


def _read_bundle(bundle_dir: Path) -> Any:
    from runtime.manifest import ManifestError, read_manifest

    try:
        return read_manifest(bundle_dir)
    except ManifestError as e:
        raise ContextError(f"{e}; `bundle image` takes a folder made by `bundle build`") from None


def _bundle_license(bundle_dir: Path) -> str:
    from runtime.constants import KAGGLE_METADATA_NAME

    try:
        meta = json.loads((bundle_dir / KAGGLE_METADATA_NAME).read_text(encoding="utf-8"))
        names = [lic.get("name", "") for lic in meta.get("licenses", []) if isinstance(lic, dict)]
        return ",".join(n for n in names if n)
    except (OSError, ValueError, AttributeError):
        return ""


# --- The context -------------------------------------------------------------


def dockerfile_path() -> Path:
    """Dockerfile.gpu from the source tree (or packaged next to this module)."""
    root = project_source_dir()
    candidates = ([root / DOCKERFILE_NAME] if root else []) + [
        Path(__file__).with_name(DOCKERFILE_NAME)
    ]
    for p in candidates:
        if p.is_file():
            return p
    raise ImageError(
        f"{DOCKERFILE_NAME} not found (looked in {', '.join(map(str, candidates))}); pass --dockerfile"
    )


def assemble_context(
    bundle_dir: str | os.PathLike,
    *,
    work_dir: Path,
    dockerfile: Path | None = None,
    runtime_wheel: Path | None = None,
    install_wheelhouse: bool = True,
    base_image: str | None = None,
) -> BuildContext:
    """Assemble the minimal build context for `bundle_dir`.

    Only the files listed in bundle.json (plus its generated top-level files),
    the runtime wheels, the Dockerfile and the entrypoint go in: stray files in
    the bundle folder (a `.git`, a kaggle.json) never do, and a context file
    named like a credential is refused.

    Args:
        bundle_dir: a bundle folder (holds bundle.json).
        work_dir: where the runtime wheels are staged (must outlive the context).
        dockerfile: defaults to Dockerfile.gpu.
        runtime_wheel: an offline_bundle-*.whl to install instead of building one.
        install_wheelhouse: also install every package of the bundle's wheels/.
        base_image: becomes the BASE_IMAGE build arg (None: the Dockerfile's default).

    Returns:
        The BuildContext (write it with `write_tar` or `write_dir`).

    Raises:
        ContextError: the bundle is incomplete, unsafe, or carries a credential.
        ImageError: no runtime wheel could be found or built.
    """
    from runtime.constants import GENERATED_FILES, WHEELS_DIR

    bundle_dir = Path(bundle_dir)
    manifest = _read_bundle(bundle_dir)
    check_bundle_files(bundle_dir, manifest)
    name = manifest.name

    files: list[ContextFile] = []
    for art in manifest.artifacts:
        for f in sorted(art.files, key=lambda f: f.path):
            files.append(
                ContextFile(f"{CTX_ARTIFACTS}/{f.path}", source=bundle_dir / f.path, size=f.size)
            )
    meta_paths = [f.path for f in manifest.extra_files]
    meta_paths += sorted(g for g in GENERATED_FILES if (bundle_dir / g).is_file())
    for rel in sorted(meta_paths):
        src = bundle_dir / rel
        if src.is_symlink():
            raise ContextError(f"{src}: is a symlink; bundles hold real files only")
        files.append(ContextFile(f"{CTX_META}/{rel}", source=src, size=src.stat().st_size))

    bundle_wheels = [
        str(bundle_dir / f.path)
        for f in manifest.extra_files
        if f.path.startswith(f"{WHEELS_DIR}/") and f.path.endswith(".whl")
    ]
    wheels_dir = work_dir / "runtime-wheels"
    if wheels_dir.exists():
        shutil.rmtree(wheels_dir)
    wheels_dir.mkdir(parents=True)
    runtime_whl, origin = collect_runtime_wheels(
        wheels_dir, bundle_wheels=bundle_wheels, runtime_wheel=runtime_wheel
    )
    runtime_version = runtime_whl.name.split("-")[1]
    if runtime_whl.parent == wheels_dir:
        runtime_in_image = f"{IMAGE_RUNTIME_DIR}/wheels/{runtime_whl.name}"
    else:  # taken from the bundle's wheelhouse
        runtime_in_image = f"{IMAGE_BUNDLES_DIR}/{name}/{WHEELS_DIR}/{runtime_whl.name}"
    for w in sorted(wheels_dir.glob("*.whl")):
        files.append(ContextFile(f"{CTX_RUNTIME_WHEELS}/{w.name}", source=w, size=w.stat().st_size))

    wheelhouse_packages: list[str] = []
    if install_wheelhouse:
        wheelhouse_packages = sorted(
            {wheel_distribution(Path(w).name) for w in bundle_wheels} - {PROJECT_DISTRIBUTION}
        )
    requirements = [
        "# Generated by `bundle image`: installed with pip --no-index in Dockerfile.gpu.",
        f"--find-links {IMAGE_BUNDLES_DIR}/{name}/{WHEELS_DIR}" if bundle_wheels else "",
        "# The runtime, by path: the exact wheel assembled for this image.",
        runtime_in_image,
        "# The bundle's wheelhouse, unpinned: what the base image already has stays as it is.",
        *wheelhouse_packages,
    ]
    req_text = "\n".join(line for line in requirements if line) + "\n"
    files.append(ContextFile(CTX_REQUIREMENTS, data=req_text.encode(), size=len(req_text.encode())))

    dockerfile = dockerfile or dockerfile_path()
    df = dockerfile.read_bytes()
    files.append(ContextFile(CTX_DOCKERFILE, data=df, size=len(df)))
    entry = ENTRYPOINT_SCRIPT.encode()
    files.append(ContextFile(CTX_ENTRYPOINT, data=entry, size=len(entry), executable=True))

    assert_no_credentials(f.arcname for f in files)

    buildargs = {
        "BUNDLE_NAME": name,
        "BUNDLE_VERSION": manifest.version,
        "BUNDLE_DIGEST": manifest.digest,
        "BUNDLE_TITLE": manifest.title,
        "BUNDLE_LICENSE": _bundle_license(bundle_dir),
        "RUNTIME_VERSION": runtime_version,
        "BUILD_DATE": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if base_image:
        buildargs["BASE_IMAGE"] = base_image
    # Defense in depth: no byte of the context (nor a build arg, which the image
    # keeps in its history) holds a credential of this machine.
    from builder.credentials import refuse_secrets
    from builder.errors import CredentialError

    try:
        refuse_secrets(
            [*((f.arcname, f.data if f.data is not None else f.source) for f in files),
             ("the build args", "\n".join(f"{k}={v}" for k, v in buildargs.items()).encode())],
            action="no image was built",
        )
    except CredentialError as e:
        raise ContextError(str(e)) from None
    return BuildContext(
        bundle_name=name,
        bundle_version=manifest.version,
        bundle_digest=manifest.digest,
        files=files,
        buildargs=buildargs,
        runtime_wheels=sorted(w.name for w in wheels_dir.glob("*.whl")),
        wheelhouse_packages=wheelhouse_packages,
        runtime_wheel_origin=origin,
    )


def write_context(
    bundle_dir: str | os.PathLike, dest: str | os.PathLike, **kwargs: Any
) -> BuildContext:
    """Write the build context of `bundle_dir` into the folder `dest` (no Docker needed).

    Keyword arguments are those of `assemble_context` (except `work_dir`).
    Build it elsewhere with `docker build -f Dockerfile $(build-args from buildargs.json) dest`.
    """
    with tempfile.TemporaryDirectory(prefix="ob-image-") as work:
        context = assemble_context(bundle_dir, work_dir=Path(work), **kwargs)
        context.write_dir(dest)
    return context


# --- Small helpers -----------------------------------------------------------


def _parent_dirs(paths: Iterable[str]) -> list[str]:
    dirs: set[str] = set()
    for p in paths:
        parent = PurePosixPath(p).parent
        while str(parent) not in (".", ""):
            dirs.add(str(parent))
            parent = parent.parent
    return sorted(dirs)


class _CountingReader:
    """File wrapper that advances a progress bar as tarfile reads it."""

    def __init__(self, fh: IO[bytes], bar: Any) -> None:
        self._fh = fh
        self._bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._bar.update(len(data))
        return data


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, *, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)
