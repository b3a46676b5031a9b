"""The offline-bundle wheel and its dependencies, for images built with no network.

An image build runs `pip install --no-index`, so everything pip needs must be in
the build context: the offline-bundle wheel (built from this source tree by
`builder.extras.wheels.build_project_wheel`, cached by content) and its one required
dependency, click. When the bundle's wheelhouse lacks click, it is repacked into
a wheel from this interpreter's installed copy (pip can only download it).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from builder import SOURCE_ROOT
from builder.errors import BuildError, RuntimeWheelError
from runtime import constants

PROJECT_DISTRIBUTION = "offline-bundle"


def _cache_root() -> Path:
    return Path(constants.xdg_cache_home()).expanduser() / "offline-bundle"


def project_source_dir() -> Path | None:
    """The offline-bundle source tree this code runs from, or None for an installed wheel."""
    root = SOURCE_ROOT
    pyproject = root / "pyproject.toml"
    if not (pyproject.is_file() and (root / "runtime" / "__init__.py").is_file()):
        return None
    if not re.search(r'(?m)^name\s*=\s*"offline-bundle"', pyproject.read_text(encoding="utf-8")):
        return None
    return root


def _source_files(root: Path) -> list[Path]:
    files = [p for p in (root / "pyproject.toml", root / "README.md", root / "LICENSE") if p.is_file()]
    for package in ("builder", "runtime"):
        for p in sorted((root / package).rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and "__pycache__" not in rel.parts and p.suffix not in (".pyc", ".pyo"):
                files.append(p)
    return files


def source_fingerprint(root: Path) -> str:
    """sha256 over the files offline-bundle's wheel is built from (``root``: the project)."""
    h = hashlib.sha256()
    for p in _source_files(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def cached_project_wheel(dest_dir: Path) -> Path:
    """The offline-bundle wheel of this source tree, built offline and cached by content.

    Built by `builder.extras.wheels.build_project_wheel` (the wheelhouse's builder: a
    copy of the tree, reproducible bytes) and cached under the user cache dir,
    keyed by a hash of the sources: an unchanged tree costs nothing the second time.

    Returns:
        The wheel, copied into `dest_dir`.

    Raises:
        RuntimeWheelError: no source tree, or pip failed (its output is in the message).
    """
    root = project_source_dir()
    if root is None:
        raise RuntimeWheelError(
            "offline-bundle is not running from a source tree, so its wheel cannot be built; "
            "put an offline_bundle-*.whl into the bundle's wheels/ or pass --runtime-wheel"
        )
    cache = _cache_root() / "runtime-wheels" / source_fingerprint(root)[:20]
    cached = sorted(cache.glob("offline_bundle-*.whl")) if cache.is_dir() else []
    if not cached:
        # The wheelhouse's builder (reproducible bytes, never writes into the
        # tree); same bytes for the same sources keep the image's runtime layer cached.
        from builder.extras.wheels import build_project_wheel as build_wheel

        with tempfile.TemporaryDirectory(prefix="ob-wheel-") as tmp:
            try:
                built = build_wheel(Path(tmp), spec_name=PROJECT_DISTRIBUTION)
            except BuildError as e:
                raise RuntimeWheelError(
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
        RuntimeWheelError: not installed, installed without a file list, or not pure Python.
    """
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeWheelError(
            f"{name} is not installed here, so it cannot be put into the image"
        ) from None
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_meta.splitlines() if ln.startswith("Tag:")]
    pure = "root-is-purelib: true" in wheel_meta.lower()
    if not (pure and tags and all(t.endswith("-none-any") for t in tags)) or dist.files is None:
        raise RuntimeWheelError(
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
        raise RuntimeWheelError(f"{name}: installed without a .dist-info folder; cannot repack it")
    py_tags = sorted({t.split("-")[0] for t in tags})
    normalized = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel_path = dest_dir / f"{normalized}-{dist.version}-{'.'.join(py_tags)}-none-any.whl"
    dest_dir.mkdir(parents=True, exist_ok=True)
    record = []
    with zipfile.ZipFile(wheel_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in sorted(members):
            zf.writestr(_zip_entry(arcname), data)
            record.append(f"{arcname},{_record_hash(data)},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(_zip_entry(f"{dist_info}/RECORD"), "\n".join(record) + "\n")
    return wheel_path


def _zip_entry(name: str) -> zipfile.ZipInfo:
    """A zip member with a fixed time: the same installed files give the same wheel bytes
    (a rebuilt bundle keeps its digest)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


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


def wheel_distribution(filename: str) -> str:
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
            raise RuntimeWheelError(f"{runtime_wheel}: not an offline_bundle-*.whl file")
        wheel = dest_dir / runtime_wheel.name
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runtime_wheel, wheel)
        origin = f"--runtime-wheel {runtime_wheel}"
    elif project_source_dir() is not None:
        wheel = cached_project_wheel(dest_dir)
        origin = f"built from the source tree {project_source_dir()}"
    else:
        in_bundle = [
            w for w in bundle_wheels if wheel_distribution(Path(w).name) == PROJECT_DISTRIBUTION
        ]
        if not in_bundle:
            raise RuntimeWheelError(
                "no offline-bundle wheel: not running from a source tree and the bundle's wheels/ "
                "has none; pass --runtime-wheel PATH (build one with `pip wheel --no-deps .`)"
            )
        wheel = Path(in_bundle[-1])
        origin = f"the bundle's wheelhouse ({wheel.name})"
        return wheel, origin
    have = {wheel_distribution(Path(w).name) for w in bundle_wheels}
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


def missing_runtime_wheel(manifest: object) -> str | None:
    """Why a bundle that names stacks cannot install the runtime offline, or None.

    ``manifest``: a runtime.manifest.Manifest (``name``, ``stacks``, ``extra_files``).
    """
    stacks = list(getattr(manifest, "stacks", None) or [])
    if not stacks:
        return None
    wheels = [f.path for f in getattr(manifest, "extra_files", [])
              if f.path.startswith("wheels/") and f.path.endswith(".whl")]
    if any(wheel_distribution(Path(w).name) == PROJECT_DISTRIBUTION for w in wheels):
        return None
    return (
        f"bundle '{getattr(manifest, 'name', '?')}' names stacks ({', '.join(stacks)}) but its "
        "wheels/ holds no offline_bundle-*.whl: in an internet-off notebook "
        "`pip install --no-index --find-links BUNDLE/wheels offline-bundle` will fail and the "
        "starter notebooks stop at their install cell. Drop `include_self = false` from the "
        "spec's [wheels] table (or the table: bundles with stacks carry the wheel by default), "
        "or attach the runtime another way"
    )
