"""The package's layout: small modules, and imports that only go down the layers."""

from __future__ import annotations

import pytest

from ..support.layout import cycle_free_order, imports_of, modules

MAX_LINES = 400


def test_package_modules_are_small_and_import_no_cycle() -> None:
    found = modules()
    # Package __init__ modules re-export (aiotlspool/__init__.py imports everything public).
    inner = {name: path for name, path in found.items() if not name.endswith("__init__")}
    known = set(inner)
    graph = {name: imports_of(name, path, known) for name, path in inner.items()}
    for name, path in inner.items():
        assert len(path.read_text().splitlines()) <= MAX_LINES, name
    order = cycle_free_order(graph)
    # The layers: sessions and engines never reach up into the pool.
    upper = {"pool", "pool_tls", "connector", "slots", "offering", "background", "lifetimes"}
    for name in order:
        if name.startswith(("sessions.", "engines.")):
            assert not graph[name] & upper, (name, graph[name] & upper)
    # The library never imports its command line (only __main__ and the cli package do).
    for name, deps in graph.items():
        if not name.startswith("cli.") and name != "__main__":
            assert not {m for m in deps if m.startswith("cli.")}, name


def test_the_import_graph_reader_sees_relative_and_typing_only_imports() -> None:
    # The check above is only as good as the reader: it must see a cycle where there is one.
    found = modules()
    known = {name for name in found if not name.endswith("__init__")}
    assert "sessions.verification" in imports_of("sessions.key", found["sessions.key"], known)
    assert "engines.libssl" in imports_of(
        "sessions.verification", found["sessions.verification"], known
    )
    assert "connector" in imports_of("pool_tls", found["pool_tls"], known)
    with pytest.raises(AssertionError, match="import cycle among"):
        cycle_free_order({"a": {"b"}, "b": {"a"}})
