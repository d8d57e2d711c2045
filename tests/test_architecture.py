"""The dependency direction of docs/ARCHITECTURE.md, checked on the source's own imports.

Every ``import`` of a ``uniroute`` module anywhere in a file counts (also inside functions), so a
deferred import cannot hide an upward edge or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "uniroute"

#: Bottom to top. A module may import its own package and the packages of lower layers only.
LAYERS: list[set[str]] = [
    {"errors"},
    {"_checks", "_json"},
    {"_io", "_retry", "answers"},
    {"tradeoff", "pool", "data"},
    {"embeddings"},
    {"routers"},
    {"onboarding", "evaluation"},
    {"artifact", "registry"},
    {"deployment"},
    {"gateway"},
    {"cli", "testing"},
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    """Dotted module name of a source file (``uniroute.gateway.app``)."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The first component below ``uniroute``: the package or top-level module it belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The ``uniroute`` modules a file imports (``from a import b`` counts a.b when b is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("uniroute"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("uniroute"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the uniroute modules it imports."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) & known for name, path in files.items()}


GRAPH = import_graph()


def test_every_package_has_a_layer() -> None:
    units = {unit_of(m) for m in GRAPH} - {""}
    assert units <= set(LAYER_OF), f"add {sorted(units - set(LAYER_OF))} to LAYERS"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_or_sideways_import(module: str) -> None:
    unit = unit_of(module)
    if unit == "":
        assert not GRAPH[module], "uniroute/__init__.py must import nothing"
        return
    for target in GRAPH[module]:
        other = unit_of(target)
        if other == unit or other == "":
            continue
        assert LAYER_OF[other] < LAYER_OF[unit], (
            f"{module} imports {target}: layer {LAYER_OF[other]} ({other}) is not below "
            f"layer {LAYER_OF[unit]} ({unit})"
        )


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target == node:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_product_code_never_imports_the_testing_package() -> None:
    offenders = {
        module: sorted(t for t in targets if unit_of(t) == "testing")
        for module, targets in GRAPH.items()
        if unit_of(module) != "testing"
    }
    assert not {m: t for m, t in offenders.items() if t}
