"""The layering of the package, checked on its source (every import counts, type-only too).

The rules, as DESIGN.md and the README's architecture section state them:

- ``tenure.agents`` never imports the engine (``tenure.runtime``);
- ``tenure.evidence``, ``tenure.lineage`` and ``tenure.policies`` never import the engine;
- ``tenure.crypto`` imports nothing of Tenure but the error tree and the small helpers;
- nothing imports ``tenure.cli`` (it is the top: only its own modules and ``__main__``);
- nothing in the core imports ``tenure.adapters`` (adapters sit on the public API);
- ``typer`` and ``rich`` are used only by ``tenure.cli``;
- the module import graph has no circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tenure"


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, and where."""

    importer: str
    imported: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(path: Path, tree: ast.AST | None = None) -> Iterator[Import]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = tree if tree is not None else ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield Import(name, target, node.lineno)
            for alias in node.names:  # ``from . import _x`` imports the submodule _x
                yield Import(name, f"{target}.{alias.name}", node.lineno)


def package_imports(root: Path = PACKAGE) -> list[Import]:
    """Every import in every module under ``root``."""
    return [imp for path in sorted(root.rglob("*.py")) for imp in _imports_of(path)]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


RULES: list[tuple[str, str, str]] = [
    ("tenure.agents", "tenure.runtime", "agents never imports the engine"),
    ("tenure.agents", "tenure.evidence", "agents is written against Protocols only"),
    ("tenure.evidence", "tenure.runtime", "evidence never imports the engine"),
    ("tenure.lineage", "tenure.runtime", "lineage never imports the engine"),
    ("tenure.policies", "tenure.runtime", "policies never imports the engine"),
    ("tenure.crypto", "tenure.runtime", "crypto is the bottom layer"),
    ("tenure.crypto", "tenure.evidence", "crypto is the bottom layer"),
    ("tenure.crypto", "tenure.policies", "crypto is the bottom layer"),
    ("tenure.crypto", "tenure.agents", "crypto is the bottom layer"),
    ("tenure.crypto", "tenure.lineage", "crypto is the bottom layer"),
    ("tenure.evidence", "tenure.agents", "evidence reads records, not agents"),
    ("tenure.policies", "tenure.evidence", "policies decide, evidence records"),
    ("tenure.policies", "tenure.lineage", "policies decide, lineage traces"),
]
OUTSIDE_ONLY = [
    ("tenure.cli", "nothing imports the CLI", ("tenure.cli", "tenure.__main__")),
    ("tenure.adapters", "the core never imports an adapter", ("tenure.adapters", "tenure.cli")),
    ("typer", "typer is for the CLI only", ("tenure.cli",)),
    ("rich", "rich is for the CLI only", ("tenure.cli",)),
]


def violations(imports: list[Import]) -> list[str]:
    """Every import breaking a rule, as ``importer:line imports target (rule)``."""
    found = []
    for imp in imports:
        for importer, forbidden, rule in RULES:
            if _within(imp.importer, importer) and _within(imp.imported, forbidden):
                found.append(f"{imp.importer}:{imp.line} imports {imp.imported} ({rule})")
        for target, rule, allowed in OUTSIDE_ONLY:
            if _within(imp.imported, target) and not any(_within(imp.importer, a) for a in allowed):
                found.append(f"{imp.importer}:{imp.line} imports {imp.imported} ({rule})")
    return sorted(set(found))


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    modules = {imp.importer for imp in imports}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = imp.imported
        while target and target not in modules:
            target = target.rpartition(".")[0]  # ``a.b.name`` -> the module ``a.b``
        # A module importing its own package's __init__ is how Python loads it, not a cycle.
        if target and target != imp.importer and not _within(imp.importer, target):
            graph[imp.importer].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_across_a_forbidden_layer() -> None:
    """The "never" rules of the architecture hold for every import, type-only included."""
    assert violations(package_imports()) == []


def test_the_import_graph_has_no_circle() -> None:
    """No set of modules imports each other in a circle (TYPE_CHECKING imports count)."""
    assert cycles(package_imports()) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "agents/_evil.py",
            "from ..runtime.kernel._run import Run\n",
            "agents never imports the engine",
        ),
        (
            "evidence/_evil.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..runtime import X\n",
            "evidence never imports the engine",
        ),
        ("policies/_evil.py", "import typer\n", "typer is for the CLI only"),
        ("runtime/_evil.py", "from ..cli import main\n", "nothing imports the CLI"),
    ],
)
def test_a_forbidden_import_is_caught(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    """The checker is not vacuous: a deliberately added forbidden import fails it."""
    path = PACKAGE / module
    imports = [*package_imports(), *_imports_of(path, ast.parse(source))]
    assert any(expected in v for v in violations(imports))


def test_a_deliberate_circle_is_caught() -> None:
    """Two modules importing each other (one only for type checking) form a cycle."""
    imports = [
        *package_imports(),
        Import("tenure.runtime.kernel._gate", "tenure.runtime.kernel._run", 1),
    ]
    assert ["tenure.runtime.kernel._gate", "tenure.runtime.kernel._run"] in [
        [m for m in c if m in ("tenure.runtime.kernel._gate", "tenure.runtime.kernel._run")]
        for c in cycles(imports)
    ]
