"""Limits, ordering, reuse and expiry of pooled connections."""

from __future__ import annotations

import asyncio

import pytest

from aiotlspool import Pool, PoolTimeout

from ..support.helpers import HOST, NAME, roundtrip
from ..support.servers import (
    Server,
    echo_once_then_close,
    running_server,
    server_context,
    start_server,
)


async def test_limit_never_exceeded_and_waiters_served_in_order(client_ctx, server) -> None:
    order: list[int] = []
    peak = 0
    async with Pool(client_ctx, max_connections=2) as pool:

        async def worker(i: int) -> None:
            nonlocal peak
            async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
                order.append(i)
                stats = pool.stats()
                peak = max(peak, stats.in_use + stats.connecting)
                await roundtrip(conn)
                await asyncio.sleep(0.01)

        tasks = []
        for i in range(10):
            tasks.append(asyncio.create_task(worker(i)))
            await asyncio.sleep(0)  # a definite arrival order
        await asyncio.gather(*tasks)
        stats = pool.stats()
    assert peak == 2
    # The first two connect concurrently and may finish in either order; the rest are FIFO.
    assert sorted(order[:2]) == [0, 1] and order[2:] == list(range(2, 10))
    assert stats.connections_opened == 2


async def test_per_endpoint_limit(client_ctx, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version)) as a:
        b = await start_server(server_context(cert, tls_version))
        async with Pool(client_ctx, max_connections=3, max_connections_per_endpoint=1) as pool:
            held_a = await pool.acquire(HOST, a.port, server_hostname=NAME)
            # A second connection to a must wait; b is not blocked by a's waiter.
            waiting_a = asyncio.create_task(pool.acquire(HOST, a.port, server_hostname=NAME))
            await asyncio.sleep(0.05)
            assert not waiting_a.done() and pool.stats().waiting == 1
            held_b = await pool.acquire(HOST, b.port, server_hostname=NAME)
            await pool.release(held_a)
            assert await waiting_a is held_a  # handed over, not reconnected
            await pool.release(held_a)
            await pool.release(held_b)
        await b.close()


async def test_idle_connections_reused_most_recent_first(client_ctx, server) -> None:
    async with Pool(client_ctx) as pool:
        first = await pool.acquire(HOST, server.port, server_hostname=NAME)
        second = await pool.acquire(HOST, server.port, server_hostname=NAME)
        await pool.release(first)
        await pool.release(second)
        again = await pool.acquire(HOST, server.port, server_hostname=NAME)
        assert again is second
        await pool.release(again)


async def test_global_limit_evicts_idle_connection_of_other_endpoint(client_ctx, cert, tls_version):
    async with running_server(server_context(cert, tls_version)) as a:
        b = await start_server(server_context(cert, tls_version))
        async with Pool(client_ctx, max_connections=1) as pool:
            conn_a = await pool.acquire(HOST, a.port, server_hostname=NAME)
            await pool.release(conn_a)
            conn_b = await pool.acquire(HOST, b.port, server_hostname=NAME)
            assert pool.stats().idle == 0
            await asyncio.sleep(0.05)
            assert conn_a.closed
            await pool.release(conn_b)
        await b.close()


async def test_idle_connection_closed_by_server_is_replaced(client_ctx, cert, tls_version):
    async with (
        running_server(server_context(cert, tls_version), echo_once_then_close) as srv,
        Pool(client_ctx) as pool,
    ):
        async with pool.connection(HOST, srv.port, server_hostname=NAME) as conn:
            await roundtrip(conn)
        await asyncio.sleep(0.1)  # the server closes the idle connection
        async with pool.connection(HOST, srv.port, server_hostname=NAME) as fresh:
            assert fresh is not conn
            await roundtrip(fresh)
            assert fresh.session_reused
        assert pool.stats().connections_opened == 2


