"""The first cell of an internet-off notebook: install offline-bundle from the attached
bundle's wheelhouse, then activate. One template for every copy users see.

The README, docs/kaggle.md, every bundle's generated README.md and a Kaggle Model
variation's *Usage* show this cell; tests/test_first_cell.py checks that the two docs
hold exactly what :func:`first_cell` renders, and tests/test_catalogue_install.py runs
the rendered cells in a venv with no package index.

Two forms, for the two ways a bundle is attached on Kaggle:

- ``dataset``: the bundle folder at ``/kaggle/input/SLUG/`` (older mount) or
  ``/kaggle/input/datasets/OWNER/SLUG/`` (newer), or one folder deeper in either (a
  dataset uploaded as a zip of the bundle folder); the first match is used.
- ``model``: ``/kaggle/input/MODEL/FRAMEWORK/VARIATION/VERSION/`` or
  ``/kaggle/input/models/OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/``; of the versions
  attached, the highest. ``handle`` narrows the search to one variation.

The cell holds no ``<``, ``>`` or ``&``: the kaggle client runs a Model's *Usage* through
``bleach.clean``, which would turn them into ``&gt;`` inside the code block.
"""

from __future__ import annotations

from runtime.constants import WHEELS_DIR

_WHEEL = f"{WHEELS_DIR}/offline_bundle-*.whl"

_TEMPLATE = '''\
# {comment}
import glob, subprocess, sys
{finder}
if not found:
    raise FileNotFoundError({missing})
subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links",
                found[0].rsplit("/", 1)[0], "offline-bundle"], check=True)

import runtime
runtime.activate(strict=True)  # {activated}
'''


def first_cell(form: str = "dataset", *, handle: tuple[str, str, str] | None = None) -> str:
    """The cell, as Python source.

    Args:
        form: "dataset" or "model" (how the bundle is attached).
        handle: with "model", (MODEL, FRAMEWORK, VARIATION) to look for that variation only.

    Raises:
        ValueError: an unknown form.
    """
    if form == "dataset":
        finder = (
            'found = [w for root in ("/kaggle/input/*/", "/kaggle/input/*/*/", '
            '"/kaggle/input/datasets/*/*/",\n'
            '                        "/kaggle/input/datasets/*/*/*/")\n'
            f'         for w in sorted(glob.glob(root + "{_WHEEL}"))]'
        )
        return _TEMPLATE.format(
            comment="Kaggle, internet off: install offline-bundle from the attached bundle's wheels/",
            finder=finder,
            missing=('"no attached dataset holds wheels/offline_bundle-*.whl: "\n'
                     '                            "attach the dataset `bundle publish` made (Add Input)"'),
            activated="then your unmodified from_pretrained / weights= / pretrained=True code",
        )
    if form != "model":
        raise ValueError(f"first_cell: form {form!r} is neither 'dataset' nor 'model'")
    model, framework, variation = handle or ("*", "*", "*")
    what = f"{model}/{framework}/{variation}" if handle else "model"
    finder = (
        f'found = sorted(glob.glob("/kaggle/input/{model}/{framework}/{variation}/[0-9]*/{_WHEEL}")'
        '           # MODEL/FRAMEWORK/VARIATION/VERSION\n'
        f'               + glob.glob("/kaggle/input/models/*/{model}/{framework}/{variation}/[0-9]*/{_WHEEL}"),'
        '  # newer: models/OWNER/...\n'
        '               key=lambda w: int(w.split("/")[-3]), reverse=True)'
        '                      # the highest version first'
    )
    return _TEMPLATE.format(
        comment=(f"Kaggle, internet off, {what} attached as a Kaggle Model (Add Input, Models)"
                 if handle else "Kaggle, internet off, the bundle attached as a Kaggle Model "
                 "(Add Input, Models)"),
        finder=finder,
        missing=(f'"no attached {"version of " + what if handle else "model"} holds '
                 'wheels/offline_bundle-*.whl: "\n'
                 '                            "attach the model `bundle publish --as model` made '
                 '(Add Input, Models)"'),
        activated="takes the highest version attached; `bundle doctor` says which",
    )
