"""Capture by OpenSSL's new-session callback (native engine): every ticket a server sends is
stored when it arrives, so one warm-up connection is enough for a burst to resume; what the
engine sets on the user's context changes nothing for connections others open with it."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from aiotlspool import MemorySessionCache, Pool

from ..support.helpers import HOST, NAME, connect_once, roundtrip, wait_for
from ..support.servers import client_context, running_server, server_context

SESSION_ENGINES = ["native"]


@pytest.mark.parametrize("tickets", [1, 2, 4])
async def test_burst_after_one_warm_up_connection_resumes(ca, cert, tickets: int) -> None:
    # One full handshake to a server that issues N tickets leaves N tickets; N concurrent
    # connections then all resume, each with its own ticket (the server agrees).
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=tickets)) as srv,
        Pool(client_context(ca, "TLSv1.3")) as pool,
    ):
        assert await connect_once(pool, srv.port) is False
        assert pool.stats().cache_size == tickets
        conns = await asyncio.gather(
            *(pool.acquire(HOST, srv.port, server_hostname=NAME) for _ in range(tickets))
        )
        assert [conn.session_reused for conn in conns] == [True] * tickets
        # (The server counts a handshake when it has finished it, which may be after ours.)
        await wait_for(lambda: srv.resumed == tickets)
        for conn in conns:
            await conn.aclose()


async def test_tickets_are_stored_without_reading_releasing_or_closing(ca, cert) -> None:
    # asyncio and uvloop read eagerly, so the tickets arrive while the connection sits checked
    # out and untouched; nothing waits for release or close_notify.
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=2)) as srv,
        Pool(client_context(ca, "TLSv1.3")) as pool,
    ):
        conn = await pool.acquire(HOST, srv.port, server_hostname=NAME)
        await wait_for(lambda: pool.stats().cache_size == 2)
        assert pool.stats().sessions_stored == 2
        second = await pool.acquire(HOST, srv.port, server_hostname=NAME)
        assert second.session_reused  # while the first one is still open
        await pool.release(conn)
        await second.aclose()


async def test_a_resumed_connection_stores_only_the_new_ticket(ca, cert) -> None:
    # OpenSSL servers send 2 tickets after a full handshake and 1 after a resumption: the cache
    # stays at 2 over sequential reconnects, and never holds the ticket just used.
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=2)) as srv,
        Pool(client_context(ca, "TLSv1.3")) as pool,
    ):
        assert await connect_once(pool, srv.port) is False
        for _ in range(4):
            assert await connect_once(pool, srv.port) is True
        stats = pool.stats()
        assert (stats.sessions_stored, stats.cache_size) == (2 + 4, 2)
        assert srv.resumed == 4


async def test_tls12_session_is_stored_before_connect_returns(ca, cert) -> None:
    async with (
        running_server(server_context(cert, "TLSv1.2")) as srv,
        Pool(client_context(ca, "TLSv1.2")) as pool,
    ):
        conn = await pool.acquire(HOST, srv.port, server_hostname=NAME)
        assert (pool.stats().sessions_stored, pool.stats().cache_size) == (1, 1)
        await roundtrip(conn)
        await pool.release(conn)


async def test_connections_others_open_with_the_context_are_unchanged(ca, cert) -> None:
    # The pool sets a cache mode and the new-session callback on the user's context. Another
    # user of the same context (here a blocking ssl socket, with the standard library's own
    # session API) keeps working exactly as before, and nothing of it reaches the pool's cache.
    ctx = client_context(ca, "TLSv1.3")
    cache = MemorySessionCache()
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=2)) as srv,
        Pool(ctx, session_cache=cache) as pool,
    ):
        assert await connect_once(pool, srv.port) is False  # callback installed on ctx
        stored = cache.size()

        def stdlib_reconnect() -> list[bool]:
            reused = []
            session = None
            for _ in range(2):
                with (
                    socket.create_connection((HOST, srv.port)) as raw,
                    ctx.wrap_socket(raw, server_hostname=NAME, session=session) as tls,
                ):
                    tls.sendall(b"ping")
                    assert tls.recv(4) == b"ping"
                    reused.append(tls.session_reused)
                    session = tls.session
                    tls.unwrap()
            return reused

        assert await asyncio.to_thread(stdlib_reconnect) == [False, True]
        assert cache.size() == stored
        assert await connect_once(pool, srv.port) is True


@pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")
async def test_a_context_that_can_also_serve_is_captured_the_explicit_way(ca, cert) -> None:
    # The callback needs a cache mode that would also change a server's side of the context,
    # so a context made with PROTOCOL_TLS (client and server) is not watched: the pool captures
    # the connection's latest session instead, and still resumes.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ca.configure_trust(ctx)
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=2)) as srv,
        Pool(ctx) as pool,
    ):
        assert await connect_once(pool, srv.port) is False
        assert pool.stats().sessions_stored == 1  # one capture per connection
        assert await connect_once(pool, srv.port) is True
