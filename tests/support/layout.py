"""Reading the package's import graph from its source (typing-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import aiotlspool

PACKAGE = Path(aiotlspool.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name relative to it (``"engines.libssl"``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` imports anywhere in its source."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                candidates = [".".join(target)]
                candidates += [".".join([*target, alias.name]) for alias in node.names]
            elif node.module and node.module.startswith("aiotlspool"):
                target = node.module.split(".")[1:]
                candidates = [".".join(target)]
                candidates += [".".join([*target, alias.name]) for alias in node.names]
            else:
                continue
            found.update(c for c in candidates if c in known)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aiotlspool."):
                    found.add(alias.name.removeprefix("aiotlspool."))
    found.discard(name)
    return {m for m in found if not m.endswith("__init__") and m}


def cycle_free_order(graph: dict[str, set[str]]) -> list[str]:
    """A topological order of ``graph``; AssertionError naming the modules left on a cycle."""
    order: list[str] = []
    while len(order) < len(graph):  # Kahn: a cycle leaves modules that never become ready
        ready = [m for m in graph if m not in order and graph[m] <= set(order)]
        assert ready, f"import cycle among {sorted(set(graph) - set(order))}"
        order.extend(sorted(ready))
    return order
