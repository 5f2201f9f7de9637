"""Closing the pool: idle connections now, connections in use when released or at a timeout."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aiotlspool import Pool, PoolClosed

from ..support.helpers import HOST, NAME, roundtrip
from ..support.servers import fd_baseline, running_server, settle_fds


async def test_aclose_waits_for_connections_in_use(client_ctx, server) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx)
    idle = await pool.acquire(HOST, server.port, server_hostname=NAME)
    busy = await pool.acquire(HOST, server.port, server_hostname=NAME)
    await pool.release(idle)
    closing = asyncio.create_task(pool.aclose(timeout=5))
    await asyncio.sleep(0.05)
    assert idle.closed and not busy.closed and not closing.done()
    with pytest.raises(PoolClosed):
        await pool.acquire(HOST, server.port, server_hostname=NAME)
    await roundtrip(busy)  # still usable until released
    await pool.release(busy)
    await asyncio.wait_for(closing, 2)
    assert busy.closed
    assert await settle_fds(baseline) <= baseline


async def test_aclose_timeout_closes_connections_still_in_use(client_ctx, server, caplog) -> None:
    pool = Pool(client_ctx)
    busy = await pool.acquire(HOST, server.port, server_hostname=NAME)
    with caplog.at_level(logging.WARNING, logger="aiotlspool"):
        await asyncio.wait_for(pool.aclose(timeout=0.1), 2)
    assert "still in use" in caplog.text
    await asyncio.sleep(0.05)
    assert busy.closed
    await pool.release(busy)  # late release: nothing to do, no error
    assert pool.stats().in_use == 0


async def test_waiters_fail_with_pool_closed(client_ctx, server) -> None:
    pool = Pool(client_ctx, max_connections=1)
    held = await pool.acquire(HOST, server.port, server_hostname=NAME)
    waiter = asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
    await asyncio.sleep(0.02)
    closing = asyncio.create_task(pool.aclose())
    with pytest.raises(PoolClosed, match="closed while waiting"):
        await waiter
    await pool.release(held)
    await closing


async def test_aclose_is_idempotent_and_cancel_safe(client_ctx, server) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx)
    async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
        await roundtrip(conn)
    first = asyncio.create_task(pool.aclose())
    await asyncio.sleep(0)
    first.cancel()  # the close goes on in the background
    await asyncio.gather(first, return_exceptions=True)
    await pool.aclose()
    await pool.aclose()
    assert conn.closed
    assert await settle_fds(baseline) <= baseline


async def test_session_captured_when_pool_closes_idle_tls13_connection(
    ca, cert, session_engine
) -> None:
    # Released without any read, the TLS 1.3 ticket may not have been seen yet by the stdlib
    # engine: the pool captures it after the close_notify exchange when it closes the idle
    # connection. (The native engine stored each ticket when it arrived.)
    from aiotlspool import MemorySessionCache

    from ..support.servers import client_context, server_context

    async with running_server(server_context(cert, "TLSv1.3", num_tickets=1)) as srv:
        ctx = client_context(ca, "TLSv1.3")
        cache = MemorySessionCache()
        async with Pool(ctx, session_cache=cache) as pool:
            conn = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            await pool.release(conn)
            if session_engine == "stdlib":
                assert pool.stats().sessions_stored == 0  # not yet: no data seen
        assert cache.size() == 1
        async with Pool(ctx, session_cache=cache) as pool:
            conn = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            assert conn.session_reused
            await pool.release(conn)


async def test_unclosed_pool_with_open_connections_warns(client_ctx, server) -> None:
    import gc

    pool = Pool(client_ctx, idle_timeout=None)  # (an expiry timer would keep the pool alive)
    conn = await pool.acquire(HOST, server.port, server_hostname=NAME)
    await pool.release(conn)  # idle in the pool; the pool and it now only reference each other
    transport = conn.writer.transport
    del conn
    del pool
    with pytest.warns(ResourceWarning, match="unclosed <Pool open"):
        gc.collect()
    transport.abort()
