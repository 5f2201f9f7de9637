"""Cancelling an acquire at any point leaks no slot and no socket.

Includes regression tests for failures known from other pools: httpcore #1093, aiohttp #9670,
asyncpg #467.
"""

from __future__ import annotations

import asyncio

import pytest

from aiotlspool import Pool, PoolTimeout

from ..support.helpers import HOST, NAME, assert_no_slots_held, roundtrip
from ..support.servers import fd_baseline, never_answer, running_server, settle_fds


async def test_cancel_while_waiting_for_a_slot(client_ctx, server) -> None:
    async with Pool(client_ctx, max_connections=1) as pool:
        held = await pool.acquire(HOST, server.port, server_hostname=NAME)
        waiter = asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
        await asyncio.sleep(0.02)
        assert pool.stats().waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.stats().waiting == 0
        await pool.release(held)
        assert_no_slots_held(pool, idle=1)


@pytest.mark.parametrize("phase_delay", [0.0, 0.05])
async def test_cancel_during_connect_and_handshake(client_ctx, phase_delay: float) -> None:
    # Against a peer that accepts TCP and never answers, the acquire sits in the TLS
    # handshake (after 0.05 s) or still in the TCP connect (0.0 s) when it is cancelled.
    async with running_server(None, never_answer) as silent:
        baseline = await fd_baseline()
        async with Pool(client_ctx) as pool:
            task = asyncio.create_task(pool.acquire(HOST, silent.port, server_hostname=NAME))
            await asyncio.sleep(phase_delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert_no_slots_held(pool, idle=0)
            assert pool.stats().connections_opened == 0
    assert await settle_fds(baseline) <= baseline


async def test_cancel_after_idle_connection_was_assigned(client_ctx, server) -> None:
    # aiohttp #9670 / httpcore #1093: the waiter is handed a connection and cancelled before
    # it runs. The connection must go back to the pool and the next acquire must get it.
    async with Pool(client_ctx, max_connections=1) as pool:
        held = await pool.acquire(HOST, server.port, server_hostname=NAME)
        waiter = asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
        await asyncio.sleep(0.02)
        # The release assigns `held` to the waiter in its first step; the waiter is cancelled
        # right after that step, before it can run.
        release = asyncio.create_task(pool.release(held))
        await asyncio.sleep(0)
        waiter.cancel()
        await release
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert_no_slots_held(pool, idle=1)
        again = await asyncio.wait_for(
            pool.acquire(HOST, server.port, server_hostname=NAME), timeout=2
        )
        assert again is held
        await pool.release(again)


async def test_cancel_after_new_slot_was_assigned(client_ctx, server) -> None:
    # httpcore #1093: a slot reserved for a new connection, cancelled before connecting.
    async with Pool(client_ctx, max_connections=1) as pool:
        held = await pool.acquire(HOST, server.port, server_hostname=NAME)
        waiter = asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
        await asyncio.sleep(0.02)
        close = asyncio.create_task(held.aclose())  # frees the slot: the waiter gets it
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await close
        assert_no_slots_held(pool)
        conn = await asyncio.wait_for(
            pool.acquire(HOST, server.port, server_hostname=NAME), timeout=2
        )
        await pool.release(conn)


async def test_acquire_timeout_during_connect_leaks_nothing(client_ctx) -> None:
    # asyncpg #467: a timeout while connecting must not leave a connection behind.
    async with running_server(None, never_answer) as silent:
        baseline = await fd_baseline()
        async with Pool(client_ctx, acquire_timeout=0.2, connect_timeout=5) as pool:
            with pytest.raises(PoolTimeout):
                await pool.acquire(HOST, silent.port, server_hostname=NAME)
            assert_no_slots_held(pool, idle=0)
    assert await settle_fds(baseline) <= baseline


async def test_cancelled_waiters_do_not_swallow_wake_ups(client_ctx, server) -> None:
    # aiohttp #9670: with waiters cancelled in between, a released slot still reaches the
    # next live waiter (no deadlock).
    async with Pool(client_ctx, max_connections=1) as pool:
        held = await pool.acquire(HOST, server.port, server_hostname=NAME)
        doomed = [
            asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
            for _ in range(3)
        ]
        live = asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
        await asyncio.sleep(0.02)
        for task in doomed:
            task.cancel()
        await pool.release(held)
        conn = await asyncio.wait_for(live, timeout=2)
        assert conn is held
        await pool.release(conn)
        await asyncio.gather(*doomed, return_exceptions=True)
        assert_no_slots_held(pool, idle=1)


async def test_cancel_inside_block_closes_connection_and_frees_slot(client_ctx, server) -> None:
    baseline = await fd_baseline()
    async with Pool(client_ctx) as pool:

        async def use() -> None:
            async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
                await roundtrip(conn)
                await asyncio.sleep(10)

        task = asyncio.create_task(use())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_no_slots_held(pool, idle=0)
    assert await settle_fds(baseline) <= baseline


async def test_cancelled_release_still_closes(client_ctx, server) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx)
    conn = await pool.acquire(HOST, server.port, server_hostname=NAME)
    closing = asyncio.create_task(pool.aclose())
    await asyncio.sleep(0)
    release = asyncio.create_task(pool.release(conn))  # the pool is closing: release closes
    await asyncio.sleep(0)
    release.cancel()
    await asyncio.gather(release, return_exceptions=True)
    await closing
    assert conn.closed
    assert await settle_fds(baseline) <= baseline


async def test_many_cancellations_keep_the_limit(client_ctx, server) -> None:
    async with Pool(client_ctx, max_connections=3) as pool:
        peak = 0

        async def worker(i: int) -> None:
            nonlocal peak
            async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
                stats = pool.stats()
                peak = max(peak, stats.in_use + stats.connecting)
                await roundtrip(conn)
                await asyncio.sleep(0.005 * (i % 3))

        tasks = [asyncio.create_task(worker(i)) for i in range(60)]
        for i, task in enumerate(tasks):
            if i % 4 == 0:
                await asyncio.sleep(0.002)
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= 3
        assert_no_slots_held(pool)
