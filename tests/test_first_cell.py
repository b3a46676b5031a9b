"""One first cell for every internet-off notebook: the README, docs/kaggle.md, each bundle's
README.md and a Kaggle Model's Usage hold what builder.extras.first_cell renders.

tests/test_catalogue_install.py runs these cells in a venv with no package index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.extras.first_cell import first_cell

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/kaggle.md"])
def test_the_docs_show_the_one_first_cell_for_datasets_and_for_models(doc):
    blocks = _python_blocks((ROOT / doc).read_text())
    assert first_cell("dataset") in blocks, f"{doc}: the dataset cell differs from first_cell()"
    assert first_cell("model") in blocks, f"{doc}: the Kaggle Models cell differs from first_cell()"
    # No other copy of the install step drifts beside them.
    installs = [b for b in blocks if "--find-links" in b and "offline-bundle" in b]
    assert sorted(installs) == sorted([first_cell("dataset"), first_cell("model")])


def test_every_form_guards_against_nothing_attached_and_compiles():
    for cell in (first_cell("dataset"), first_cell("model"),
                 first_cell("model", handle=("emotion-vit", "pytorch", "default"))):
        compile(cell, "<first cell>", "exec")
        assert "if not found:\n    raise FileNotFoundError(" in cell
        assert "--no-index" in cell and "runtime.activate(strict=True)" in cell
    with pytest.raises(ValueError, match="neither 'dataset' nor 'model'"):
        first_cell("colab")


def test_a_bundle_readme_and_a_model_usage_carry_the_same_cell(tmp_path):
    from builder.layout import readme_text
    from builder.publish.kaggle_models import Handle, usage_text
    from runtime.manifest import read_manifest
    from tests.test_kaggle import files_v1, make_bundle

    manifest = read_manifest(make_bundle(tmp_path, files_v1()))
    readme = readme_text(manifest, kaggle="alice/tiny-bundle-test")
    assert first_cell("dataset") in _python_blocks(readme)
    assert first_cell("model") in _python_blocks(readme)
    assert "pypi.org/simple" not in readme and "pip install offline-bundle\n" not in readme
    usage = usage_text(Handle("alice", "emotion-vit", "pytorch", "default"))
    assert _python_blocks(usage) == [first_cell("model", handle=("emotion-vit", "pytorch", "default"))]
