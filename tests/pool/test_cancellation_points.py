"""Cancellation landed deterministically at each await point of the pool.

tests/pool/test_cancellation.py cancels at the points a plain server can reach. Here the fault proxy
(tests/support/faultproxy.py) holds a handshake at a chosen byte, a saturated listener holds a TCP
connect, and a session cache whose calls wait on an Event holds the pool inside its own cache
calls: while looking a session up, storing one, dropping a refused one, and capturing one at
release or close. After each cancellation: no slot is held, the limits held throughout, and the
open file descriptors are back to the baseline.

Also regression tests for aiohttp #4936 (the limit exceeded through a check-then-use race) and
a cross-endpoint variant of aiohttp #9670 (a cancelled waiter swallowing the wake-up).
"""

from __future__ import annotations

import asyncio
import gc
import random
import ssl
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trustme

from aiotlspool import CachedSession, MemorySessionCache, Pool, PoolClosed, PoolTimeout, SessionKey

from ..support.faultproxy import FaultProxy, SaturatedListener
from ..support.helpers import (
    HOST,
    NAME,
    assert_no_slots_held,
    connect_once,
    roundtrip,
    tls13_sessions_stored,
    wait_for,
)
from ..support.servers import (
    Handler,
    Server,
    client_context,
    echo,
    fd_baseline,
    running_server,
    server_context,
    settle_fds,
    start_server,
)


class GatedCache(MemorySessionCache):
    """The default cache, except that the calls named in ``block`` wait for ``gate``.

    ``inside[name]`` counts the callers waiting in each call right now, and ``keys`` records
    the key of every call, so a test can see where the pool is suspended and for which endpoint.
    """

    def __init__(self, *block: str) -> None:
        super().__init__()
        self.block = set(block)
        self.gate = asyncio.Event()
        self.inside: Counter[str] = Counter()
        self.keys: list[tuple[str, SessionKey]] = []

    async def _pass(self, call: str, key: SessionKey) -> None:
        self.keys.append((call, key))
        if call in self.block:
            self.inside[call] += 1
            try:
                await self.gate.wait()
            finally:
                self.inside[call] -= 1

    async def get(self, key: SessionKey) -> CachedSession | None:
        await self._pass("get", key)
        return await super().get(key)

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        await self._pass("put", key)
        await super().put(key, session)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        await self._pass("invalidate", key)
        await super().invalidate(key, session)


@asynccontextmanager
async def sampled(pool: Pool, limit: int) -> AsyncIterator[list[int]]:
    """Sample ``in_use + connecting`` on every loop iteration; fail if it ever exceeds
    ``limit``. Yields a one-element list holding the peak."""
    peak = [0]

    async def sample() -> None:
        while True:
            stats = pool.stats()
            peak[0] = max(peak[0], stats.in_use + stats.connecting)
            assert stats.in_use + stats.connecting <= limit, stats
            await asyncio.sleep(0)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert peak[0] <= limit


