"""Session resumption through the pool, on both loops and both TLS versions."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aiotlspool import MemorySessionCache, Pool, ResumptionRejected

from ..support.helpers import HOST, NAME, connect_once, roundtrip, tls13_sessions_stored
from ..support.servers import Server, client_context, running_server, server_context, start_server


async def test_second_connection_resumes(client_ctx, server: Server, tls_version: str) -> None:
    async with Pool(client_ctx) as pool:
        assert await connect_once(pool, server.port) is False
        assert await connect_once(pool, server.port) is True
        assert await connect_once(pool, server.port) is True
        stats = pool.stats()
    assert (stats.full_handshakes, stats.resumed_handshakes) == (1, 2)
    assert (stats.cache_misses, stats.cache_hits, stats.rejected_sessions) == (1, 2, 0)
    assert (server.handshakes, server.resumed) == (3, 2)  # the server agrees


async def test_connection_reports_version_and_timing(client_ctx, server: Server, tls_version):
    async with (
        Pool(client_ctx) as pool,
        pool.connection(HOST, server.port, server_hostname=NAME) as conn,
    ):
        assert conn.tls_version == tls_version
        assert 0 < conn.handshake_seconds <= conn.connect_seconds < 5
        assert conn.endpoint.server_hostname == NAME


async def test_session_captured_when_closed_without_reading(
    client_ctx, server, tls_version, session_engine
):
    # The TLS 1.3 ticket arrives after the handshake. A connection that is closed without the
    # application ever reading still yields a resumable session, never a ticketless one: the
    # native engine stores each ticket as it arrives, the stdlib engine captures after the
    # close_notify exchange.
    async with Pool(client_ctx) as pool:
        async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
            await conn.aclose()
        expected = 1 if tls_version == "TLSv1.2" else tls13_sessions_stored(session_engine, full=1)
        assert pool.stats().sessions_stored == expected
        assert await connect_once(pool, server.port) is True


async def test_read_once_then_close_yields_resumable_session(client_ctx, server, tls_version):
    async with Pool(client_ctx) as pool:
        conn = await pool.acquire(HOST, server.port, server_hostname=NAME)
        await roundtrip(conn)
        await conn.aclose()
        assert await connect_once(pool, server.port) is True


async def test_released_idle_connection_captures_once(
    client_ctx, server, tls_version, session_engine
):
    # Reusing a pooled connection performs no handshake, and a session is captured only once
    # (each stdlib capture is a copy, and leaks on Python 3.10-3.13.0; the native engine stores
    # each ticket once, when it arrives).
    async with Pool(client_ctx) as pool:
        for _ in range(5):
            async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
                await roundtrip(conn)
        stats = pool.stats()
        stored = 1 if tls_version == "TLSv1.2" else tls13_sessions_stored(session_engine, full=1)
        assert (stats.connections_opened, stats.sessions_stored, stats.idle) == (1, stored, 1)
        assert conn.checkouts == 5
        async with pool.connection(HOST, server.port, server_hostname=NAME) as same:
            assert same is conn
            # While it is checked out, a second connection must be new, and it resumes.
            assert await connect_once(pool, server.port) is True


async def test_cache_disabled_never_resumes(client_ctx, server: Server) -> None:
    async with Pool(client_ctx, session_cache=False) as pool:
        results = [await connect_once(pool, server.port) for _ in range(3)]
        stats = pool.stats()
    assert results == [False, False, False]
    assert (stats.cache_hits, stats.sessions_stored, stats.cache_size) == (0, 0, 0)
    assert server.resumed == 0


async def test_tls13_server_without_tickets_works_without_resumption(ca, cert) -> None:
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=0)) as srv,
        Pool(client_context(ca, "TLSv1.3")) as pool,
    ):
        results = [await connect_once(pool, srv.port) for _ in range(3)]
        stats = pool.stats()
    assert results == [False, False, False]
    assert (stats.full_handshakes, stats.sessions_stored, stats.rejected_sessions) == (3, 0, 0)


async def test_tls12_session_ids_resume_without_tickets(ca, cert) -> None:
    async with (
        running_server(server_context(cert, "TLSv1.2", tickets=False)) as srv,
        Pool(client_context(ca, "TLSv1.2")) as pool,
    ):
        results = [await connect_once(pool, srv.port) for _ in range(3)]
    assert results == [False, True, True]


async def test_restarted_server_rejects_stale_session_which_is_dropped(ca, cert, tls_version):
    srv = await start_server(server_context(cert, tls_version))
    port = srv.port
    async with Pool(client_context(ca, tls_version)) as pool:
        assert await connect_once(pool, port) is False
        assert await connect_once(pool, port) is True
        await srv.close()
        # Same port, new SSLContext: new ticket keys and an empty session cache.
        srv = await start_server(server_context(cert, tls_version), port=port)
        try:
            assert await connect_once(pool, port) is False  # no error: a full handshake
            assert await connect_once(pool, port) is True  # the new session was stored
            stats = pool.stats()
        finally:
            await srv.close()
    assert stats.rejected_sessions == 1
    assert (stats.full_handshakes, stats.resumed_handshakes) == (2, 2)


async def test_require_resumption_raises_when_session_refused(ca, cert, tls_version) -> None:
    srv = await start_server(server_context(cert, tls_version))
    port = srv.port
    async with Pool(client_context(ca, tls_version), require_resumption=True) as pool:
        assert await connect_once(pool, port) is False  # nothing cached yet: allowed
        await srv.close()
        srv = await start_server(server_context(cert, tls_version), port=port)
        try:
            with pytest.raises(ResumptionRejected, match=f"127.0.0.1:{port}"):
                await pool.acquire(HOST, port, server_hostname=NAME)
            # The refused session is gone and the new one was cached: the retry resumes.
            assert await connect_once(pool, port) is True
            stats = pool.stats()
        finally:
            await srv.close()
    assert (stats.rejected_sessions, stats.in_use, stats.connecting) == (1, 0, 0)


async def test_burst_after_warm_up_resumes(client_ctx, server: Server, tls_version) -> None:
    # Each TLS 1.3 ticket is used once and each connection yields one, so the cache holds as
    # many tickets as connections came back (up to 8 per endpoint): after a first burst of 8,
    # a second burst of 8 new connections resumes. TLS 1.2 sessions are reusable.
    async def burst() -> list[bool]:
        return list(await asyncio.gather(*(connect_once(pool, server.port) for _ in range(8))))

    async with Pool(client_ctx) as pool:
        await burst()
        assert pool.stats().cache_size == (8 if tls_version == "TLSv1.3" else 1)
        results = await burst()
    assert sum(results) >= 7, results


async def test_sequential_reconnects_keep_one_tls13_ticket(ca, cert) -> None:
    # A server that issues one ticket per handshake (OpenSSL-based ones issue 2 after a full
    # handshake, and 1 after a resumption).
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=1)) as srv,
        Pool(client_context(ca, "TLSv1.3")) as pool,
    ):
        for _ in range(5):
            await connect_once(pool, srv.port)
        # Each resumption took one ticket and brought one back.
        assert pool.stats().cache_size == 1


async def test_tls13_tickets_are_single_use_unless_reuse_allowed(ca, cert) -> None:
    async with running_server(server_context(cert, "TLSv1.3", num_tickets=1)) as srv:
        ctx = client_context(ca, "TLSv1.3")
        async with Pool(ctx) as pool:
            await connect_once(pool, srv.port)  # one ticket cached
            a = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            b = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            assert (a.session_reused, b.session_reused) == (True, False)  # a took the ticket
            await a.aclose()
            await b.aclose()
        cache = MemorySessionCache(reuse_tls13_tickets=True)
        async with Pool(ctx, session_cache=cache) as pool:
            await connect_once(pool, srv.port)
            a = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            b = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            assert (a.session_reused, b.session_reused) == (True, True)
            await a.aclose()
            await b.aclose()


async def test_session_ttl_expiry(client_ctx, server: Server) -> None:
    cache = MemorySessionCache(ttl=0.3)
    async with Pool(client_ctx, session_cache=cache) as pool:
        await connect_once(pool, server.port)
        stored = pool.stats().cache_size
        await asyncio.sleep(0.4)
        assert await connect_once(pool, server.port) is False
        assert pool.stats().expired == stored >= 1


async def test_handshake_outcomes_are_logged(client_ctx, server, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiotlspool"):
        async with Pool(client_ctx) as pool:
            await connect_once(pool, server.port)
            await connect_once(pool, server.port)
    messages = [r.getMessage() for r in caplog.records if r.name == "aiotlspool"]
    assert any(m.startswith("full handshake to 127.0.0.1") for m in messages), messages
    assert any(m.startswith("resumed handshake to 127.0.0.1") for m in messages), messages


async def test_shared_cache_between_pools_with_same_context(ca, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        ctx = client_context(ca, tls_version)
        cache = MemorySessionCache()
        async with Pool(ctx, session_cache=cache) as first:
            await connect_once(first, srv.port)
        async with Pool(ctx, session_cache=cache) as second:
            assert await connect_once(second, srv.port) is True
