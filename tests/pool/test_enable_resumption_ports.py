"""Port-aware keys for resuming contexts: resumption_endpoint and the library adapters built on
it (aiohttp middleware, httpx event hooks, anyio connect_tls).

The judge: two servers with one name on two ports, each with its own ticket keys, visited in
turn. Keyed by name only, each is offered the other's session and refuses it (every handshake
full); keyed by port, each resumes its own."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

from aiotlspool import enable_resumption, resumption_endpoint, resumption_stats
from aiotlspool.integrations.ports import hinted_port

from ..support.helpers import HOST, NAME, require_module
from ..support.servers import (
    Server,
    ThreadServer,
    client_context,
    echo,
    running_server,
    server_context,
)
from .test_enable_resumption import TIMEOUT, assert_adds_up, exchange, http_once

Connect = Callable[[int], Awaitable[None]]


async def visit_in_turn(servers: tuple[Server, Server], connect: Connect, rounds: int = 2) -> None:
    for _ in range(rounds):
        for srv in servers:
            await connect(srv.port)


def assert_each_resumed_its_own(servers: tuple[Server, Server], ctx: ssl.SSLContext) -> None:
    # A full handshake to each, then every visit resumes.
    assert [(s.handshakes, s.resumed) for s in servers] == [(2, 1), (2, 1)]
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=4)
    assert (stats.full, stats.resumed, stats.rejected) == (2, 2, 0), stats


def two_servers(handler: Callable[..., Awaitable[None]]) -> Any:
    """A fixture: two servers of one name on two ports, each running ``handler``."""

    @pytest.fixture
    async def servers(
        cert: trustme.LeafCert, tls_version: str
    ) -> AsyncIterator[tuple[Server, Server]]:
        async with (
            running_server(server_context(cert, tls_version), handler) as one,
            running_server(server_context(cert, tls_version), handler) as two,
        ):
            yield one, two

    return servers


echo_servers = two_servers(echo)
http_servers = two_servers(http_once)


async def test_without_the_port_two_servers_of_one_name_thrash(
    ca: trustme.CA, echo_servers: tuple[Server, Server], tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))

    async def connect(port: int) -> None:
        await exchange(port, ctx)

    await visit_in_turn(echo_servers, connect)
    assert sum(s.resumed for s in echo_servers) < 2  # what the port-aware key fixes
    assert resumption_stats(ctx).rejected >= 1


async def test_resumption_endpoint_keys_by_port(
    ca: trustme.CA, echo_servers: tuple[Server, Server], tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))

    async def connect(port: int) -> None:
        with resumption_endpoint(NAME, port):
            await exchange(port, ctx)

    await visit_in_turn(echo_servers, connect)
    assert_each_resumed_its_own(echo_servers, ctx)


async def test_a_hint_for_another_name_is_ignored(
    ca: trustme.CA, echo_servers: tuple[Server, Server], tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    one, two = echo_servers
    with resumption_endpoint("other.example", one.port):
        assert await exchange(one.port, ctx) is False
    # Stored without a port: found by a connection without a hint, not by one keyed by port.
    with resumption_endpoint(NAME, one.port):
        assert await exchange(one.port, ctx) is False
    assert await exchange(one.port, ctx) is True
    assert two.handshakes == 0


def test_hint_validation_and_scope() -> None:
    with pytest.raises(ValueError, match=r"1\.\.65535"), resumption_endpoint(NAME, 0):
        pass
    with pytest.raises(TypeError, match="port must be an int"), resumption_endpoint(NAME, True):
        pass
    with pytest.raises(ValueError, match="not a server name"), resumption_endpoint("", 443):
        pass
    with resumption_endpoint("LocalHost.", 8443):
        assert hinted_port("localhost") == 8443
        with resumption_endpoint(b"localhost", 9443):
            assert hinted_port("localhost") == 9443
        assert hinted_port("localhost") == 8443
        assert hinted_port("example.org") is None
    assert hinted_port("localhost") is None


async def test_aiohttp_middleware_keys_by_port(
    ca: trustme.CA, http_servers: tuple[Server, Server], tls_version: str
) -> None:
    aiohttp = require_module("aiohttp")
    from aiotlspool.integrations.aiohttp import resumption_middleware

    ctx = enable_resumption(client_context(ca, tls_version))
    connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, middlewares=[resumption_middleware]
    ) as session:

        async def connect(port: int) -> None:
            url = f"https://{HOST}:{port}/"
            async with session.get(url, server_hostname=NAME) as response:
                assert await response.read() == b"ok"

        await visit_in_turn(http_servers, connect)
    assert_each_resumed_its_own(http_servers, ctx)


async def test_httpx_event_hooks_key_by_port(
    ca: trustme.CA, http_servers: tuple[Server, Server], tls_version: str
) -> None:
    httpx = require_module("httpx")
    from aiotlspool.integrations.httpx import resumption_event_hooks

    ctx = enable_resumption(client_context(ca, tls_version))
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        verify=ctx, limits=limits, timeout=TIMEOUT, event_hooks=resumption_event_hooks()
    ) as client:

        async def connect(port: int) -> None:
            url = f"https://{HOST}:{port}/"
            response = await client.get(url, extensions={"sni_hostname": NAME})
            assert response.content == b"ok"

        await visit_in_turn(http_servers, connect)
    assert_each_resumed_its_own(http_servers, ctx)


def test_httpx_sync_event_hooks_key_by_port(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str
) -> None:
    httpx = require_module("httpx")
    from aiotlspool.integrations.httpx import resumption_event_hooks

    ctx = enable_resumption(client_context(ca, tls_version))
    limits = httpx.Limits(max_keepalive_connections=0)
    hooks = resumption_event_hooks(sync=True)
    with (
        ThreadServer(http_once, server_context(cert, tls_version)) as one,
        ThreadServer(http_once, server_context(cert, tls_version)) as two,
        httpx.Client(verify=ctx, limits=limits, timeout=TIMEOUT, event_hooks=hooks) as client,
    ):
        for _ in range(2):
            for srv in (one, two):
                url = f"https://{HOST}:{srv.port}/"
                response = client.get(url, extensions={"sni_hostname": NAME})
                assert response.content == b"ok"
        assert [(s.handshakes, s.resumed) for s in (one, two)] == [(2, 1), (2, 1)]
    stats = resumption_stats(ctx)
    assert (stats.full, stats.resumed, stats.rejected) == (2, 2, 0), stats


async def test_anyio_connect_tls_keys_by_port(
    ca: trustme.CA, echo_servers: tuple[Server, Server], tls_version: str
) -> None:
    require_module("anyio")
    from aiotlspool.integrations.anyio import connect_tls

    ctx = enable_resumption(client_context(ca, tls_version))

    async def connect(port: int) -> None:
        stream = await connect_tls(HOST, port, ssl_context=ctx, tls_hostname=NAME)
        async with stream:
            await stream.send(b"ping")
            assert await stream.receive() == b"ping"

    await visit_in_turn(echo_servers, connect)
    assert_each_resumed_its_own(echo_servers, ctx)


def test_anyio_connect_tls_on_trio(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str
) -> None:
    anyio = require_module("anyio")
    require_module("trio")
    from aiotlspool.integrations.anyio import connect_tls

    ctx = enable_resumption(client_context(ca, tls_version))

    async def visit(ports: list[int]) -> None:
        for _ in range(2):
            for port in ports:
                stream = await connect_tls(HOST, port, ssl_context=ctx, tls_hostname=NAME)
                async with stream:
                    await stream.send(b"ping")
                    assert await stream.receive() == b"ping"

    with (
        ThreadServer(echo, server_context(cert, tls_version)) as one,
        ThreadServer(echo, server_context(cert, tls_version)) as two,
    ):
        anyio.run(visit, [one.port, two.port], backend="trio")
        assert [(s.handshakes, s.resumed) for s in (one, two)] == [(2, 1), (2, 1)]


async def test_the_hint_reaches_tasks_started_inside(
    ca: trustme.CA, echo_servers: tuple[Server, Server], tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))

    async def connect(port: int) -> None:
        with resumption_endpoint(NAME, port):
            # Libraries often connect in a task of their own (happy eyeballs, shielding).
            await asyncio.create_task(exchange(port, ctx))

    await visit_in_turn(echo_servers, connect)
    assert_each_resumed_its_own(echo_servers, ctx)