def syn_sent_to(port: int) -> int:
    """How many sockets of this network namespace are in SYN_SENT towards 127.0.0.1:port."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "02":  # TCP_SYN_SENT
                count += 1
    return count


# --- the connect path ------------------------------------------------------------------------


async def test_cancel_inside_tcp_connect_frees_the_slot(
    client_ctx: ssl.SSLContext, server: Server
) -> None:
    async with SaturatedListener() as listener:
        baseline = await fd_baseline()
        already = syn_sent_to(listener.port)  # the listener's own filler
        async with Pool(client_ctx, max_connections=1) as pool:
            task = asyncio.create_task(pool.acquire(HOST, listener.port, server_hostname=NAME))
            await wait_for(lambda: syn_sent_to(listener.port) == already + 1)
            assert pool.stats().connecting == 1  # our SYN is unanswered: inside the connect
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert_no_slots_held(pool, idle=0)
            assert syn_sent_to(listener.port) == already  # the half-open socket was closed
            # The only slot is free again at once.
            async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
                await roundtrip(conn)
        assert await settle_fds(baseline) <= baseline


@pytest.mark.parametrize("nbytes", [0, 60], ids=["awaiting-server-hello", "mid-server-hello"])
async def test_cancel_inside_tls_handshake_frees_slot_and_socket(
    client_ctx: ssl.SSLContext, server: Server, nbytes: int
) -> None:
    async with FaultProxy(server.port) as proxy:
        baseline = await fd_baseline()
        async with Pool(client_ctx, max_connections=1) as pool:
            proxy.stall_after(nbytes)
            task = asyncio.create_task(pool.acquire(HOST, proxy.port, server_hostname=NAME))
            # The ClientHello went out and exactly `nbytes` of the server's reply came back.
            await proxy.wait_until(
                lambda: (
                    bool(proxy.links)
                    and proxy.links[0].bytes_up > 0
                    and proxy.links[0].forwarded_down == nbytes
                    and proxy.links[0].bytes_down > nbytes
                )
            )
            assert pool.stats().connecting == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stats = pool.stats()
            assert_no_slots_held(pool, idle=0)
            assert (stats.connections_opened, stats.sessions_stored, stats.cache_size) == (0, 0, 0)
            await proxy.wait_until(lambda: not proxy.open_links)  # our side hung up
            proxy.heal()
            assert await connect_once(pool, proxy.port) is False  # the slot works again
    assert server.handshakes == 1  # only the last one completed
    assert await settle_fds(baseline) <= baseline


async def test_cancel_while_looking_up_a_session_opens_no_socket(
    client_ctx: ssl.SSLContext, server: Server
) -> None:
    baseline = await fd_baseline()
    cache = GatedCache("get")
    async with Pool(client_ctx, session_cache=cache, max_connections=1) as pool:
        task = asyncio.create_task(pool.acquire(HOST, server.port, server_hostname=NAME))
        await wait_for(lambda: cache.inside["get"] == 1)
        assert pool.stats().connecting == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_no_slots_held(pool, idle=0)
        assert server.handshakes == 0
        cache.gate.set()
        assert await connect_once(pool, server.port) is False
    assert await settle_fds(baseline) <= baseline


async def test_acquire_timeout_while_looking_up_a_session_leaks_nothing(
    client_ctx: ssl.SSLContext, server: Server
) -> None:
    # asyncpg #467 at another await point: the deadline expires inside a cache call.
    cache = GatedCache("get")
    async with Pool(client_ctx, session_cache=cache, acquire_timeout=0.1) as pool:
        with pytest.raises(PoolTimeout, match=f"127.0.0.1:{server.port}"):
            await pool.acquire(HOST, server.port, server_hostname=NAME)
        assert_no_slots_held(pool, idle=0)
        assert cache.inside["get"] == 0


@pytest.fixture
def tls12(ca: trustme.CA, cert: trustme.LeafCert) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Client and server contexts for TLS 1.2, where the session is stored inside connect."""
    return client_context(ca, "TLSv1.2"), server_context(cert, "TLSv1.2")


async def test_cancel_while_storing_the_session_inside_connect_aborts_the_socket(
    tls12: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server_ctx = tls12
    async with running_server(server_ctx) as srv:
        baseline = await fd_baseline()
        cache = GatedCache("put")
        async with Pool(client, session_cache=cache, max_connections=1) as pool:
            # A socket nobody closed would still be closed once its StreamWriter is garbage
            # (StreamWriter.__del__, with a ResourceWarning): keep the collector out of it and
            # record those warnings, so that only an explicit close passes.
            gc.disable()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ResourceWarning)
                    task = asyncio.create_task(pool.acquire(HOST, srv.port, server_hostname=NAME))
                    await wait_for(lambda: cache.inside["put"] == 1)
                    assert pool.stats().connecting == 1  # handshake done, not yet handed out
                    task.cancel()
                    results = await asyncio.gather(task, return_exceptions=True)
                    assert isinstance(results[0], asyncio.CancelledError)
                    fds = await settle_fds(baseline, timeout=1)
            finally:
                gc.enable()
            assert fds <= baseline
            assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
            assert_no_slots_held(pool, idle=0)
            assert (pool.stats().sessions_stored, pool.stats().cache_size) == (0, 0)


