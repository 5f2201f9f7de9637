"""Bad input gives a clear exception naming the endpoint; nothing leaks, nothing is cached."""

from __future__ import annotations

import asyncio
import logging

import pytest
import trustme

from aiotlspool import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    Pool,
    PoolClosed,
    TLSHandshakeError,
)

from ..support.helpers import HOST, NAME
from ..support.servers import (
    client_context,
    fd_baseline,
    never_answer,
    plain_http,
    running_server,
    settle_fds,
    unused_port,
)


@pytest.mark.parametrize("port", [0, -1, 65536, 10**6])
async def test_invalid_port(client_ctx, port: int) -> None:
    async with Pool(client_ctx) as pool:
        with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
            await pool.acquire(HOST, port)


@pytest.mark.parametrize("port", ["443", 443.0, True, None])
async def test_port_of_wrong_type(client_ctx, port: object) -> None:
    async with Pool(client_ctx) as pool:
        with pytest.raises(TypeError, match="port must be an int"):
            await pool.acquire(HOST, port)  # type: ignore[arg-type]


async def test_empty_host(client_ctx) -> None:
    async with Pool(client_ctx) as pool:
        with pytest.raises(ValueError, match="host must be a non-empty string"):
            await pool.acquire("", 443)


def test_invalid_pool_options() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Pool(max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        Pool(idle_timeout=-1)
    with pytest.raises(TypeError, match="ssl_context"):
        Pool(ssl_context="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_cache"):
        Pool(session_cache={})  # type: ignore[arg-type]


async def _assert_clean_failure(pool: Pool, baseline: int) -> None:
    stats = pool.stats()
    assert (stats.in_use, stats.connecting, stats.idle, stats.waiting) == (0, 0, 0, 0)
    assert (stats.cache_size, stats.sessions_stored) == (0, 0)
    assert stats.connect_errors == 1
    assert await settle_fds(baseline) <= baseline


async def test_unresolvable_host(client_ctx) -> None:
    baseline = await fd_baseline()
    async with Pool(client_ctx) as pool:
        with pytest.raises(ConnectError, match=r"cannot resolve host 'no-such-host\.invalid'"):
            await pool.acquire("no-such-host.invalid", 443)
        await _assert_clean_failure(pool, baseline)


async def test_refused_connection_is_retried_then_reported(client_ctx) -> None:
    port = unused_port()
    baseline = await fd_baseline()
    async with Pool(client_ctx, connect_retries=2, retry_backoff=0.01) as pool:
        with pytest.raises(ConnectError, match=f"connection to 127.0.0.1:{port} refused"):
            await pool.acquire(HOST, port)
        await _assert_clean_failure(pool, baseline)


async def test_certificate_not_valid_for_name(client_ctx, server) -> None:
    baseline = await fd_baseline()
    async with Pool(client_ctx) as pool:
        with pytest.raises(CertificateError, match=r"did not verify for 'wrong\.example'") as info:
            await pool.acquire(HOST, server.port, server_hostname="wrong.example")
        assert info.value.endpoint.server_hostname == "wrong.example"
        await _assert_clean_failure(pool, baseline)


async def test_certificate_from_untrusted_ca(ca, server, tls_version) -> None:
    other_ca_ctx = client_context(trustme.CA(), tls_version)
    baseline = await fd_baseline()
    async with Pool(other_ca_ctx) as pool:
        with pytest.raises(CertificateError, match=f"127.0.0.1:{server.port}"):
            await pool.acquire(HOST, server.port, server_hostname=NAME)
        await _assert_clean_failure(pool, baseline)


async def test_peer_that_never_answers_times_out(client_ctx) -> None:
    async with running_server(None, never_answer) as silent:
        baseline = await fd_baseline()
        async with Pool(client_ctx, connect_timeout=0.3) as pool:
            started = asyncio.get_running_loop().time()
            with pytest.raises(ConnectTimeout, match=f"127.0.0.1:{silent.port}.*timed out"):
                await pool.acquire(HOST, silent.port, server_hostname=NAME)
            assert asyncio.get_running_loop().time() - started < 2
            await _assert_clean_failure(pool, baseline)


async def test_plain_tcp_peer(client_ctx) -> None:
    async with running_server(None, plain_http) as plain:
        baseline = await fd_baseline()
        async with Pool(client_ctx) as pool:
            with pytest.raises(TLSHandshakeError, match=f"127.0.0.1:{plain.port}"):
                await pool.acquire(HOST, plain.port, server_hostname=NAME)
            await _assert_clean_failure(pool, baseline)


async def test_closed_pool_refuses_acquire(client_ctx, server) -> None:
    pool = Pool(client_ctx)
    await pool.aclose()
    with pytest.raises(PoolClosed, match="closed"):
        await pool.acquire(HOST, server.port, server_hostname=NAME)
    assert pool.closed


async def test_connect_errors_are_oserrors_with_cause(client_ctx) -> None:
    async with Pool(client_ctx, connect_retries=0) as pool:
        with pytest.raises(OSError, match="refused") as info:
            await pool.acquire(HOST, unused_port())
        assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_failed_connects_are_logged_at_debug(client_ctx, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiotlspool"):
        async with Pool(client_ctx, connect_retries=1, retry_backoff=0.01) as pool:
            with pytest.raises(ConnectError):
                await pool.acquire(HOST, unused_port())
    assert any("retry in" in r.getMessage() for r in caplog.records)


async def test_port_type_checked_even_for_a_known_endpoint(client_ctx, server) -> None:
    async with Pool(client_ctx) as pool:
        async with pool.connection(HOST, server.port, server_hostname=NAME):
            pass
        with pytest.raises(TypeError, match="port must be an int"):
            await pool.acquire(HOST, float(server.port), server_hostname=NAME)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "name"), [("a..b", None), ("127.0.0.1", ".bad"), ("x" * 64, None)]
)
async def test_names_that_cannot_be_encoded(client_ctx, host: str, name: str | None) -> None:
    async with Pool(client_ctx) as pool:
        with pytest.raises(ValueError, match=r"invalid (host|server_hostname)"):
            await pool.acquire(host, 443, server_hostname=name)
        assert pool.stats().connecting == 0
