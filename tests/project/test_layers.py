"""The core's layers: no import cycle among sqltrack's modules, engines import nothing above.

The walk reads the AST of every module under ``sqltrack/`` and resolves relative
imports. It counts every import: at module level, inside functions (an import in
a function runs when the function does, so it can still close a cycle at run
time) and under ``if TYPE_CHECKING:`` (an annotation naming a higher layer is a
dependency on it all the same: a lower layer types its caller with a Protocol of
its own instead). ``from pkg import name`` counts as an import of ``pkg.name`` when
that is a module, else of ``pkg``. Importing ``pkg.mod`` also runs ``pkg/__init__``;
that implicit edge is not counted (a package's ``__init__`` re-exporting its modules
is no cycle to avoid), nor are the imports of the modules that only re-export
(``sqltrack/__init__.py``, the public alias modules) and of the generated dual-mode
module ``sqltrack/_dual.py``, which sit above everything by construction.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sqltrack

ROOT = Path(sqltrack.__file__).parent
#: What sqltrack/engines/ may import from sqltrack (besides itself).
ENGINE_MAY_IMPORT = {"sqltrack.errors", "sqltrack.checks", "sqltrack.config",
                     "sqltrack.metrics.layout"}
#: Modules that only re-export (or are generated to sit on top): their edges are not counted.
ON_TOP = {"sqltrack", "sqltrack._dual", "sqltrack.sigterm", "sqltrack.analysis",
          "sqltrack.export", "sqltrack.wandb"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The sqltrack modules ``name`` imports at run time."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names: list[str] = []
        else:
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            bases = [base]
            names = [alias.name for alias in node.names]
        for base in bases:
            submodules = {f"{base}.{n}" for n in names} & known
            targets |= submodules
            # ``import pkg`` or a name defined in the module itself: an import of ``base``
            if base in known and (not names or len(submodules) < len(names)):
                targets.add(base)
    targets.discard(name)
    return targets


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set() if name in ON_TOP else imports_of(name, path, known)
            for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return sorted(groups)


def _package_parents(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``a.b`` runs ``a/__init__`` first: count that edge too."""
    full = {name: set(targets) for name, targets in edges.items()}
    for name, targets in edges.items():
        for target in targets:
            parent = target.rpartition(".")[0]
            if parent and parent in full and parent != name and not name.startswith(parent + "."):
                full[name].add(parent)
    return full


def test_the_walk_sees_the_known_imports():
    edges = graph()
    assert len(edges) > 20
    assert "sqltrack.engines.base" in edges["sqltrack.engines.sqlite"]
    assert "sqltrack.engines" in edges["sqltrack.client.connections"]  # make_engine
    assert "sqltrack.outage.replay" in edges["sqltrack.client.async_client"]  # in a function
    # an import under TYPE_CHECKING counts too: the client names the spool in annotations
    assert "sqltrack.outage.spool" in edges["sqltrack.client.async_client"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_sqltrack():
    found = cycles(graph())
    assert found == [], f"import cycles among sqltrack's modules: {found}"


def test_engines_import_nothing_above_them():
    upward = {
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith("sqltrack.engines")
        for target in targets
        if not target.startswith("sqltrack.engines") and target not in ENGINE_MAY_IMPORT
    }
    assert upward == set(), f"engines import upwards: {sorted(upward)}"
