"""One place reads each environment variable: the constants modules. Everything else asks
them, and docs/environment.md lists every variable they read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTANTS = {ROOT / "runtime" / "constants.py", ROOT / "builder" / "constants.py"}


def _reads(path: Path) -> list[int]:
    """Lines where ``os.environ`` or ``os.getenv`` is read (assignments to it are writes)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if node.func.attr in ("get", "__getitem__", "copy", "items") and ast.unparse(target) == "os.environ":
                lines.append(node.lineno)
            if node.func.attr == "getenv" and ast.unparse(target) == "os":
                lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                and isinstance(node.ctx, ast.Load):
            lines.append(node.lineno)
        if isinstance(node, ast.Compare) and any(ast.unparse(c) == "os.environ" for c in node.comparators):
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_constants_ones_reads_the_environment():
    offenders = []
    for package in ("builder", "runtime"):
        for path in (ROOT / package).rglob("*.py"):
            if path not in CONSTANTS:
                offenders += [f"{path.relative_to(ROOT)}:{line}" for line in _reads(path)]
    assert not offenders, f"read os.environ through runtime/ or builder/constants.py: {offenders}"


def test_every_variable_the_constants_read_is_in_docs_environment_md():
    page = (ROOT / "docs" / "environment.md").read_text()
    names = set()
    for path in CONSTANTS:
        names |= set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', path.read_text()))
    names -= {"ON", "YES", "TRUE"}  # values, not variables
    missing = sorted(n for n in names if n not in page and n.lower() not in page)
    assert not missing, f"docs/environment.md does not list {missing}"
