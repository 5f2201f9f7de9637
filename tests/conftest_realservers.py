"""pytest fixtures for the real servers of ``tests/realservers.py``.

Load them with ``pytest_plugins = ["tests.conftest_realservers"]`` in a test module (or in
``tests/conftest.py`` to make them available everywhere).

Session-scoped instances are shared by every test: they refuse ``restart()`` and ``reload()``.
Tests that change a server's state get a private one from ``start_realserver``.

A missing binary skips the test locally and fails it when ``CI=true``, where
``scripts/install-servers.sh`` must have run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn, Protocol

import pytest

from . import realservers as rs

# The fixture that yields each variant's shared instance: the variant's name with "_" for "-".
FIXTURE_FOR_VARIANT: dict[rs.Variant, str] = {v: v.replace("-", "_") for v in rs.VARIANTS}


def unavailable(exc: rs.ServerUnavailable) -> NoReturn:
    """Skip locally; fail in CI, where a missing server means a broken install step."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{exc} (CI=true)", pytrace=False)
    pytest.skip(str(exc))


def require(variant: rs.Variant) -> None:
    """Skip (locally) or fail (CI) unless the variant's binary is installed."""
    try:
        rs.require(variant)
    except rs.ServerUnavailable as exc:
        unavailable(exc)


@contextmanager
def _serving(
    variant: rs.Variant, certs: rs.Certs, ticket_key: Path | None = None
) -> Iterator[rs.RealServer]:
    require(variant)
    with rs.run_server(variant, certs, ticket_key=ticket_key) as server:
        yield server


@contextmanager
def _shared(variant: rs.Variant, certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _serving(variant, certs) as server:
        server.shared = True
        yield server


@pytest.fixture(scope="session")
def realserver_certs() -> Iterator[rs.Certs]:
    """The trustme CA (``.ca``, ``.ca_file``) and the servers' certificate files."""
    with rs.certificates() as certs:
        yield certs


@pytest.fixture(scope="session")
def nginx_session_ids(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("nginx-session-ids", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_tickets(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("nginx-tickets", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_tls13(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("nginx-tls13", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_no_resumption(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("nginx-no-resumption", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_fixed_key(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    """Shared: for restart/reload tests use ``start_realserver("nginx-fixed-key")``."""
    with _shared("nginx-fixed-key", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_shared_key_pair(
    realserver_certs: rs.Certs,
) -> Iterator[tuple[rs.RealServer, rs.RealServer]]:
    """Two nginx-fixed-key instances on different ports reading the same ticket key file."""
    require("nginx-fixed-key")
    with rs.nginx_shared_key_pair(realserver_certs) as (a, b):
        a.shared = b.shared = True
        yield a, b


@pytest.fixture(scope="session")
def s_server_no_ticket(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("s_server-no-ticket", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def s_server_no_tls13_tickets(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("s_server-no-tls13-tickets", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def haproxy_echo(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("haproxy-echo", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session")
def stunnel_echo(realserver_certs: rs.Certs) -> Iterator[rs.RealServer]:
    with _shared("stunnel-echo", realserver_certs) as server:
        yield server


@pytest.fixture(scope="session", params=list(FIXTURE_FOR_VARIANT), ids=list(FIXTURE_FOR_VARIANT))
def realserver(request: pytest.FixtureRequest) -> rs.RealServer:
    """Each variant's shared instance in turn (the test runs once per variant)."""
    server: rs.RealServer = request.getfixturevalue(FIXTURE_FOR_VARIANT[request.param])
    return server


@pytest.fixture
def shared_realserver(request: pytest.FixtureRequest) -> SharedRealServer:
    """``shared_realserver(variant) -> RealServer``: the variant's shared instance, for tests
    parametrized over variants (and TLS versions) themselves."""

    def get(variant: rs.Variant) -> rs.RealServer:
        server: rs.RealServer = request.getfixturevalue(FIXTURE_FOR_VARIANT[variant])
        return server

    return get


@pytest.fixture
def require_realserver() -> Callable[[rs.Variant], None]:
    """``require_realserver(variant)``: skip (locally) or fail (CI) unless it is installed,
    for tests that drive ``realservers.run_server`` themselves."""
    return require


SharedRealServer = Callable[[rs.Variant], rs.RealServer]


class StartRealServer(Protocol):
    def __call__(self, variant: rs.Variant, ticket_key: Path | None = None) -> rs.RealServer: ...


@pytest.fixture
def start_realserver(realserver_certs: rs.Certs) -> Iterator[StartRealServer]:
    """``start_realserver(variant, ticket_key=None) -> RealServer``: a private instance that
    the test may restart and reload; stopped when the test ends."""
    with ExitStack() as stack:

        def start(variant: rs.Variant, ticket_key: Path | None = None) -> rs.RealServer:
            return stack.enter_context(_serving(variant, realserver_certs, ticket_key))

        yield start
