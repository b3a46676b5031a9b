"""The bundle's wheelhouse (`wheels/`): offline `pip install` in internet-off notebooks.

From the spec's ``[wheels]`` table::

    [wheels]
    requirements = ["timm==1.0.31"]    # pip requirement strings
    python = "3.11"                    # the target's Python (Kaggle's image)
    platform = "manylinux2014_x86_64"  # the target's platform tag (or a list)
    include_self = true                # a wheel of offline-bundle itself (default)
    no_deps = false                    # requirements without their dependencies
    index_url = "https://pypi.org/simple"   # optional: pip's index for the download
    find_links = ["/srv/wheels"]            # optional: local wheel folders
    no_index = false                        # optional: only find_links

``pip download --only-binary=:all: --python-version X --platform P`` fetches
wheels for the target, not for this machine. offline-bundle's own wheel is built
from the source tree and downloaded *with* its dependencies (click, and tomli on
Python < 3.11), so that in a notebook::

    pip install --no-index --find-links /kaggle/input/SLUG/wheels offline-bundle

works with no network. pip's own configuration (PIP_INDEX_URL, pip.conf) applies.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from builder import SOURCE_ROOT
from builder import constants as builder_constants
from builder.errors import WheelhouseError
from runtime import constants
from runtime.constants import WHEELS_DIR

#: The Kaggle notebook image's interpreter and platform, the usual target.
DEFAULT_PYTHON = "3.11"
DEFAULT_PLATFORM = "manylinux2014_x86_64"
PROJECT_NAME = "offline-bundle"
_PROJECT_ROOT = SOURCE_ROOT
_WHEEL_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold


def _as_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise WheelhouseError(f"[wheels] field '{field}' must be a string or a list of strings")


def _pip(args: list[str], what: str, spec_name: str, *, extra_env: dict[str, str] | None = None) -> None:
    """Run pip, showing its lines on stderr as they come (downloads can be long)."""
    cmd = [sys.executable, "-m", "pip", *args]
    env = {**constants.environment(), "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(extra_env or {})}
    tail: collections.deque[str] = collections.deque(maxlen=3)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip():
            tail.append(line.strip())
            print(f"  pip: {line.rstrip()}", file=sys.stderr)
    if proc.wait() != 0:
        reason = " | ".join(tail) or f"exit status {proc.returncode}"
        raise WheelhouseError(
            f"bundle '{spec_name}': [wheels] {what} failed: {reason}. Check the requirement names, "
            "that wheels exist for the target python/platform, and pip's index (index_url / PIP_INDEX_URL)"
        )


def _copy_source_tree(dest: Path, src: Path = _PROJECT_ROOT) -> Path:
    """A clean copy of the project to build from (the build writes build/ and
    *.egg-info next to the sources; never into the working tree)."""
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in"):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in ("builder", "runtime"):
        shutil.copytree(src / package, dest / package, ignore=ignore)
    return dest


def build_project_wheel(out_dir: Path, *, spec_name: str = "?", source: Path | None = None) -> Path:
    """Build offline-bundle's wheel from the source tree into `out_dir`.

    Args:
        out_dir: where the wheel goes.
        spec_name: the bundle, for error messages.
        source: the project folder (default: the one this module comes from).

    Returns:
        The wheel's path.

    Raises:
        WheelhouseError: no source tree (an installed copy cannot rebuild its
            wheel) or the build failed.
    """
    source = source or _PROJECT_ROOT
    if not (source / "pyproject.toml").is_file():
        raise WheelhouseError(
            f"bundle '{spec_name}': [wheels] include_self needs the offline-bundle source tree "
            f"(no pyproject.toml in {source}); build from a checkout, or set include_self = false"
        )
    with tempfile.TemporaryDirectory(prefix="bundle-wheel-src-") as tmp:
        src = _copy_source_tree(Path(tmp), source)
        # No build isolation: setuptools is already here, and isolation would
        # need an index to fetch it from.
        # Fixed zip timestamps: the same sources give the same wheel bytes, so a
        # rebuilt bundle keeps its digest and `bundle publish` uploads nothing.
        epoch = builder_constants.source_date_epoch() or _WHEEL_EPOCH
        _pip(["wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out_dir), str(src)],
             "building the offline-bundle wheel", spec_name, extra_env={"SOURCE_DATE_EPOCH": epoch})
    wheels = sorted(out_dir.glob("offline_bundle-*.whl"))
    if not wheels:
        raise WheelhouseError(f"bundle '{spec_name}': pip wheel made no offline_bundle-*.whl")
    return wheels[-1]


def _project_requirements(wheel: Path, python: str, platforms: list[str]) -> list[str]:
    """offline-bundle's dependencies for the *target* interpreter.

    pip download evaluates environment markers against the running Python, not
    --python-version (pip 23-25), so `tomli; python_version < "3.11"` would be
    skipped when building on 3.11 for a 3.10 notebook. Evaluate them here.
    """
    import zipfile

    from packaging.requirements import Requirement

    env = {"python_version": python, "python_full_version": f"{python}.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    if any("linux" in p for p in platforms):
        env.update(sys_platform="linux", platform_system="Linux", os_name="posix")
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta_name).decode("utf-8").splitlines()
    out = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            req.marker = None
            out.append(str(req))
    return out


def _download_args(cfg: dict[str, Any], dest: Path) -> list[str]:
    args = ["download", "--only-binary=:all:", "--progress-bar", "off", "-d", str(dest),
            "--python-version", str(cfg.get("python") or DEFAULT_PYTHON)]
    for platform in _as_list(cfg.get("platform"), "platform") or [DEFAULT_PLATFORM]:
        args += ["--platform", platform]
    if cfg.get("index_url"):
        args += ["--index-url", str(cfg["index_url"])]
    for url in _as_list(cfg.get("extra_index_urls"), "extra_index_urls"):
        args += ["--extra-index-url", url]
    for link in _as_list(cfg.get("find_links"), "find_links"):
        args += ["--find-links", link]
    if cfg.get("no_index"):
        args.append("--no-index")
    return args


def build_wheelhouse(spec: Any, staging_dir: str | os.PathLike) -> list[str]:
    """Fill `staging_dir/wheels/` from the spec's ``[wheels]`` table.

    Args:
        spec: a loaded spec (``.name`` and ``.wheels``: the table as a dict).
        staging_dir: the bundle folder being built.

    Returns:
        The wheel paths relative to `staging_dir` ("wheels/NAME.whl"), sorted.

    Raises:
        WheelhouseError: pip failed; the message carries pip's last lines.
    """
    cfg: dict[str, Any] = dict(spec.wheels or {})
    name = getattr(spec, "name", "?")
    requirements = _as_list(cfg.get("requirements"), "requirements")
    include_self = cfg.get("include_self", True)
    wheels_dir = Path(staging_dir) / WHEELS_DIR
    wheels_dir.mkdir(parents=True, exist_ok=True)
    python = str(cfg.get("python") or DEFAULT_PYTHON)
    platforms = _as_list(cfg.get("platform"), "platform") or [DEFAULT_PLATFORM]
    with tempfile.TemporaryDirectory(prefix="bundle-wheel-") as tmp:
        targets: list[str] = []
        if include_self:
            wheel = build_project_wheel(Path(tmp), spec_name=name)
            targets += [str(wheel), *_project_requirements(wheel, python, platforms)]
        if cfg.get("no_deps"):
            # The project's own dependencies are always needed; the user's requirements
            # come alone.
            if targets:
                _pip([*_download_args(cfg, wheels_dir), *targets], "pip download of offline-bundle", name)
            if requirements:
                _pip([*_download_args(cfg, wheels_dir), "--no-deps", *requirements],
                     f"pip download of {requirements}", name)
        elif targets or requirements:
            # One resolve for everything, so the versions agree with each other.
            _pip([*_download_args(cfg, wheels_dir), *targets, *requirements],
                 f"pip download of {requirements or 'offline-bundle'}", name)
    # pip may leave sdists only if --only-binary were ignored; the bundle carries wheels only.
    return sorted(f"{WHEELS_DIR}/{p.name}" for p in wheels_dir.iterdir() if p.suffix == ".whl")
