"""Network faults between the pool and a real TLS server, injected by tests/support/faultproxy.py.

Each fault ends in one of two ways: a transparent reconnect (the caller gets a working
connection), or a clear exception naming the endpoint. Either way, afterwards no slot is held,
no file descriptor is left open, and no session from a failed handshake was cached.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from aiotlspool import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    Pool,
    PoolStats,
    TLSHandshakeError,
)

from ..support.faultproxy import Direction, FaultProxy
from ..support.helpers import HOST, NAME, connect_once, roundtrip, wait_for
from ..support.servers import (
    Server,
    fd_baseline,
    running_server,
    server_context,
    settle_fds,
    start_server,
)


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(server.port) as p:
        yield p


async def warm_up(pool: Pool, proxy: FaultProxy) -> PoolStats:
    """One good connection through the proxy, then closed: its sessions are cached (one, or
    with the native engine every TLS 1.3 ticket the server sent), none idle."""
    assert await connect_once(pool, proxy.port) is False
    stats = pool.stats()
    assert stats.sessions_stored == stats.cache_size >= 1, stats
    assert stats.idle == 0, stats
    return stats


async def assert_nothing_leaked(pool: Pool, before: PoolStats, baseline: int) -> None:
    """No slot held, no session stored since ``before``, every socket closed."""
    stats = pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats
    assert stats.sessions_stored == before.sessions_stored, stats
    # An offered session may have been used up (TLS 1.3) or dropped; never one added.
    assert stats.cache_size <= before.cache_size, stats
    if stats.idle == 0:
        # Checked while the pool is still open: a socket it lost track of shows here.
        assert await settle_fds(baseline) <= baseline
    await pool.aclose()
    assert await settle_fds(baseline) <= baseline


def assert_names_endpoint(exc: ConnectError, proxy: FaultProxy) -> None:
    assert f"127.0.0.1:{proxy.port}" in str(exc)
    assert (exc.endpoint.port, exc.endpoint.server_hostname) == (proxy.port, NAME)


# --- faults that end in a clear error ---------------------------------------------------------


@pytest.mark.parametrize("nbytes", [0, 60], ids=["before-server-hello", "mid-server-hello"])
async def test_reset_during_handshake_is_retried_then_reported(
    client_ctx: ssl.SSLContext, proxy: FaultProxy, nbytes: int
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx, connect_retries=2, retry_backoff=0.01)
    before = await warm_up(pool, proxy)
    proxy.reset_after(nbytes)
    with pytest.raises(TLSHandshakeError, match="closed the connection during the TLS") as info:
        await pool.acquire(HOST, proxy.port, server_hostname=NAME)
    assert_names_endpoint(info.value, proxy)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert proxy.accepted == 1 + 3  # the warm-up, then the first attempt and two retries
    assert pool.stats().connect_errors == 1
    await assert_nothing_leaked(pool, before, baseline)


@pytest.mark.parametrize("nbytes", [0, 60], ids=["before-server-hello", "mid-server-hello"])
async def test_stall_mid_handshake_times_out_naming_the_endpoint(
    client_ctx: ssl.SSLContext, proxy: FaultProxy, nbytes: int
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx, connect_timeout=0.2)
    before = await warm_up(pool, proxy)
    proxy.stall_after(nbytes)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectTimeout, match=r"timed out after 0\.2s") as info:
        await pool.acquire(HOST, proxy.port, server_hostname=NAME)
    assert asyncio.get_running_loop().time() - started < 1.5
    assert_names_endpoint(info.value, proxy)
    assert proxy.links[-1].bytes_up > 0  # the ClientHello went out: it stalled mid-handshake
    await assert_nothing_leaked(pool, before, baseline)


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_half_open_during_handshake_times_out(
    client_ctx: ssl.SSLContext, proxy: FaultProxy, direction: Direction
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx, connect_timeout=0.2)
    before = await warm_up(pool, proxy)
    proxy.blackhole(direction)
    with pytest.raises(ConnectTimeout) as info:
        await pool.acquire(HOST, proxy.port, server_hostname=NAME)
    assert_names_endpoint(info.value, proxy)
    await assert_nothing_leaked(pool, before, baseline)


async def test_garbage_instead_of_tls_fails_at_once_without_retry(
    client_ctx: ssl.SSLContext, proxy: FaultProxy
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx, connect_retries=2)
    before = await warm_up(pool, proxy)
    proxy.garbage()
    with pytest.raises(TLSHandshakeError, match=r"TLS handshake with .* failed") as info:
        await pool.acquire(HOST, proxy.port, server_hostname=NAME)
    assert_names_endpoint(info.value, proxy)
    assert proxy.accepted == 1 + 1  # a protocol error is not transient: no retry
    await assert_nothing_leaked(pool, before, baseline)


async def test_upstream_switched_to_certificate_for_another_name_is_refused(
    ca: trustme.CA, client_ctx: ssl.SSLContext, proxy: FaultProxy, tls_version: str
) -> None:
    # Same CA, so only the name is wrong. The cached session (from the right server) is
    # offered to the impostor, which cannot resume it: the full handshake verifies the name.
    async with running_server(
        server_context(ca.issue_cert("other.example"), tls_version)
    ) as impostor:
        baseline = await fd_baseline()
        pool = Pool(client_ctx)
        before = await warm_up(pool, proxy)
        proxy.switch_upstream(impostor.port)
        with pytest.raises(CertificateError, match="did not verify for 'localhost'") as info:
            await pool.acquire(HOST, proxy.port, server_hostname=NAME)
        assert_names_endpoint(info.value, proxy)
        assert (impostor.handshakes, impostor.resumed) == (0, 0)  # it never completed one
        assert pool.stats().connect_errors == 1
        await assert_nothing_leaked(pool, before, baseline)


# --- faults that end in a transparent reconnect -------------------------------------------------


@pytest.mark.parametrize("how", ["rst", "fin"])
async def test_hang_ups_mid_handshake_within_the_retry_budget_are_invisible(
    client_ctx: ssl.SSLContext, proxy: FaultProxy, how: str
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx, connect_retries=2, retry_backoff=0.01)
    await warm_up(pool, proxy)
    if how == "rst":
        proxy.reset_after(60, connections=2)
    else:
        proxy.close_after(60, connections=2)
    conn = await pool.acquire(HOST, proxy.port, server_hostname=NAME)
    await roundtrip(conn)
    await pool.release(conn)
    stats = pool.stats()
    assert proxy.accepted == 1 + 3
    assert (stats.connect_errors, stats.connections_opened, stats.idle) == (0, 2, 1)
    await pool.aclose()
    assert await settle_fds(baseline) <= baseline


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_idle_connection_dropped_by_the_server_is_replaced_transparently(
    client_ctx: ssl.SSLContext, proxy: FaultProxy, reset: bool
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx)
    async with pool.connection(HOST, proxy.port, server_hostname=NAME) as first:
        await roundtrip(first)
    assert pool.stats().idle == 1
    assert proxy.close_idle(reset=reset) == 1
    await proxy.wait_until(lambda: not proxy.open_links)  # the FIN/RST is on its way
    async with pool.connection(HOST, proxy.port, server_hostname=NAME) as second:
        assert second is not first
        await roundtrip(second)
        assert second.session_reused  # the session outlives the connection
    stats = pool.stats()
    assert (stats.connections_opened, stats.connect_errors, stats.idle) == (2, 0, 1)
    assert first.closed
    await pool.aclose()
    assert await settle_fds(baseline) <= baseline


async def test_half_closed_idle_connection_is_replaced_transparently(
    client_ctx: ssl.SSLContext, proxy: FaultProxy
) -> None:
    baseline = await fd_baseline()
    pool = Pool(client_ctx)
    async with pool.connection(HOST, proxy.port, server_hostname=NAME) as first:
        await roundtrip(first)
    assert proxy.half_close() == 1  # FIN to the client; its own direction stays open
    await wait_for(lambda: first.closed)  # the pooled connection saw the FIN
    async with pool.connection(HOST, proxy.port, server_hostname=NAME) as second:
        assert second is not first
        await roundtrip(second)
    assert pool.stats().connections_opened == 2
    await pool.aclose()
    assert await settle_fds(baseline) <= baseline


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_half_open_pooled_connection_costs_at_most_close_timeout(
    client_ctx: ssl.SSLContext, proxy: FaultProxy, direction: Direction
) -> None:
    # Nothing on the wire tells a silently dead connection from an idle one: the pool hands it
    # out, the caller's read times out, and closing it is bounded by close_timeout (the
    # close_notify reply never comes). Then the slot and the socket are free.
    baseline = await fd_baseline()
    pool = Pool(client_ctx, close_timeout=0.2, max_connections=1)
    async with pool.connection(HOST, proxy.port, server_hostname=NAME) as first:
        await roundtrip(first)
    proxy.half_open(direction)
    conn = await pool.acquire(HOST, proxy.port, server_hostname=NAME)
    assert conn is first
    conn.writer.write(b"ping")
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):  # distinct on Python 3.10
        await asyncio.wait_for(conn.reader.readexactly(4), 0.2)
    started = asyncio.get_running_loop().time()
    await conn.aclose()
    assert asyncio.get_running_loop().time() - started < 0.2 + 0.5
    assert (pool.stats().in_use, pool.stats().idle) == (0, 0)
    proxy.heal()
    async with pool.connection(HOST, proxy.port, server_hostname=NAME) as fresh:
        await roundtrip(fresh)  # the single slot is usable again
    await pool.aclose()
    assert await settle_fds(baseline) <= baseline


async def test_refused_connect_keeps_the_cached_session(
    cert: trustme.LeafCert,
    client_ctx: ssl.SSLContext,
    tls_version: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_ctx = server_context(cert, tls_version)  # keeps its ticket keys and session cache
    srv = await start_server(server_ctx)
    port = srv.port
    async with Pool(client_ctx, connect_retries=3, retry_backoff=0.2) as pool:
        assert await connect_once(pool, port) is False
        await srv.close()  # the server restarts: connections are refused for a moment
        with caplog.at_level(logging.DEBUG, logger="aiotlspool"):
            acquiring = asyncio.create_task(pool.acquire(HOST, port, server_hostname=NAME))
            await asyncio.sleep(0.05)  # the first attempt was refused; the retry is pending
            srv = await start_server(server_ctx, port=port)
            try:
                conn = await asyncio.wait_for(acquiring, 5)
                reused = conn.session_reused
                await conn.aclose()
            finally:
                await srv.close()
        assert any("ConnectionRefusedError" in r.getMessage() for r in caplog.records)
        assert reused  # the server would have resumed it: nothing ever refused the session
