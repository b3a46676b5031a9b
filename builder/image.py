"""`bundle image`: bake a bundle and the runtime into a CUDA Docker image.

The image is built with the Docker SDK from a build context assembled here
(never from the user's working tree), so nothing but the files listed in
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

import base64
import datetime as _dt
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import click

from builder.errors import BuildError

# --- Fixed names -------------------------------------------------------------

#: The official PyTorch runtime image the Dockerfile defaults to (torch preinstalled).
#: Keep in step with `ARG BASE_IMAGE` in Dockerfile.gpu and docs/readme/docker.md.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime"
DOCKERFILE_NAME = "Dockerfile.gpu"
#: Where the image keeps the bundle: /opt/bundles/NAME (a default runtime search root).
IMAGE_BUNDLES_DIR = "/opt/bundles"
IMAGE_RUNTIME_DIR = "/opt/offline-bundle"
PROJECT_DISTRIBUTION = "offline-bundle"

# Paths inside the build context (Dockerfile.gpu copies them in this order).
CTX_DOCKERFILE = "Dockerfile"
CTX_ARTIFACTS = "bundle/artifacts"
CTX_META = "bundle/meta"
CTX_RUNTIME_WHEELS = "runtime/wheels"
CTX_REQUIREMENTS = "runtime/requirements.txt"
CTX_ENTRYPOINT = "docker-entrypoint.sh"

LABEL_NAME = "offline-bundle.bundle.name"
LABEL_VERSION = "offline-bundle.bundle.version"
LABEL_DIGEST = "offline-bundle.bundle.digest"

SMOKE_TIMEOUT_S = 300

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

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Names that hold credentials. A build context carrying one is refused outright,
# whatever put it there: a leaked token in an image layer cannot be taken back.
_CREDENTIAL_NAMES = frozenset(
    {
        "kaggle.json",
        ".netrc",
        "_netrc",
        ".git-credentials",
        ".pypirc",
        ".env",
        ".npmrc",
        ".dockercfg",
        "credentials",
        "credentials.json",
        "stored_tokens",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
    }
)
_CREDENTIAL_DIRS = frozenset(
    {".git", ".ssh", ".aws", ".kaggle", ".docker", ".gnupg", ".huggingface"}
)
_CREDENTIAL_SUFFIXES = (".pem", ".p12", ".pfx", ".key")
# huggingface_hub keeps the login token in a file named "token" in HF_HOME.
_HF_TOKEN_RE = re.compile(r"(^|/)(huggingface|\.cache/huggingface)/token$")


# --- Errors ------------------------------------------------------------------


class ImageError(BuildError):
    """`bundle image` could not finish. The message says what failed and what to do."""


class DockerUnavailableError(ImageError):
    """No Docker engine answers at DOCKER_HOST (or the default socket)."""


class ContextError(ImageError):
    """The bundle cannot go into a build context (incomplete, unsafe, or a credential in it)."""


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
                    with open(f.source, "rb") as fh:
                        tar.addfile(info, _CountingReader(fh, bar))
        bar.close()


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


# --- Credentials -------------------------------------------------------------


def credential_reason(path: str) -> str | None:
    """Why `path` (relative, "/"-separated) looks like a credential file, or None."""
    p = PurePosixPath(path)
    name = p.name.lower()
    if name in _CREDENTIAL_NAMES:
        return f"file name {p.name!r} is a credential file"
    if name.endswith(_CREDENTIAL_SUFFIXES):
        return f"file name {p.name!r} looks like a private key or certificate"
    for part in p.parts[:-1]:
        if part.lower() in _CREDENTIAL_DIRS:
            return f"folder {part!r} holds credentials or repository history"
    if _HF_TOKEN_RE.search(path.lower()):
        return "it is a Hugging Face token file"
    return None


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


# --- Runtime wheels ----------------------------------------------------------


def _cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "offline-bundle"


def project_source_dir() -> Path | None:
    """The offline-bundle source tree this code runs from, or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not (pyproject.is_file() and (root / "runtime" / "__init__.py").is_file()):
        return None
    if not re.search(r'(?m)^name\s*=\s*"offline-bundle"', pyproject.read_text(encoding="utf-8")):
        return None
    return root