async def test_connection_aborted_inside_connect_is_counted_as_closed(
    tls12: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server_ctx = tls12
    async with running_server(server_ctx) as srv:
        cache = GatedCache("put")
        pool = Pool(client, session_cache=cache)
        task = asyncio.create_task(pool.acquire(HOST, srv.port, server_hostname=NAME))
        await wait_for(lambda: cache.inside["put"] == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.aclose()
        stats = pool.stats()
        assert stats.connections_opened == 1
        assert stats.connections_closed == stats.connections_opened


async def test_cancel_while_dropping_a_refused_session_inside_connect(
    cert: trustme.LeafCert, client_ctx: ssl.SSLContext, tls_version: str
) -> None:
    srv = await start_server(server_context(cert, tls_version))
    port = srv.port
    cache = GatedCache()
    async with Pool(client_ctx, session_cache=cache, max_connections=1) as pool:
        assert await connect_once(pool, port) is False
        await srv.close()
        # Same port, new ticket keys and session cache: the cached session will be refused.
        srv = await start_server(server_context(cert, tls_version), port=port)
        baseline = await fd_baseline()
        try:
            cache.block = {"invalidate"}
            task = asyncio.create_task(pool.acquire(HOST, port, server_hostname=NAME))
            await wait_for(lambda: cache.inside["invalidate"] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert_no_slots_held(pool, idle=0)
            assert pool.stats().rejected_sessions == 1
            assert await settle_fds(baseline) <= baseline
            cache.gate.set()
            assert await connect_once(pool, port) is False  # nothing left to refuse
            assert await connect_once(pool, port) is True
        finally:
            await srv.close()


# --- release and close ---------------------------------------------------------------------


# The stdlib engine captures a TLS 1.3 session at release; the native engine stores each ticket
# when it arrives, outside release (tests/pool/test_capture.py).
@pytest.mark.engines("stdlib")
async def test_cancelled_release_still_stores_the_tls13_session(
    ca: trustme.CA, cert: trustme.LeafCert
) -> None:
    # TLS 1.3: the ticket follows the handshake, so the session is captured at release (after
    # data was read). Cancelling the release must neither lose the connection nor the session.
    async with running_server(server_context(cert, "TLSv1.3")) as srv:
        cache = GatedCache()
        async with Pool(client_context(ca, "TLSv1.3"), session_cache=cache) as pool:
            conn = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            await roundtrip(conn)
            cache.block = {"put"}
            release = asyncio.create_task(pool.release(conn))
            await wait_for(lambda: cache.inside["put"] == 1)
            release.cancel()
            with pytest.raises(asyncio.CancelledError):
                await release
            assert_no_slots_held(pool, idle=1)  # pooled before the capture began
            cache.gate.set()
            await wait_for(lambda: pool.stats().sessions_stored == 1)
            held = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            assert held is conn  # the pooled one, no handshake ...
            assert await connect_once(pool, srv.port) is True  # ... so this one resumes
            await pool.release(held)


@pytest.fixture
async def silent_close_proxy(server: Server) -> AsyncIterator[FaultProxy]:
    """A proxy whose open connections will stop delivering the server's bytes, so that a
    close waits the whole close_timeout for the server's close_notify."""
    async with FaultProxy(server.port) as proxy:
        yield proxy


async def test_cancelled_release_still_closes_an_expired_connection(
    client_ctx: ssl.SSLContext, silent_close_proxy: FaultProxy
) -> None:
    proxy = silent_close_proxy
    baseline = await fd_baseline()
    async with Pool(client_ctx, max_lifetime=0.05, close_timeout=0.5, max_connections=1) as pool:
        conn = await pool.acquire(HOST, proxy.port, server_hostname=NAME)
        await roundtrip(conn)
        await asyncio.sleep(0.06)  # past max_lifetime: release closes instead of pooling
        proxy.half_open("down")
        release = asyncio.create_task(pool.release(conn))
        await wait_for(lambda: pool.stats().connections_closed == 1)  # the close has begun
        release.cancel()
        with pytest.raises(asyncio.CancelledError):
            await release
        assert_no_slots_held(pool, idle=0)  # the slot is free before the socket is
        assert conn.closed
        proxy.heal()
        started = asyncio.get_running_loop().time()
        await connect_once(pool, proxy.port)
        assert asyncio.get_running_loop().time() - started < 0.4  # not after the old close
    assert await settle_fds(baseline) <= baseline


async def test_cancelled_connection_aclose_frees_the_slot_at_once_and_still_captures(
    client_ctx: ssl.SSLContext,
    silent_close_proxy: FaultProxy,
    tls_version: str,
    session_engine: str,
) -> None:
    proxy = silent_close_proxy
    baseline = await fd_baseline()
    async with Pool(client_ctx, close_timeout=0.5, max_connections=1) as pool:
        conn = await pool.acquire(HOST, proxy.port, server_hostname=NAME)
        await roundtrip(conn)
        proxy.half_open("down")
        closing = asyncio.create_task(conn.aclose())
        await asyncio.sleep(0.02)
        assert not closing.done()  # waiting for a close_notify that will not come
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert_no_slots_held(pool, idle=0)
        proxy.heal()
        started = asyncio.get_running_loop().time()
        await connect_once(pool, proxy.port)
        assert asyncio.get_running_loop().time() - started < 0.4  # not after the old close
        # The cancelled close went on: once close_timeout is over, the TLS 1.3 session of
        # the old connection is captured (TLS 1.2 was at connect; the second one resumed it;
        # the native engine stored each TLS 1.3 ticket as it arrived).
        stored = (
            1
            if tls_version == "TLSv1.2"
            else tls13_sessions_stored(session_engine, full=1, resumed=1)
        )
        await wait_for(lambda: pool.stats().sessions_stored == stored)
    assert await settle_fds(baseline) <= baseline


async def test_cancelled_pool_aclose_goes_on_and_finishes_on_release(
    client_ctx: ssl.SSLContext, server: Server
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx)
    busy = await pool.acquire(HOST, server.port, server_hostname=NAME)
    closing = asyncio.create_task(pool.aclose(timeout=5))
    await asyncio.sleep(0.02)
    assert not closing.done()  # waiting for `busy` to come back
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert pool.closed
    with pytest.raises(PoolClosed):
        await pool.acquire(HOST, server.port, server_hostname=NAME)
    await roundtrip(busy)  # still usable by its holder
    await pool.release(busy)  # the close that is still under way takes it
    await asyncio.wait_for(pool.aclose(), 1)  # and finishes promptly
    assert busy.closed
    assert_no_slots_held(pool, idle=0)
    assert await settle_fds(baseline) <= baseline


# --- every step, and the races of other pools --------------------------------------------------


async def test_cancel_at_every_loop_step_of_acquire_use_release(
    client_ctx: ssl.SSLContext, server: Server
) -> None:
    # Three tasks share two slots of a fresh pool (sessions cached across rounds, so the
    # connects resume); the middle one is cancelled after `steps` loop iterations, for every
    # `steps` from 0 until a round ends before the cancellation lands. That walks the
    # cancellation through every await point of the connect, the handshake, the wait for a
    # slot, the use and the release, whatever their number on this loop.
    baseline = await fd_baseline()
    cache = MemorySessionCache()
    cancelled_rounds = 0

    async def use(pool: Pool) -> None:
        async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
            await roundtrip(conn)

    for steps in range(400):
        async with (
            Pool(client_ctx, session_cache=cache, max_connections=2) as pool,
            sampled(pool, 2),
        ):
            tasks = [asyncio.create_task(use(pool)) for _ in range(3)]
            for _ in range(steps):
                await asyncio.sleep(0)
            victim_done = tasks[1].done()
            tasks[1].cancel()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
            assert results[0] is None and results[2] is None, (steps, results)
            assert_no_slots_held(pool)
        if victim_done:
            break
        cancelled_rounds += 1
    # The walk crossed the whole operation: cancelled at every step, then finished first.
    assert victim_done and cancelled_rounds >= 5, cancelled_rounds
    assert await settle_fds(baseline) <= baseline


async def test_cancelled_waiter_of_one_endpoint_does_not_swallow_another_endpoints_wake_up(
    client_ctx: ssl.SSLContext, cert: trustme.LeafCert, tls_version: str
) -> None:
    # aiohttp #9670 across endpoints: the global limit is reached by endpoint a; a waiter for a
    # is cancelled, and the freed capacity must still reach the live waiter for b.
    async with running_server(server_context(cert, tls_version)) as a:
        b = await start_server(server_context(cert, tls_version))
        async with Pool(client_ctx, max_connections=1) as pool:
            held = await pool.acquire(HOST, a.port, server_hostname=NAME)
            doomed = asyncio.create_task(pool.acquire(HOST, a.port, server_hostname=NAME))
            live = asyncio.create_task(pool.acquire(HOST, b.port, server_hostname=NAME))
            await wait_for(lambda: pool.stats().waiting == 2)
            doomed.cancel()
            await pool.release(held)  # a's idle connection is evicted to make room for b
            conn = await asyncio.wait_for(live, 2)
            assert conn.endpoint.port == b.port
            await pool.release(conn)
            await asyncio.gather(doomed, return_exceptions=True)
            assert_no_slots_held(pool, idle=1)
        await b.close()


async def test_limits_hold_while_every_connect_is_suspended_after_the_check(
    client_ctx: ssl.SSLContext, cert: trustme.LeafCert, tls_version: str
) -> None:
    # aiohttp #4936: the limit was checked, then an await (DNS) let every other task pass the
    # same check before any connection existed. Here each connect is held at its first await
    # (the session lookup) until all 30 acquires have run: exactly the limits are connecting.
    servers = [await start_server(server_context(cert, tls_version)) for _ in range(3)]
    cache = GatedCache("get")
    try:
        async with (
            Pool(
                client_ctx, session_cache=cache, max_connections=4, max_connections_per_endpoint=2
            ) as pool,
            sampled(pool, 4) as peak,
        ):

            async def worker(port: int) -> None:
                conn = await pool.acquire(HOST, port, server_hostname=NAME)
                await pool.release(conn)

            tasks = [asyncio.create_task(worker(servers[i % 3].port)) for i in range(30)]
            await wait_for(lambda: pool.stats().waiting + cache.inside["get"] == 30)
            for _ in range(20):
                await asyncio.sleep(0)  # give any over-eager task its chance to slip through
            stats = pool.stats()
            assert (cache.inside["get"], stats.connecting, stats.waiting) == (4, 4, 26), stats
            per_endpoint = Counter(key.port for call, key in cache.keys if call == "get")
            assert max(per_endpoint.values()) <= 2, per_endpoint
            cache.gate.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert peak[0] == 4
            assert_no_slots_held(pool)
    finally:
        for srv in servers:
            await srv.close()


async def test_limits_hold_under_concurrent_acquires_cancellations_and_evictions(
    client_ctx: ssl.SSLContext, cert: trustme.LeafCert, tls_version: str
) -> None:
    # aiohttp #4936, stochastically: 400 tasks on 3 endpoints through max_connections=4 and 2
    # per endpoint; random hold times, some cancelled at random moments, some closing their
    # connection instead of releasing it. Sampled on every loop iteration by `sampled`, and
    # by every task for its own endpoint.
    rng = random.Random(4936)
    live: Counter[int] = Counter()  # per server: connections open on the server side
    peak_server: Counter[int] = Counter()

    def counting(index: int) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            live[index] += 1
            peak_server[index] = max(peak_server[index], live[index])
            try:
                await echo(reader, writer)
            finally:
                live[index] -= 1

        return handler

    servers = [await start_server(server_context(cert, tls_version), counting(i)) for i in range(3)]
    baseline = await fd_baseline()
    holders: Counter[int] = Counter()
    peak_holders: Counter[int] = Counter()
    try:
        async with Pool(client_ctx, max_connections=4, max_connections_per_endpoint=2) as pool:
            async with sampled(pool, 4) as peak:

                async def worker(i: int) -> None:
                    which = rng.randrange(3)
                    port = servers[which].port
                    await asyncio.sleep(rng.random() * 0.05)
                    conn = await pool.acquire(HOST, port, server_hostname=NAME)
                    holders[which] += 1
                    peak_holders[which] = max(peak_holders[which], holders[which])
                    try:
                        assert holders[which] <= 2 and sum(holders.values()) <= 4
                        await roundtrip(conn)
                        await asyncio.sleep(rng.random() * 0.003)
                    finally:
                        holders[which] -= 1
                        if i % 5 == 0:
                            await conn.aclose()
                        else:
                            await pool.release(conn)

                tasks = [asyncio.create_task(worker(i)) for i in range(400)]
                for task in rng.sample(tasks, 80):
                    await asyncio.sleep(rng.random() * 0.002)
                    task.cancel()
                results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert all(isinstance(e, asyncio.CancelledError) for e in errors), errors
            assert 0 < len(errors) <= 80
            assert peak[0] == 4 and max(peak_holders.values()) == 2
            assert_no_slots_held(pool)
        # Closing is not instantaneous: a slot is freed when its close begins. The servers
        # may briefly see a closing connection next to its replacement.
        assert max(peak_server.values()) <= 2 + 2, peak_server
    finally:
        for srv in servers:
            await srv.close()
    assert await settle_fds(baseline) <= baseline
