"""The declared layering of builder/ and runtime/ holds: no import runs upward, none in a circle.

Every import counts, also one inside a function or under ``if TYPE_CHECKING:``: a
lazy import is still a dependency, and a circle of them still ties two modules
that should stand in layers. Only ``ast`` reads the code; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A module may import its own layer and the layers before it. A module
#: belongs to the layer of the longest prefix that names it ("runtime" holds the runtime
#: core: activate, resolve, manifest, ...; "runtime.cli" is a layer of its own).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("runtime core", ("runtime",)),
    ("runtime training core and data", ("runtime.train", "runtime.data")),
    # The stack record (click and the standard library): shared recipes declare their needs in it.
    ("runtime stack record", ("runtime.stacks.record",)),
    ("runtime shared recipes", ("runtime.vision", "runtime.ddrm", "runtime.emotion")),
    ("runtime distillation (an emotion-vit teacher)", ("runtime.distill",)),
    ("runtime stacks", ("runtime.stacks",)),
    ("runtime command line", ("runtime.cli",)),
    ("builder base", ("builder", "builder.errors", "builder.credentials", "builder.artifact")),
    ("builder store and download engine", ("builder.store", "builder.fetch")),
    ("builder sources, spec, bundle folder, extras",
     ("builder.sources", "builder.spec", "builder.layout", "builder.verify", "builder.extras")),
    ("builder pipeline (bundle build)", ("builder.pipeline",)),
    ("builder publish, image, capture and run bundles",
     ("builder.publish", "builder.image", "builder.capture", "builder.runs")),
    ("builder command line", ("builder.cli", "builder.__main__")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("builder", "runtime"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) of every import of ours in ``path``, resolved to a module file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                # `from runtime import constants` depends on runtime.constants, not on
                # runtime/__init__; `from runtime import activate` (a function) on the package.
                full = f"{base}.{alias.name}"
                targets.append((node.lineno, full if full in modules else base))
    resolved = []
    for line, target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.append((line, target))
    return resolved


def _layer(name: str) -> int:
    best, best_len = -1, -1
    for index, (_title, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]]]:
    modules = _modules()
    return modules, {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_declared_layer():
    modules, _ = _graph()
    unplaced = sorted(name for name in modules if _layer(name) < 0)
    assert not unplaced, f"add these modules to LAYERS in {__file__}: {unplaced}"


def test_no_import_runs_upward():
    modules, graph = _graph()
    upward = []
    for name, imports in sorted(graph.items()):
        for line, target in imports:
            if _layer(target) > _layer(name):
                upward.append(
                    f"{modules[name].relative_to(ROOT)}:{line}: {name} ({LAYERS[_layer(name)][0]}) "
                    f"imports {target} ({LAYERS[_layer(target)][0]})"
                )
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_circles():
    _, graph = _graph()
    edges = {name: {target for _, target in imports} for name, imports in graph.items()}
    assert _cycles(edges) == []


def test_the_checks_catch_what_they_are_for():
    """The graph is read right: a known downward import is seen, and a circle is found."""
    _, graph = _graph()
    assert ("builder.fetch.api" in {t for _, t in graph["builder.pipeline.download"]}
            or "builder.fetch" in {t for _, t in graph["builder.pipeline.download"]})
    assert "runtime.state" in {t for _, t in graph["runtime.resolve"]}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("runtime.cli") > _layer("runtime.stacks.flood") > _layer("runtime.vision.classify")
    assert _layer("builder.spec") > _layer("runtime.cli")
