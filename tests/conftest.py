"""Hooks for the whole suite: every async test runs on the default asyncio loop and on
uvloop, and with each session engine.

The layout: ``unit/`` (no network), ``pool/`` (the pool against Python TLS servers; its
``conftest.py`` has the TLS fixtures), ``interop/`` (real servers; its ``conftest.py`` runs
them), ``support/`` (servers, helpers: no tests).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping

import pytest

from .support.helpers import IN_CI


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:
        if IN_CI:
            raise
    else:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): run the test with these session engines only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every async test (they all drive a Pool) runs with both session engines, unless it
    # names the engines it is about (@pytest.mark.engines(...)) or its module does
    # (SESSION_ENGINES).  A synchronous test runs with the engines its marker names, if any.
    marker = metafunc.definition.get_closest_marker("engines")
    if inspect.iscoroutinefunction(metafunc.function):
        engines = (
            list(marker.args)
            if marker is not None
            else getattr(metafunc.module, "SESSION_ENGINES", ["native", "stdlib"])
        )
    elif marker is not None:
        engines = list(marker.args)
    else:
        return
    metafunc.fixturenames.append("session_engine")
    metafunc.parametrize("session_engine", engines, indirect=True)


@pytest.fixture(autouse=True)
def session_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The engine that Pool(session_engine="auto") picks in this test (autouse: a test need
    not name it for its engine parameter to take effect)."""
    engine = getattr(request, "param", None)
    if engine is not None:
        monkeypatch.setenv("AIOTLSPOOL_SESSION_ENGINE", engine)
    return engine
