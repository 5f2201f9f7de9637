"""Fixtures of the interop tests: the real servers of ``tests/support/realservers.py``.

One shared instance per variant (``rs.VARIANTS`` is the table), started on first use and
stopped at the end of the session; reach it as ``shared_realserver(variant)``, as the fixture
named after the variant (``nginx_tickets`` for "nginx-tickets"), or through ``realserver``,
which runs a test once per variant. Shared instances refuse ``restart()`` and ``reload()``:
tests that change a server's state get a private one from ``start_realserver``.

A missing binary skips the test locally and fails it when ``CI=true``, where
``scripts/install-servers.sh`` must have run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from ..support import realservers as rs
from ..support.helpers import skip_or_fail


def require(variant: rs.Variant) -> None:
    """Skip (locally) or fail (CI) unless the variant's binary is installed."""
    try:
        rs.require(variant)
    except rs.ServerUnavailable as exc:
        skip_or_fail(str(exc))


@contextmanager
def _serving(
    variant: rs.Variant, certs: rs.Certs, ticket_key: Path | None = None
) -> Iterator[rs.RealServer]:
    require(variant)
    with rs.run_server(variant, certs, ticket_key=ticket_key) as server:
        yield server


@pytest.fixture(scope="session")
def realserver_certs() -> Iterator[rs.Certs]:
    """The trustme CA (``.ca``, ``.ca_file``) and the servers' certificate files."""
    with rs.certificates() as certs:
        yield certs


@pytest.fixture(scope="session")
def shared_realserver(realserver_certs: rs.Certs) -> Iterator[rs.SharedRealServer]:
    """``shared_realserver(variant) -> RealServer``: the variant's shared instance, started
    the first time a test asks for it, for tests parametrized over variants themselves."""
    servers: dict[rs.Variant, rs.RealServer] = {}
    with ExitStack() as stack:

        def get(variant: rs.Variant) -> rs.RealServer:
            if variant not in servers:
                server = stack.enter_context(_serving(variant, realserver_certs))
                server.shared = True
                servers[variant] = server
            return servers[variant]

        yield get


def _variant_fixture(variant: rs.Variant) -> object:
    def fixture(shared_realserver: rs.SharedRealServer) -> rs.RealServer:
        return shared_realserver(variant)

    fixture.__doc__ = f"The shared instance of {variant}: {rs.VARIANTS[variant].description}."
    return pytest.fixture(scope="session", name=variant.replace("-", "_"))(fixture)


# nginx_session_ids, nginx_tickets, ..., stunnel_echo: one fixture per row of the table.
for _variant in rs.VARIANTS:
    globals()[_variant.replace("-", "_")] = _variant_fixture(_variant)


@pytest.fixture(scope="session", params=list(rs.VARIANTS))
def realserver(
    request: pytest.FixtureRequest, shared_realserver: rs.SharedRealServer
) -> rs.RealServer:
    """Each variant's shared instance in turn (the test runs once per variant)."""
    return shared_realserver(request.param)


@pytest.fixture(scope="session")
def nginx_shared_key_pair(
    realserver_certs: rs.Certs,
) -> Iterator[tuple[rs.RealServer, rs.RealServer]]:
    """Two nginx-fixed-key instances on different ports reading the same ticket key file."""
    require("nginx-fixed-key")
    with rs.nginx_shared_key_pair(realserver_certs) as (a, b):
        a.shared = b.shared = True
        yield a, b


@pytest.fixture
def require_realserver() -> Callable[[rs.Variant], None]:
    """``require_realserver(variant)``: skip (locally) or fail (CI) unless it is installed,
    for tests that drive ``realservers.run_server`` themselves."""
    return require


@pytest.fixture
def start_realserver(realserver_certs: rs.Certs) -> Iterator[rs.StartRealServer]:
    """``start_realserver(variant, ticket_key=None) -> RealServer``: a private instance that
    the test may restart and reload; stopped when the test ends."""
    with ExitStack() as stack:

        def start(variant: rs.Variant, ticket_key: Path | None = None) -> rs.RealServer:
            return stack.enter_context(_serving(variant, realserver_certs, ticket_key))

        yield start
