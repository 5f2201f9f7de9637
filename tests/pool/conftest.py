"""Fixtures of the pool tests: a trustme CA, a certificate for "localhost", and a Python TLS
echo server on 127.0.0.1 for each TLS version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme

from ..support.servers import Server, client_context, server_context, start_server


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
