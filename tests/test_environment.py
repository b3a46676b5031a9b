"""One place reads each environment variable: the constants modules. Everything else asks
them, and docs/environment.md lists every variable they read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTANTS = {ROOT / "runtime" / "constants.py", ROOT / "builder" / "constants.py"}


_WRITES = frozenset({"pop", "update", "setdefault", "clear", "__setitem__", "__delitem__"})


def _reads(path: Path) -> list[int]:
    """Lines where ``os.environ`` is read in any form (``.get``, ``[...]``, ``dict(...)``,
    ``in``, iteration) or ``os.getenv`` is called; setting or removing a variable is a write."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "os.getenv":
            lines.append(node.lineno)
        if not (isinstance(node, ast.Attribute) and ast.unparse(node) == "os.environ"):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del)):
            continue  # os.environ[X] = ... / del os.environ[X]
        if isinstance(parent, ast.Attribute) and parent.attr in _WRITES:
            continue  # os.environ.pop(X) / .update(...)
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
