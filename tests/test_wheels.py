"""The bundle's wheelhouse installs offline-bundle with no index in a clean venv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.extras.wheels import WheelhouseError, build_wheelhouse

#: The local wheel mirror of this machine; tests never reach PyPI.
LOCAL_MIRROR = "/opt/pypi/files"
needs_mirror = pytest.mark.skipif(not Path(LOCAL_MIRROR, ).is_dir(), reason="no local wheel mirror")


def offline_pip_env() -> dict[str, str]:
    # Ignore pip.conf (its find-links / extra index) so only the wheelhouse counts.
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> tuple[Path, list[str]]:
    staging = tmp_path_factory.mktemp("bundle")
    spec = SimpleNamespace(
        name="tiny", wheels={"requirements": ["tomli_w==1.2.0"], "python": "3.11",
                             "no_index": True, "find_links": [LOCAL_MIRROR]},
    )
    return staging, build_wheelhouse(spec, staging)


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A venv without system site-packages (so no editable offline-bundle is visible).

    Without pip of its own (ensurepip costs ~10 s): this machine's pip installs
    into it with --python.
    """
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(root)
    return root


@needs_mirror
def test_wheelhouse_holds_project_wheel_its_dependencies_and_requirements(wheelhouse):
    staging, paths = wheelhouse
    names = [p.split("/", 1)[1] for p in paths]
    assert all(p.startswith("wheels/") and p.endswith(".whl") for p in paths)
    assert paths == sorted(paths)
    assert any(n.startswith("offline_bundle-") for n in names)
    assert any(n.startswith("click-") for n in names)  # required by the runtime's CLI
    assert any(n.startswith("tomli_w-") for n in names)  # the spec's requirement
    assert sorted(p.name for p in (staging / "wheels").iterdir()) == sorted(names)
    project = next(staging / p for p in paths if "offline_bundle-" in p)
    with zipfile.ZipFile(project) as zf:
        members = zf.namelist()
    assert "runtime/__init__.py" in members and "runtime/manifest.py" in members
    assert not any(m.startswith("tests/") or "__pycache__" in m for m in members)


@needs_mirror
def test_project_installs_from_wheelhouse_in_clean_venv_without_index(wheelhouse, clean_venv):
    staging, _ = wheelhouse
    python = clean_venv / "bin" / "python"
    env = offline_pip_env()
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--find-links", str(staging / "wheels"),
         "offline-bundle"],
        capture_output=True, text=True, env=env,
    )
    assert install.returncode == 0, install.stderr
    probe = subprocess.run(
        [str(python), "-c",
         "import sys, runtime, click; heavy = {'torch', 'transformers', 'kaggle', 'huggingface_hub'}"
         " & set(sys.modules); print(runtime.__file__); assert not heavy, heavy"],
        capture_output=True, text=True, env=env, cwd=clean_venv,
    )
    assert probe.returncode == 0, probe.stderr
    assert str(clean_venv) in probe.stdout  # the venv's copy, not the source tree


@needs_mirror
def test_older_target_python_gets_tomli_too(tmp_path):
    # The runtime needs tomli below 3.11; pip itself would skip that marker when
    # running on 3.11, so the wheelhouse must ask for it explicitly. The local
    # mirror has no tomli wheel for 3.10, so the request shows in the error.
    spec = SimpleNamespace(name="old", wheels={"python": "3.10", "no_index": True,
                                               "find_links": [LOCAL_MIRROR]})
    if sys.version_info < (3, 11):
        pytest.skip("this checks cross-version resolution from 3.11+")
    with pytest.raises(WheelhouseError, match=r"tomli.*'old'|'old'.*tomli"):
        build_wheelhouse(spec, tmp_path)


def test_unknown_requirement_fails_with_pip_reason(tmp_path):
    spec = SimpleNamespace(name="bad", wheels={"requirements": ["no-such-package-xyz==1.0"],
                                               "include_self": False, "no_index": True,
                                               "find_links": [str(tmp_path)]})
    with pytest.raises(WheelhouseError, match=r"bundle 'bad'.*no-such-package-xyz"):
        build_wheelhouse(spec, tmp_path / "out")


def test_project_wheel_bytes_are_reproducible(tmp_path):
    # A rebuilt bundle must keep its digest, or every rebuild would publish a new version.
    # Build from one snapshot of the sources (the working tree may change meanwhile).
    from builder.extras.wheels import _copy_source_tree, build_project_wheel

    (tmp_path / "src").mkdir()
    source = _copy_source_tree(tmp_path / "src")
    first = build_project_wheel(tmp_path / "a", source=source)
    for path in source.rglob("*"):  # other checkout times change nothing
        os.utime(path, (1_800_000_000, 1_800_000_000))
    again = build_project_wheel(tmp_path / "b", source=source)
    assert again.name == first.name
    assert again.read_bytes() == first.read_bytes()
