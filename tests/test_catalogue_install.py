"""Every catalogue bundle can install the runtime in an internet-off notebook, and the
starter notebook finds a bundle wherever ``runtime.locate()`` does.

The catalogue specs pin real checkpoints (torchvision's hash-named files, the DDRM
checkpoints' sha256), which no local stand-in can serve. What decides whether a
notebook can install the runtime is each spec's ``[bundle]`` table (its stacks) and its
``[wheels]`` table, so those are built exactly as written, with one small local file
as the only artifact; pip reads only the local wheel mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from builder.pipeline import build_bundle

ROOT = Path(__file__).resolve().parents[1]
LOCAL_MIRROR = "/opt/pypi/files"
CATALOGUE = sorted((ROOT / "bundles").glob("*.toml"))


def _tables(spec: Path) -> str:
    """The spec's [bundle] and [wheels] tables, verbatim (comments included)."""
    text = spec.read_text()
    keep, current = [], None
    for line in text.splitlines():
        header = re.match(r"^\s*\[\[?([A-Za-z_]+)\]\]?\s*(#.*)?$", line)
        if header:
            current = header.group(1)
        if current in ("bundle", "wheels"):
            keep.append(line)
    return "\n".join(keep) + "\n"


def _readme_first_cell() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    cell = next(b for b in blocks if "install offline-bundle from the attached bundle" in b)
    return cell.split("\nimport runtime", 1)[0]  # the install part (activation needs a bundle of models)


def _readme_models_cell() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    cell = next(b for b in blocks if "attached as a Kaggle Model" in b)
    return cell.split("\nimport runtime", 1)[0]


@pytest.fixture(scope="module")
def pip_venv(tmp_path_factory) -> Path:
    """A clean venv (no system site-packages, no offline-bundle) with pip from the local mirror."""
    if not Path(LOCAL_MIRROR).is_dir():
        pytest.skip("no local wheel mirror")
    root = tmp_path_factory.mktemp("pip-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(root)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "--quiet",
         "--no-compile", "--no-index", "--find-links", LOCAL_MIRROR, "pip"],
        check=True, env=dict(os.environ, PIP_CONFIG_FILE=os.devnull),
    )
    return root


def _offline_env() -> dict[str, str]:
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    for name in ("PIP_FIND_LINKS", "PYTHONPATH", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        env.pop(name, None)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[var] = "http://127.0.0.1:9"  # a stray request fails at once
    return env


@pytest.mark.slow
def test_every_catalogue_bundle_installs_the_runtime_from_the_first_cell_with_no_index(
    file_server, pip_venv, tmp_path, monkeypatch
):
    assert len(CATALOGUE) >= 6
    # A [wheels] table downloads with pip: from the local mirror only.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", LOCAL_MIRROR)
    data = b"the one small artifact of the install test"
    url = file_server.add("/catalogue/readme.txt", data)
    python = pip_venv / "bin" / "python"
    cell = _readme_first_cell()
    for spec_path in CATALOGUE:
        spec = tmp_path / spec_path.name
        spec.write_text(_tables(spec_path) + f'''
[[artifact]]
id = "note"
source = "url"
url = "{url}"
sha256 = "{hashlib.sha256(data).hexdigest()}"
''')
        # Kaggle's older mount, with the bundle one folder down (a zip of the folder).
        kaggle_input = tmp_path / f"kaggle-{spec_path.stem}" / "input"
        bundle = build_bundle(spec, out_dir=kaggle_input / "my-dataset", store_dir=tmp_path / "store",
                              progress=False)
        manifest = json.loads((bundle / "bundle.json").read_text())
        assert manifest["stacks"], spec_path
        wheels = [f["path"] for f in manifest["extra_files"] if f["path"].startswith("wheels/")]
        assert any(w.startswith("wheels/offline_bundle-") for w in wheels), (spec_path, wheels)
        assert any(w.startswith("wheels/click-") for w in wheels), (spec_path, wheels)

        run = subprocess.run([str(python), "-c", cell.replace("/kaggle/input", str(kaggle_input))],
                             capture_output=True, text=True, env=_offline_env(), cwd=tmp_path)
        assert run.returncode == 0, f"{spec_path.name}: {run.stdout}\n{run.stderr}"
        probe = subprocess.run(
            [str(python), "-c", "import runtime, runtime.stacks, click; print(runtime.__file__)"],
            capture_output=True, text=True, env=_offline_env(), cwd=tmp_path)
        assert probe.returncode == 0, probe.stderr
        assert str(pip_venv) in probe.stdout
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "offline-bundle", "click"],
                       check=True, env=_offline_env(), capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["MODEL/pytorch/default", "models/alice/MODEL/pytorch/default"])
