"""Fixtures: every async test runs on the default asyncio loop and on uvloop, against real TLS
servers on 127.0.0.1 with trustme certificates."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import trustme

from .servers import Server, client_context, server_context, start_server

IN_CI = os.environ.get("CI") == "true"


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every async test (they all drive a Pool) runs with both session engines, unless its
    # module names the engines it is about in SESSION_ENGINES.
    if inspect.iscoroutinefunction(metafunc.function):
        engines = getattr(metafunc.module, "SESSION_ENGINES", ["native", "stdlib"])
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


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    """Valid for "localhost" only: any other server name must fail verification."""
    return ca.issue_cert("localhost")


@pytest.fixture(params=["TLSv1.2", "TLSv1.3"])
def tls_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client_ctx(ca: trustme.CA, tls_version: str) -> Any:
    return client_context(ca, tls_version)


@pytest.fixture
async def server(cert: trustme.LeafCert, tls_version: str) -> AsyncIterator[Server]:
    """A TLS echo server speaking ``tls_version`` with tickets and a session cache."""
    srv = await start_server(server_context(cert, tls_version))
    yield srv
    await srv.close()
