"""Starter notebooks, one per stack a bundle declares: `notebooks/STACK.ipynb`.

Each runs top to bottom with the internet off: find the attached bundle (Kaggle
mounts it at /kaggle/input/SLUG/ or /kaggle/input/datasets/OWNER/SLUG/, Colab
Drive at /content/drive/MyDrive/bundles/NAME/, or $BUNDLE_PATH), install
offline-bundle from the bundle's wheelhouse, activate the runtime, show where
each model the stack needs resolves to, and run the stack's CLI.

The notebook must find the bundle before the runtime is installed, so it carries
the source of :func:`runtime.locate.find_bundles` (the very rules of
``runtime.locate()``) and the default search list of :mod:`runtime.constants`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from runtime.constants import (
    DEFAULT_SEARCH_ROOTS,
    ENV_BUNDLE_PATH,
    ENV_SEARCH_ROOTS,
    MANIFEST_NAME,
    NOTEBOOKS_DIR,
    WHEELS_DIR,
)
from runtime.locate import find_bundles

_INTRO = """\
# {name}: `{stack}` stack, offline

Bundle **{name} {version}** ({title}). This notebook needs no internet:

1. finds the attached bundle (Kaggle *Add Input*, Colab Drive `MyDrive/bundles/{name}/`, or `$BUNDLE_PATH`);
2. installs `offline-bundle` from the bundle's `wheels/` folder;
3. `runtime.activate()` switches Hugging Face, timm and torchvision to the bundle's files;
4. shows where each model the stack needs comes from, and runs `bundle run {stack}`.
"""

_FIND = """\
# Find the bundle: $BUNDLE_PATH first, then Kaggle (datasets, both mount styles; Kaggle Models
# at MODEL/FRAMEWORK/VARIATION/VERSION, the highest version attached), Docker, Colab Drive,
# local builds; each place and one folder below it. find_bundles() is runtime.locate's own
# function, copied here: offline-bundle is not installed yet.
import glob, json, os

BUNDLE_NAME = {name!r}
STACK = {stack!r}
DEFAULT_SEARCH_ROOTS = {roots!r}
BUNDLE_PATH = os.environ.get({env_path!r}, "")
_roots = os.environ.get({env_roots!r})
SEARCH_ROOTS = [p for p in _roots.split(os.pathsep) if p.strip()] if _roots is not None else DEFAULT_SEARCH_ROOTS

"""

_FIND_END = """\


def _bundle_name(folder):
    try:
        with open(os.path.join(folder, {manifest!r}), encoding="utf-8") as f:
            return json.load(f).get("name")
    except (OSError, ValueError):
        return None

found = [d for d, _ in find_bundles(BUNDLE_PATH, SEARCH_ROOTS, {manifest!r}) if _bundle_name(d) == BUNDLE_NAME]
if not found:
    raise FileNotFoundError(
        f"bundle {{BUNDLE_NAME!r}} not found. On Kaggle: Add Input > your dataset (or your model); on Colab: mount "
        f"Drive and unpack it into MyDrive/bundles/; elsewhere set {env_path}. Searched: "
        f"{env_path}={{BUNDLE_PATH!r}}, then {{SEARCH_ROOTS}}"
        + (" (from {env_roots})" if _roots is not None else ""))
BUNDLE = found[0]
print("bundle:", BUNDLE)
"""

_INSTALL = """\
# Install offline-bundle from the bundle's wheelhouse (no index, no network).
import importlib, importlib.util, subprocess, sys

def sh(*cmd):  # run a command, show its output here, stop the notebook if it fails
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"{{cmd[0]}} exited with status {{proc.returncode}}")

WHEELS = os.path.join(BUNDLE, {wheels!r})
if glob.glob(os.path.join(WHEELS, "offline_bundle-*.whl")):
    sh(sys.executable, "-m", "pip", "install", "--no-index", "--find-links", WHEELS, "offline-bundle")
    importlib.invalidate_caches()
elif importlib.util.find_spec("runtime") is None:
    raise RuntimeError(
        f"offline-bundle is not installed in this kernel, and the bundle {{BUNDLE}} carries no "
        f"{wheels}/offline_bundle-*.whl to install it from with the internet off. Rebuild the "
        "bundle with `bundle build` (a bundle that names stacks carries the wheel unless its "
        "[wheels] table says include_self = false), or attach a dataset that holds the wheel and "
        "run: pip install --no-index --find-links /kaggle/input/THAT/wheels offline-bundle")
else:
    print("this bundle carries no offline-bundle wheel; using the offline-bundle installed in this kernel")
"""

_ACTIVATE = """\
import runtime