async def test_per_endpoint_limit_holds_when_an_idle_connection_is_replaced(
    client_ctx, cert, tls_version
):
    # The replaced connection was the endpoint's only one: the table drops and remakes the
    # endpoint's entry on the way, and the new connection must still count against the limit.
    async with (
        running_server(server_context(cert, tls_version), echo_once_then_close) as srv,
        Pool(client_ctx, max_connections_per_endpoint=1, acquire_timeout=0.2) as pool,
    ):
        async with pool.connection(HOST, srv.port, server_hostname=NAME) as conn:
            await roundtrip(conn)
        await asyncio.sleep(0.1)  # the server closes the idle connection
        fresh = await pool.acquire(HOST, srv.port, server_hostname=NAME)
        assert fresh is not conn
        with pytest.raises(PoolTimeout):
            await pool.acquire(HOST, srv.port, server_hostname=NAME)
        await pool.release(fresh)
        assert pool.stats().connections_opened == 2


async def test_connection_closed_by_server_before_release_is_not_pooled(
    client_ctx, cert, tls_version
):
    async with (
        running_server(server_context(cert, tls_version), echo_once_then_close) as srv,
        Pool(client_ctx) as pool,
    ):
        async with pool.connection(HOST, srv.port, server_hostname=NAME) as conn:
            await roundtrip(conn)
            assert await conn.reader.read() == b""  # the server closed
        assert pool.stats().idle == 0


async def test_idle_timeout_closes_idle_connections(client_ctx, server) -> None:
    async with Pool(client_ctx, idle_timeout=0.1) as pool:
        async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
            await roundtrip(conn)
        assert pool.stats().idle == 1
        await asyncio.sleep(0.3)  # no pool activity: the reaper timer closes it
        assert pool.stats().idle == 0
        assert conn.closed


async def test_max_lifetime_stops_reuse(client_ctx, server) -> None:
    async with Pool(client_ctx, max_lifetime=0.2, idle_timeout=None) as pool:
        async with pool.connection(HOST, server.port, server_hostname=NAME) as first:
            await roundtrip(first)
        async with pool.connection(HOST, server.port, server_hostname=NAME) as again:
            assert again is first
        await asyncio.sleep(0.25)
        async with pool.connection(HOST, server.port, server_hostname=NAME) as later:
            assert later is not first
            assert later.session_reused
        assert first.closed


async def test_acquire_timeout_when_pool_is_full(client_ctx, server) -> None:
    # (0.5 s: the first acquire's full handshake must fit in it on a loaded machine)
    async with Pool(client_ctx, max_connections=1, acquire_timeout=0.5) as pool:
        held = await pool.acquire(HOST, server.port, server_hostname=NAME)
        with pytest.raises(PoolTimeout, match=rf"127\.0\.0\.1:{server.port}.*1/1 connections"):
            await pool.acquire(HOST, server.port, server_hostname=NAME)
        assert pool.stats().waiting == 0
        await pool.release(held)
        # The slot is usable again at once.
        again = await pool.acquire(HOST, server.port, server_hostname=NAME)
        await pool.release(again)


async def test_exception_inside_block_closes_connection(client_ctx, server) -> None:
    async with Pool(client_ctx) as pool:
        with pytest.raises(ZeroDivisionError):
            async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
                1 / 0  # noqa: B018
        assert conn.closed
        assert pool.stats().in_use == pool.stats().idle == 0


async def test_release_misuse_is_reported(client_ctx, server) -> None:
    async with Pool(client_ctx) as pool, Pool(client_ctx) as other:
        conn = await pool.acquire(HOST, server.port, server_hostname=NAME)
        with pytest.raises(ValueError, match="another pool"):
            await other.release(conn)
        await pool.release(conn)
        with pytest.raises(RuntimeError, match="not checked out"):
            await pool.release(conn)


async def test_stats_snapshot(client_ctx, server: Server) -> None:
    async with Pool(client_ctx) as pool:
        conn = await pool.acquire(HOST, server.port, server_hostname=NAME)
        stats = pool.stats()
        assert (stats.in_use, stats.idle, stats.connecting, stats.waiting) == (1, 0, 0, 0)
        await pool.release(conn)
        assert (pool.stats().in_use, pool.stats().idle) == (0, 1)
