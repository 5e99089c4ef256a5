"""The structure holds: no import cycles, no upward arrows between layers, no SQL in routes.

Read from the source with `ast` (nothing is imported), so a new module is covered the moment
it exists. Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# Infrastructure: knows no domain.
FOUNDATION = {
    "audio",
    "blobs",
    "clock",
    "boot",
    "config",
    "db",
    "docs",
    "embedding",
    "errors",
    "health",
    "index",
    "jobs",
    "limits",
    "logging",
    "middleware",
    "migrate",
    "pagination",
    "signing",
    "state",
    "timing",
    "validation",
    "csv_export",
}
# Domains, lowest first: each may use the ones before it, never one after it.
DOMAINS = [
    "orgs",
    "catalogues",
    "rights",
    "ledger",
    "conflicts",
    "checks",
    "disputes",
    "reports",
    "console",
]
# Wires everything together.
COMPOSITION = {"main", "worker", "cli", "models"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in APP.rglob("*.py")}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of statements inside `if TYPE_CHECKING:` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in `module` that runs, lazy ones included."""
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_only(tree)
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from package import submodule` imports the submodule, not the package.
                yield (sub if sub in MODULES else base), node.lineno


def _graph() -> dict[str, set[str]]:
    return {
        module: {target for target, _ in _imports(module) if target in MODULES and target != module}
        for module in MODULES
    }


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_place_in_the_layers() -> None:
    placed = FOUNDATION | set(DOMAINS) | COMPOSITION | {""}
    unplaced = sorted({_top(m) for m in MODULES} - placed)
    assert not unplaced, f"put these in a layer in tests/test_architecture.py: {unplaced}"


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_no_arrow_points_up_the_layers() -> None:
    def rank(top: str) -> tuple[int, int]:
        if top in FOUNDATION or top == "":
            return (0, 0)
        if top in COMPOSITION:
            return (2, 0)
        return (1, DOMAINS.index(top))

    upward = []
    for module, targets in _graph().items():
        for target in targets:
            here, there = _top(module), _top(target)
            if here == there:
                continue
            if here in FOUNDATION and there not in FOUNDATION | {""}:
                upward.append(f"{module} -> {target} (infrastructure must not know domains)")
            elif rank(there) > rank(here):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.endswith(".routes")))
def test_routes_do_not_write_sql(module: str) -> None:
    sql = [
        f"line {line}: {target}"
        for target, line in _imports(module)
        if target == "sqlalchemy" or target.startswith("sqlalchemy.")
    ]
    assert not sql, f"{module} imports sqlalchemy (build the query in a service): {sql}"


def test_the_checks_find_what_they_look_for() -> None:
    """The helpers see real imports: a known edge and a known lazy import are found."""
    graph = _graph()
    assert "app.ledger.movements" in graph["app.checks.service"]
    assert "app.main" in graph["app.cli"]  # imported inside a function
    assert any(m.endswith(".routes") for m in MODULES)
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, _strongly_connected(toy))) == [["a", "b", "c"], ["d"]]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components
