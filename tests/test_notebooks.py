"""Starter notebooks: written per stack, and run top to bottom offline in a clean venv."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.extras.notebooks import write_notebooks

LOCAL_MIRROR = "/opt/pypi/files"
MNV3_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"


def test_one_valid_notebook_per_stack_with_stable_bytes(tmp_path):
    import nbformat

    spec = SimpleNamespace(name="tiny", version="1.0.0", title="Tiny bundle",
                           stacks=["flood", "masked-ssl"], artifacts=[])
    paths = write_notebooks(spec, tmp_path / "a")
    assert paths == ["notebooks/flood.ipynb", "notebooks/masked-ssl.ipynb"]
    for rel in paths:
        nb = nbformat.read(tmp_path / "a" / rel, as_version=4)
        nbformat.validate(nb)
        source = "\n".join(c.source for c in nb.cells)
        # Both Kaggle mount styles are searched, never one hard-coded dataset path.
        assert "/kaggle/input/*" in source and "/kaggle/input/datasets/*/*" in source
        assert "--no-index" in source and "runtime.activate()" in source
    write_notebooks(spec, tmp_path / "b")
    for rel in paths:  # same spec, same bytes: rebuilding does not change the bundle digest
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.fixture(scope="module")
def kernel_venv(tmp_path_factory) -> Path:
    """A clean venv (no system site-packages) with only pip and ipykernel, from the local mirror."""
    if not Path(LOCAL_MIRROR).is_dir():
        pytest.skip("no local wheel mirror")
    root = tmp_path_factory.mktemp("kernel-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(root)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "--quiet",
         "--no-compile", "--no-index", "--find-links", LOCAL_MIRROR, "pip", "ipykernel"],
        check=True, env=dict(os.environ, PIP_CONFIG_FILE=os.devnull),
    )
    return root


@pytest.mark.slow
def test_starter_notebook_runs_offline_from_the_wheelhouse(bundle_factory, kernel_venv, tmp_path,
                                                           monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The wheelhouse comes from the local mirror only (pip reads PIP_* from the environment).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", LOCAL_MIRROR)
    weights = b"tiny mobilenet weights for the notebook test"
    bundle = bundle_factory(f'''
        [bundle]
        name = "tiny-flood"
        version = "1.0.0"
        title = "Tiny flood bundle"
        stacks = ["flood"]

        [[artifact]]
        id = "mnv3"
        source = "torchvision"
        weights = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        sha256 = "{hashlib.sha256(weights).hexdigest()}"

        [wheels]
        python = "3.11"
    ''', urls={MNV3_URL: weights})
    manifest = json.loads((bundle / "bundle.json").read_text())
    extra = {f["path"] for f in manifest["extra_files"]}
    assert "notebooks/flood.ipynb" in extra
    assert any(p.startswith("wheels/offline_bundle-") for p in extra)

    site = next((kernel_venv / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("offline_bundle-*.dist-info"))
    kernels = tmp_path / "jupyter" / "kernels" / "bundle-venv"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(kernel_venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "clean venv", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The kernel sees only this bundle, no pip config, and a dead proxy for any stray request.
    monkeypatch.setenv("BUNDLE_PATH", str(bundle))
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("PYTHONPATH", raising=False)

    nb = nbformat.read(bundle / "notebooks" / "flood.ipynb", as_version=4)
    workdir = tmp_path / "work"
    workdir.mkdir()
    NotebookClient(nb, kernel_name="bundle-venv", timeout=180,
                   resources={"metadata": {"path": str(workdir)}}).execute()

    text = "\n".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )
    assert f"bundle: {bundle}" in text
    assert list(site.glob("offline_bundle-*.dist-info")), "offline-bundle was not installed from wheels/"
    assert f"Looking in links: {bundle}/wheels" in text and "Successfully installed" in text
    # The stack's default weights are not in this bundle: said plainly, not hidden.
    assert "ViT_B_16_Weights.IMAGENET1K_V1 -> MISSING" in text
    assert "mnv3 -> " in text
    assert "mobilenet_v3_small-047dcff4.pth" in text
    assert "train" in text  # `bundle run flood --help` listed the stack's commands


@pytest.mark.parametrize("layout", ["MODEL/pytorch/default", "models/alice/MODEL/pytorch/default"])
def test_the_find_cell_uses_the_highest_attached_version_of_a_kaggle_model(tmp_path, monkeypatch, layout):
    from runtime.constants import DEFAULT_SEARCH_ROOTS

    spec = SimpleNamespace(name="tiny", version="1.0.0", title="Tiny", stacks=["flood"], artifacts=[])
    nb = __import__("nbformat").read(tmp_path / "nb" / write_notebooks(spec, tmp_path / "nb")[0], as_version=4)
    base = tmp_path / "kaggle" / "input"
    variation = base / layout.replace("MODEL", "tiny-models")
    for version in ("2", "10"):
        (variation / version).mkdir(parents=True)
        (variation / version / "bundle.json").write_text(json.dumps({"name": "tiny"}))
    (variation / "11").mkdir()  # a version folder without a bundle is not a version of it
    (base / "competition-data" / "train").mkdir(parents=True)  # a competition's data, never a bundle
    # The notebook's own default roots, re-rooted under tmp_path.
    roots = os.pathsep.join(str(tmp_path) + r for r in DEFAULT_SEARCH_ROOTS if r.startswith("/kaggle/input"))
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", roots)
    monkeypatch.setenv("BUNDLE_PATH", "")
    scope: dict = {}
    exec(nb.cells[1].source, scope)  # the first code cell, as the kernel runs it
    # Versions compare as numbers (10 > 2), not as strings.
    assert scope["found"] == [str(variation / "10")] and scope["BUNDLE"] == str(variation / "10")