def test_the_readme_models_cell_installs_from_the_highest_attached_version(
    file_server, pip_venv, tmp_path, monkeypatch, layout
):
    import shutil

    from builder.publish.kaggle_models import Handle, usage_text

    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    data = b"the one small artifact of the models cell test"
    url = file_server.add("/models/readme.txt", data)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
[bundle]
name = "km-flood"
version = "1.0.0"
stacks = ["flood"]

[[artifact]]
id = "note"
source = "url"
url = "{url}"
sha256 = "{hashlib.sha256(data).hexdigest()}"
''')
    bundle = build_bundle(spec, out_dir=tmp_path / "out", store_dir=tmp_path / "store", progress=False)
    kaggle_input = tmp_path / "kaggle" / "input"
    variation = kaggle_input / layout.replace("MODEL", "km-flood")
    for version in ("2", "10"):  # numbers, not strings: 10 is the highest
        shutil.copytree(bundle, variation / version)
    python = pip_venv / "bin" / "python"
    # The README's cell, and the variation's Usage that `publish --as model` writes.
    usage = usage_text(Handle("alice", "km-flood", "pytorch", "default"))
    usage = usage.split("```python\n", 1)[1].split("\nimport runtime", 1)[0]
    for cell in (_readme_models_cell(), usage):
        run = subprocess.run([str(python), "-c", cell.replace("/kaggle/input", str(kaggle_input))],
                             capture_output=True, text=True, env=_offline_env(), cwd=tmp_path)
        try:
            assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
            assert f"Looking in links: {variation / '10' / 'wheels'}" in run.stdout
            probe = subprocess.run([str(python), "-c", "import runtime; print(runtime.__file__)"],
                                   capture_output=True, text=True, env=_offline_env(), cwd=tmp_path)
            assert probe.returncode == 0 and str(pip_venv) in probe.stdout, probe.stderr
        finally:
            subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "offline-bundle", "click"],
                           env=_offline_env(), capture_output=True)


def test_a_bundle_with_stacks_and_no_runtime_wheel_is_warned_about_by_build_and_publish(
    file_server, tmp_path
):
    from click.testing import CliRunner

    from builder.cli import main
    from builder.publish.kaggle import publish

    data = b"tiny"
    url = file_server.add("/no-wheel/x.bin", data)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
[bundle]
name = "no-wheel"
version = "1.0.0"
title = "A bundle without the runtime"
stacks = ["flood"]

[wheels]
include_self = false

[[artifact]]
id = "x"
source = "url"
url = "{url}"
sha256 = "{hashlib.sha256(data).hexdigest()}"
''')
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                       "--store", str(tmp_path / "store"), "--no-progress"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "holds no offline_bundle-*.whl" in line]
    assert len(warning) == 1 and "no-wheel" in warning[0] and "flood" in warning[0]
    assert "include_self = false" in warning[0]

    with pytest.MonkeyPatch.context() as m:  # no credentials: a dry run plans without asking
        for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
            m.delenv(name, raising=False)
        m.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
        report = publish(tmp_path / "out" / "no-wheel", dry_run=True)
    assert any("holds no offline_bundle-*.whl" in w for w in report.warnings)