def _source_files(root: Path) -> list[Path]:
    files = [root / "pyproject.toml"]
    files += [p for p in (root / "README.md", root / "LICENSE") if p.is_file()]
    for package in ("builder", "runtime"):
        for p in sorted((root / package).rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and "__pycache__" not in rel.parts and p.suffix not in (".pyc", ".pyo"):
                files.append(p)
    return files


def cached_project_wheel(dest_dir: Path) -> Path:
    """The offline-bundle wheel of this source tree, built offline and cached by content.

    Built by `builder.wheels.build_project_wheel` (the wheelhouse's builder: a
    copy of the tree, reproducible bytes) and cached under the user cache dir,
    keyed by a hash of the sources: an unchanged tree costs nothing the second time.

    Returns:
        The wheel, copied into `dest_dir`.

    Raises:
        ImageError: no source tree, or pip failed (its output is in the message).
    """
    root = project_source_dir()
    if root is None:
        raise ImageError(
            "offline-bundle is not running from a source tree, so its wheel cannot be built; "
            "put an offline_bundle-*.whl into the bundle's wheels/ or pass --runtime-wheel"
        )
    files = _source_files(root)
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    cache = _cache_root() / "runtime-wheels" / h.hexdigest()[:20]
    cached = sorted(cache.glob("offline_bundle-*.whl")) if cache.is_dir() else []
    if not cached:
        # The wheelhouse's builder (reproducible bytes, never writes into the
        # tree); same bytes for the same sources keep the image's runtime layer cached.
        from builder.wheels import build_project_wheel as build_wheel

        with tempfile.TemporaryDirectory(prefix="ob-wheel-") as tmp:
            try:
                built = build_wheel(Path(tmp), spec_name=PROJECT_DISTRIBUTION)
            except BuildError as e:
                raise ImageError(
                    f"building the offline-bundle wheel from {root} failed: {e}"
                ) from None
            cache.mkdir(parents=True, exist_ok=True)
            staged = cache / (built.name + ".part")
            shutil.copyfile(built, staged)
            os.replace(staged, cache / built.name)
            cached = [cache / built.name]
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / cached[0].name
    shutil.copyfile(cached[0], target)
    return target


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_installed_distribution(name: str, dest_dir: Path) -> Path:
    """Turn an installed pure-Python distribution back into a wheel, offline.

    pip cannot do this (it downloads); the image build has no network, and
    `click` must be installable there. Only pure-Python wheels are rebuilt
    (`Root-Is-Purelib: true`, tag `*-none-any`); scripts outside site-packages
    are left out (pip regenerates console scripts from entry_points.txt).

    Raises:
        ImageError: not installed, installed without a file list, or not pure Python.
    """
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ImageError(
            f"{name} is not installed here, so it cannot be put into the image"
        ) from None
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_meta.splitlines() if ln.startswith("Tag:")]
    pure = "root-is-purelib: true" in wheel_meta.lower()
    if not (pure and tags and all(t.endswith("-none-any") for t in tags)) or dist.files is None:
        raise ImageError(
            f"{name} {dist.version} is not an installed pure-Python wheel, so it cannot be repacked; "
            "add its wheel to the bundle's wheels/ (spec [wheels] requirements)"
        )
    members: list[tuple[str, bytes]] = []
    dist_info = ""
    for f in dist.files:
        parts = PurePosixPath(str(f)).parts
        if parts[0] == ".." or "__pycache__" in parts or str(f).endswith((".pyc", ".pyo")):
            continue
        if parts[0].endswith(".dist-info"):
            dist_info = parts[0]
            if parts[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
                continue  # written by the installer, not part of the wheel
        members.append((str(PurePosixPath(*parts)), Path(dist.locate_file(f)).read_bytes()))
    if not dist_info:
        raise ImageError(f"{name}: installed without a .dist-info folder; cannot repack it")
    py_tags = sorted({t.split("-")[0] for t in tags})
    normalized = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel_path = dest_dir / f"{normalized}-{dist.version}-{'.'.join(py_tags)}-none-any.whl"
    dest_dir.mkdir(parents=True, exist_ok=True)
    record = []
    with zipfile.ZipFile(wheel_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in members:
            zf.writestr(arcname, data)
            record.append(f"{arcname},{_record_hash(data)},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel_path


def _runtime_dependencies() -> list[str]:
    """Names of offline-bundle's own (non-extra) requirements: what the runtime needs."""
    try:
        requires = importlib.metadata.requires(PROJECT_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        requires = ["click>=8.1", 'tomli>=2.0; python_version < "3.11"']
    names = []
    for req in requires:
        if re.search(r"\bextra\s*==", req):
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if m:
            names.append(m.group(1))
    return names


def _wheel_distribution(filename: str) -> str:
    """Canonical distribution name of a wheel file name (PEP 427 / 503)."""
    return re.sub(r"[-_.]+", "-", filename.split("-", 1)[0]).lower()


def collect_runtime_wheels(
    dest_dir: Path,
    *,
    bundle_wheels: list[str],
    runtime_wheel: Path | None = None,
) -> tuple[Path, str]:
    """Put the offline-bundle wheel and its dependencies into `dest_dir`.

    The offline-bundle wheel comes from, in order: `runtime_wheel`, the source
    tree this code runs from (the code you are running is the code the image
    gets), or the bundle's own wheelhouse. Dependencies (click) already in the
    bundle's wheelhouse are left to it; the others are repacked from this
    interpreter, which has them installed.

    Returns:
        (the offline-bundle wheel, a line saying where it came from).
    """
    if runtime_wheel is not None:
        if not runtime_wheel.is_file() or not runtime_wheel.name.startswith("offline_bundle-"):
            raise ImageError(f"{runtime_wheel}: not an offline_bundle-*.whl file")
        wheel = dest_dir / runtime_wheel.name
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runtime_wheel, wheel)
        origin = f"--runtime-wheel {runtime_wheel}"
    elif project_source_dir() is not None:
        wheel = cached_project_wheel(dest_dir)
        origin = f"built from the source tree {project_source_dir()}"
    else:
        in_bundle = [
            w for w in bundle_wheels if _wheel_distribution(Path(w).name) == PROJECT_DISTRIBUTION
        ]
        if not in_bundle:
            raise ImageError(
                "no offline-bundle wheel: not running from a source tree and the bundle's wheels/ "
                "has none; pass --runtime-wheel PATH (build one with `pip wheel --no-deps .`)"
            )
        wheel = Path(in_bundle[-1])
        origin = f"the bundle's wheelhouse ({wheel.name})"
        return wheel, origin
    have = {_wheel_distribution(Path(w).name) for w in bundle_wheels}
    for dep in _runtime_dependencies():
        canonical = re.sub(r"[-_.]+", "-", dep).lower()
        if canonical in have:
            continue
        try:
            importlib.metadata.distribution(dep)
        except importlib.metadata.PackageNotFoundError:
            continue  # a marker-only dependency (tomli on Python >= 3.11) this interpreter skips
        repack_installed_distribution(dep, dest_dir)
    return wheel, origin


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
            {_wheel_distribution(Path(w).name) for w in bundle_wheels} - {PROJECT_DISTRIBUTION}
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
    with tempfile.TemporaryFile(prefix="ob-context-") as fh:
        context.write_tar(fh, progress=progress)
        fh.seek(0)
        stream = client.api.build(
            fileobj=fh,
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
                    + (f" (step output: {shown})" if shown else ""),
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
        ContextError, DockerUnavailableError, ImageBuildError (the daemon's message
        and the failing step), SmokeCheckError, PushError.
    """
    from runtime.manifest import read_manifest

    def emit(text: str) -> None:
        if progress:
            sys.stderr.write(text)
            sys.stderr.flush()

    bundle_dir = Path(bundle_dir)
    client = client or connect()
    with tempfile.TemporaryDirectory(prefix="ob-image-") as work:
        context = assemble_context(
            bundle_dir,
            work_dir=Path(work),
            dockerfile=Path(dockerfile) if dockerfile else None,
            runtime_wheel=Path(runtime_wheel) if runtime_wheel else None,
            install_wheelhouse=install_wheelhouse,
            base_image=base_image,
        )
        tag = tag or default_tag(context.bundle_name, context.bundle_version)
        emit(
            f"building {tag} from {bundle_dir} ({_human(context.size)} context; runtime {context.runtime_wheel_origin})\n"
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


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


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
                    f"to {context_only} ({_human(context.size)}); build it with:\n  {result['command']}"
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
    except (ImageError, OSError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(
        f"built {', '.join(report.tags) or report.image_id}  {report.image_id}  {_human(report.size)}"
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
