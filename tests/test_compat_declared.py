"""The minimum library versions are declared once for users (pyproject) and once for the
runtime (constants), and the two agree with the rows CI runs (.ci/compat/minimum.txt)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from runtime.constants import MIN_LIBRARY_VERSIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _floors(requirements: list[str]) -> dict[str, str]:
    found = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:>=|==)\s*([0-9][0-9A-Za-z.]*)", req.split(";")[0].strip())
        if m:
            found[m.group(1).replace("-", "_").lower()] = m.group(2)
    return found


def test_pyproject_declares_the_minimums_the_runtime_knows():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _floors(project["optional-dependencies"]["libraries"]) == MIN_LIBRARY_VERSIONS


def test_the_minimum_row_of_the_ci_matrix_pins_exactly_the_declared_minimums():
    pins = [ln for ln in (ROOT / ".ci/compat/minimum.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert {k: v for k, v in _floors(pins).items() if k in MIN_LIBRARY_VERSIONS} == MIN_LIBRARY_VERSIONS
    assert "# python: 3.10" in (ROOT / ".ci/compat/minimum.txt").read_text()


def test_an_imported_library_below_the_minimum_is_named_with_its_minimum(monkeypatch, tmp_path):
    import types
    import warnings

    import runtime
    from runtime.errors import UnsupportedVersionWarning

    old = types.ModuleType("timm")
    old.__version__ = "0.6.13"
    monkeypatch.setitem(sys.modules, "timm", old)
    monkeypatch.setenv("BUNDLE_PATH", "")
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", "")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtime.activate()
    runtime.deactivate()
    texts = [str(w.message) for w in caught if issubclass(w.category, UnsupportedVersionWarning)]
    assert len(texts) == 1 and "timm 0.6.13 is older than 0.9.16" in texts[0]
    assert "pip install 'timm>=0.9.16'" in texts[0]


def test_versions_compare_by_their_numbers():
    from runtime.versions import below_minimum

    assert below_minimum("transformers", "4.9.0")  # not a string comparison
    assert not below_minimum("transformers", "4.44.2") and not below_minimum("transformers", "5.0.0.dev0")
    assert not below_minimum("transformers", "unknown") and not below_minimum("numpy", "0.1")