def _find_cell(bundle_name: str) -> str:
    from types import SimpleNamespace

    from builder.extras.notebooks import starter_notebook

    spec = SimpleNamespace(name=bundle_name, version="1.0.0", title="t", stacks=["flood"], artifacts=[])
    nb = starter_notebook(spec, "flood")
    return nb.cells[1].source


def _fake_bundle(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "bundle.json").write_text(json.dumps({"name": name}))
    return folder


@pytest.mark.slow
def test_the_starter_notebook_finds_the_bundle_in_every_layout_locate_supports(tmp_path, monkeypatch):
    """The notebook's first cell, executed in a Jupyter kernel (nbclient), picks the very
    folder runtime.locate() picks, in every layout; not found, it names what it searched."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat import v4

    from runtime.locate import locate

    name = "tiny-flood"
    k = tmp_path / "kaggle" / "input"
    layouts = {
        "BUNDLE_PATH is the bundle": ({"BUNDLE_PATH": str(_fake_bundle(tmp_path / "a" / "b1", name))}, ""),
        "BUNDLE_PATH holds bundles": ({"BUNDLE_PATH": str(_fake_bundle(tmp_path / "c" / "b2", name).parent)}, ""),
        "older Kaggle mount": ({}, str(_fake_bundle(k / "slug-one", name))),
        "a zip of the folder, one deeper": ({}, str(_fake_bundle(k / "slug-two" / name, name))),
        "newer Kaggle mount": ({}, str(_fake_bundle(k / "datasets" / "alice" / "slug", name))),
        "newer mount, one deeper": ({}, str(_fake_bundle(k / "datasets" / "bob" / "s2" / name, name))),
    }
    cells, expected = [], []
    for label, (env, folder) in layouts.items():
        env = {"BUNDLE_PATH": "", **env}
        if folder:
            # Only the folder of this layout is searched (the others would win first).
            env["OFFLINE_BUNDLE_SEARCH_ROOTS"] = str(Path(folder).parent if "one deeper" not in label
                                                     else Path(folder).parent.parent) + "/*"
        else:
            env["OFFLINE_BUNDLE_SEARCH_ROOTS"] = ""
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            located = [str(p) for p in locate()]
        assert located, label
        expected.append(located[0])
        cells.append(v4.new_code_cell(f"import os; os.environ.update({env!r})"))
        cells.append(v4.new_code_cell(_find_cell(name)))
        cells.append(v4.new_code_cell(f"print('LAYOUT', {label!r}, BUNDLE)"))
    # Not found: the error says where it looked, the roots from the environment included.
    cells.append(v4.new_code_cell(
        "os.environ.update({'BUNDLE_PATH': '/nowhere', 'OFFLINE_BUNDLE_SEARCH_ROOTS': '/also/nowhere/*'})"))
    cells.append(v4.new_code_cell("try:\n" + "\n".join("    " + ln for ln in _find_cell(name).splitlines())
                                  + "\nexcept FileNotFoundError as e:\n    print('NOTFOUND', e)"))
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    monkeypatch.delenv("BUNDLE_PATH", raising=False)
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    out = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    for (label, _), folder in zip(layouts.items(), expected, strict=True):
        assert f"LAYOUT {label} {folder}\n" in out, (label, out)
    nbformat.validate(nb)
    notfound = next(line for line in out.splitlines() if line.startswith("NOTFOUND"))
    assert "BUNDLE_PATH='/nowhere'" in notfound and "/also/nowhere/*" in notfound
    assert "OFFLINE_BUNDLE_SEARCH_ROOTS" in notfound


def test_the_notebook_carries_locates_own_finder():
    """One set of rules: the cell holds runtime.locate.find_bundles' source, verbatim."""
    import inspect

    from runtime.locate import find_bundles

    assert inspect.getsource(find_bundles).strip() in _find_cell("x")