activation = runtime.activate()  # before importing transformers / timm / torchvision models
activation
"""

_RESOLVE = """\
# Where each model the stack needs comes from (an error lists what the bundle holds).
ARTIFACTS = {artifacts!r}
for name in ARTIFACTS:
    try:
        print(f"{{name}} -> {{runtime.resolve(name)}}")
    except runtime.ArtifactNotFoundError as e:
        print(f"{{name}} -> MISSING: {{str(e).splitlines()[0]}}")
"""

_RUN = """\
# The stack's commands; replace --help with e.g. `train --help` to see a command's options.
import shutil

BUNDLE_CLI = shutil.which("bundle") or os.path.join(os.path.dirname(sys.executable), "bundle")
sh(BUNDLE_CLI, "run", STACK, "--help")
"""


_INFER = """\
# Inference with the model this run bundle carries (made by `bundle from-run`), internet off.
# Attach the data with Add Input and point DATA at it; outputs go to /kaggle/working.
# The run was trained from: {bases}
# (attach those bundles too when the stack loads them at inference).
import shlex, shutil

DATA = {data!r}
OUT = {out!r}
os.makedirs(OUT, exist_ok=True)
BUNDLE_CLI = shutil.which("bundle") or os.path.join(os.path.dirname(sys.executable), "bundle")
sh(BUNDLE_CLI, "run", "--strict", STACK, *shlex.split({command!r}.format(checkpoint={name!r}, data=shlex.quote(DATA), out=shlex.quote(OUT))))
"""


def _stack_artifacts(stack: str, spec: Any) -> list[str]:
    """What the notebook shows: everything the stack may load (its record's needs, so a
    missing one is reported right there), then every other artifact the bundle carries."""
    names: list[str] = []
    try:
        from runtime.stacks import UnknownStackError, get_stack

        names += get_stack(stack).artifacts
    except (ImportError, UnknownStackError):
        pass  # a stack without a module yet: the bundle's own list below still helps
    for art in getattr(spec, "artifacts", []):
        if art.id not in names:
            names.append(art.id)
    return names


def _inference_command(stack: str) -> str:
    """The stack record's inference command ("" when it has none or is not importable)."""
    try:
        from runtime.stacks import UnknownStackError, get_stack

        return get_stack(stack).inference
    except (ImportError, UnknownStackError):
        return ""


def starter_notebook(spec: Any, stack: str) -> Any:
    """The starter notebook for one stack, as an nbformat v4 notebook.

    Args:
        spec: a loaded spec (``name``, ``version``, ``title``, ``artifacts``).
        stack: a stack name the spec declares.

    Returns:
        An ``nbformat.NotebookNode``.
    """
    import nbformat
    from nbformat import v4

    name = spec.name
    values = {
        "name": name, "stack": stack, "version": getattr(spec, "version", ""),
        "title": getattr(spec, "title", "") or name, "roots": list(DEFAULT_SEARCH_ROOTS),
        "env_path": ENV_BUNDLE_PATH, "env_roots": ENV_SEARCH_ROOTS, "manifest": MANIFEST_NAME,
        "wheels": WHEELS_DIR, "artifacts": _stack_artifacts(stack, spec),
    }
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [v4.new_markdown_cell(_INTRO.format(**values))]
    find = _FIND.format(**values) + inspect.getsource(find_bundles).rstrip() + _FIND_END.format(**values)
    nb.cells += [v4.new_code_cell(find)]
    last = _RUN
    inference = _inference_command(stack) if getattr(spec, "run", None) else ""
    if inference:
        bases = [f"{b.get('bundle') or b.get('local')} ({b.get('role')})"
                 for b in spec.run.get("base", [])]
        values.update(data="/kaggle/input/YOUR-DATA", out="/kaggle/working",
                      command=inference, bases=", ".join(bases) or "no bundle (from scratch)")
        last = _INFER
    nb.cells += [v4.new_code_cell(t.format(**values)) for t in (_INSTALL, _ACTIVATE, _RESOLVE, last)]
    # Stable cell ids: the same spec writes the same bytes (the bundle digest stays put).
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stack}-{i}"
    nbformat.validate(nb)
    return nb


def write_notebooks(spec: Any, staging_dir: str | os.PathLike) -> list[str]:
    """Write `notebooks/STACK.ipynb` for every stack the spec declares.

    Args:
        spec: a loaded spec (``.name``, ``.version``, ``.title``, ``.stacks``, ``.artifacts``).
        staging_dir: the bundle folder being built.

    Returns:
        The notebook paths relative to `staging_dir`, sorted.
    """
    import nbformat

    out_dir = Path(staging_dir) / NOTEBOOKS_DIR
    paths = []
    for stack in sorted(set(getattr(spec, "stacks", None) or [])):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stack}.ipynb"
        path.write_text(nbformat.writes(starter_notebook(spec, stack)) + "\n", encoding="utf-8")
        paths.append(f"{NOTEBOOKS_DIR}/{stack}.ipynb")
    return paths
