"""enable_resumption inside database drivers, against the real servers: redis-py's asyncio
client and redis-server (resumes), asyncpg and PostgreSQL (never resumes: the server turns its
session cache and every kind of ticket off).  See test_enable_resumption.py for the rules.

Both servers start once for the module (tests/support/redisserver.py, postgresserver.py; a
missing binary skips locally and fails in CI, where scripts/install-servers.sh installs them).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from aiotlspool import enable_resumption, resumption_cache, resumption_stats

from ..support.helpers import require_module, skip_or_fail, tls13_sessions_stored
from ..support.postgresserver import PostgresServer, postgres_bindir, run_postgres
from ..support.realservers import Certs, ServerUnavailable, certificates
from ..support.redisserver import RedisServer, redis_binary, run_redis
from ..support.servers import TLS_VERSIONS
from .test_enable_resumption import TIMEOUT, assert_adds_up

try:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.connection import SSLConnection

    from aiotlspool.integrations.redis import SharedContextSSLConnection
except ImportError:  # each redis test's require_module("redis") skips it (fails in CI)
    SharedContextSSLConnection = object  # type: ignore[misc,assignment]

# -- redis-py: one SSLContext for every connection ----------------------------------------------


class Recording:
    """Mixed into a redis-py connection class: notes each connection's ``session_reused``
    (through redis-py's private ``_writer``: for the tests' eyes only)."""

    def __init__(self, *, reused: list[bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reused = reused

    async def connect(self) -> None:
        fresh = not self.is_connected  # type: ignore[attr-defined]
        await super().connect()  # type: ignore[misc]
        if fresh:
            transport = self._writer  # type: ignore[attr-defined]
            self.reused.append(transport.get_extra_info("ssl_object").session_reused)


class RecordingConnection(Recording, SharedContextSSLConnection):
    """redis-py's connections on one shared context, each noting whether it resumed."""


def redis_pool(
    server: RedisServer, ctx: ssl.SSLContext, reused: list[bool], *, host: str | None = None
) -> Any:
    return ConnectionPool(
        connection_class=RecordingConnection,
        host=host or server.server_name,
        port=server.port,
        ssl_context=ctx,
        reused=reused,
        socket_connect_timeout=TIMEOUT,
        socket_timeout=TIMEOUT,
    )


async def redis_once(server: RedisServer, ctx: ssl.SSLContext, *, host: str | None = None) -> bool:
    """A new client (so a new TLS connection): SET, GET, close; whether it resumed."""
    reused: list[bool] = []
    client = Redis(connection_pool=redis_pool(server, ctx, reused, host=host))
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose(close_connection_pool=True)
    assert len(reused) == 1, reused
    return reused[0]


def client_context(certs: Certs, tls_version: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the test CA only (the system's CA store takes
    ~40 ms a context to load), pinned to ``tls_version`` if given."""
    return certs.client_context(TLS_VERSIONS[tls_version] if tls_version else None)


def need_redis() -> None:
    require_module("redis")
    try:
        redis_binary()
    except ServerUnavailable as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    with certificates() as made:
        yield made


@pytest.fixture(scope="module")
def redis_tls(certs: Certs) -> Iterator[RedisServer]:
    """redis-server with its TLS defaults (session cache on, TLS 1.2 and 1.3), shared."""
    need_redis()
    with run_redis(certs) as server:
        yield server


@pytest.fixture(scope="module")
def restarted_redis(certs: Certs) -> Iterator[RedisServer]:
    """A second redis-server, for the tests that restart it (each with contexts of its own)."""
    need_redis()
    with run_redis(certs) as server:
        yield server


@pytest.fixture
def plain_redis() -> Iterator[RedisServer]:
    need_redis()
    with run_redis() as server:
        yield server


async def test_stock_redis_py_never_resumes(redis_tls: RedisServer, certs: Certs) -> None:
    # redis-py up to 8.1 built a context per connection; from 8.2 connections with the same
    # ssl_* arguments share one. Either way nothing offers a session: every handshake is full.
    require_module("redis")

    class StockRecording(Recording, SSLConnection):
        pass

    reused: list[bool] = []
    for _ in range(3):
        stock = ConnectionPool(
            connection_class=StockRecording,
            host=redis_tls.server_name,
            port=redis_tls.port,
            ssl_ca_certs=str(certs.ca_file),
            reused=reused,
            socket_connect_timeout=TIMEOUT,
        )
        client = Redis(connection_pool=stock)
        try:
            await client.set("k", "v")
        finally:
            await client.aclose(close_connection_pool=True)
    assert reused == [False, False, False]
    ctx = client_context(certs)
    shared = ConnectionPool(connection_class=SharedContextSSLConnection, ssl_context=ctx)
    assert all(shared.make_connection().ssl_context.get() is ctx for _ in range(3))


async def test_redis_second_connection_resumes(
    redis_tls: RedisServer, certs: Certs, tls_version: str, session_engine: str
) -> None:
    ctx = enable_resumption(client_context(certs, tls_version))
    assert [await redis_once(redis_tls, ctx) for _ in range(3)] == [False, True, True]
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=3)
    assert (stats.full, stats.resumed, stats.rejected, stats.misses) == (1, 2, 0, 1), stats
    if tls_version == "TLSv1.3":
        # redis-server never calls SSL_CTX_set_num_tickets: OpenSSL's 2 tickets per full
        # handshake, 1 per resumption, each stored as it arrives by the native engine.
        assert stats.stored == tls13_sessions_stored(session_engine, full=1, resumed=2), stats
    else:
        assert stats.stored == 1, stats  # one ticket; a resumption keeps using it


async def test_redis_burst_after_one_warm_up_resumes(
    redis_tls: RedisServer, certs: Certs, tls_version: str, session_engine: str
) -> None:
    ctx = enable_resumption(client_context(certs, tls_version))
    assert await redis_once(redis_tls, ctx) is False
    tickets = resumption_stats(ctx).stored
    burst = 6
    reused: list[bool] = []
    pool = redis_pool(redis_tls, ctx, reused)
    connections = [pool.make_connection() for _ in range(burst)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connect() for c in connections)), TIMEOUT)
        for conn in connections:
            await conn.send_command("PING")
            assert await conn.read_response() == b"PONG"
    finally:
        await asyncio.gather(*(c.disconnect() for c in connections))
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=1 + burst)
    assert stats.rejected == 0, stats
    assert reused.count(True) == stats.resumed, (reused, stats)
    if tls_version == "TLSv1.2":
        assert (tickets, stats.resumed) == (1, burst), stats  # one reusable session
    else:
        # Each ticket once: the warm-up's (2 native, 1 stdlib) resume as many connections; a
        # resumed connection's new ticket may come back in time for a later one.
        assert tickets == tls13_sessions_stored(session_engine, full=1), stats
        assert tickets <= stats.resumed <= burst, stats


async def test_redis_sessions_never_cross_names_or_contexts(
    redis_tls: RedisServer, certs: Certs, tls_version: str
) -> None:
    ctx = enable_resumption(client_context(certs, tls_version))
    assert await redis_once(redis_tls, ctx) is False  # "localhost"
    # The same server under another name that its certificate covers: never offered.
    assert await redis_once(redis_tls, ctx, host="127.0.0.1") is False
    stats = resumption_stats(ctx)
    assert (stats.full, stats.hits, stats.misses) == (2, 0, 2), stats
    assert await redis_once(redis_tls, ctx) is True  # "localhost"'s session is still there
    # Another context with the same settings, even one sharing the store, gets none of them.
    for other in (
        enable_resumption(client_context(certs, tls_version)),
        enable_resumption(client_context(certs, tls_version), session_cache=resumption_cache(ctx)),
    ):
        assert await redis_once(redis_tls, other) is False
        assert resumption_stats(other).hits == 0
        assert await redis_once(redis_tls, other) is True  # its own session
    assert resumption_stats(ctx).hits == 1


async def test_redis_tls12_session_ids_never_resume(redis_tls: RedisServer, certs: Certs) -> None:
    # Without tickets a TLS 1.2 session can only resume from redis-server's session cache,
    # which keeps none of a connection the client closed: connTLSClose calls SSL_shutdown only
    # while "connected", and OpenSSL's SSL_free removes the session of a connection that sent
    # no close_notify from the cache.  (After QUIT, when redis-server closes first, the session
    # stays and resumes.)  So each offer is refused and dropped, at no cost but the offer.
    ctx = client_context(certs, "TLSv1.2")
    ctx.options |= ssl.OP_NO_TICKET
    enable_resumption(ctx)
    assert [await redis_once(redis_tls, ctx) for _ in range(3)] == [False, False, False]
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=3)
    assert (stats.full, stats.hits, stats.rejected, stats.stored) == (3, 2, 2, 3), stats


async def test_redis_restart_rejects_the_old_session_once(
    restarted_redis: RedisServer, certs: Certs, tls_version: str
) -> None:
    ctx = enable_resumption(client_context(certs, tls_version))
    assert [await redis_once(restarted_redis, ctx) for _ in range(2)] == [False, True]
    port = restarted_redis.port
    restarted_redis.restart()  # a new process: new ticket keys, empty session cache
    assert restarted_redis.port == port
    assert await redis_once(restarted_redis, ctx) is False  # offered, refused: dropped
    stats = resumption_stats(ctx)
    assert (stats.hits, stats.rejected) == (2, 1), stats
    assert await redis_once(restarted_redis, ctx) is True  # the newest session first: a fresh one
    assert_adds_up(resumption_stats(ctx), connections=4)


@pytest.mark.engines("native")  # no TLS: the session engine plays no part
async def test_plain_redis_restarts_on_its_port_without_its_data(
    plain_redis: RedisServer,
) -> None:
    assert not plain_redis.tls and plain_redis.url == f"redis://127.0.0.1:{plain_redis.port}/0"
    async with Redis.from_url(plain_redis.url, socket_timeout=TIMEOUT) as client:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    port = plain_redis.port
    plain_redis.restart()
    assert plain_redis.running and plain_redis.port == port
    async with Redis.from_url(plain_redis.url, socket_timeout=TIMEOUT) as client:
        assert await client.get("k") is None  # a new process: nothing persisted
    plain_redis.stop()
    assert not plain_redis.running


# -- asyncpg and PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres(certs: Certs) -> Iterator[PostgresServer]:
    """PostgreSQL with ssl_min_protocol_version TLSv1.2, ssl_max_protocol_version TLSv1.3."""
    require_module("asyncpg")
    try:
        postgres_bindir()
    except ServerUnavailable as exc:
        skip_or_fail(str(exc))
    with run_postgres(certs, tls_versions=("TLSv1.2", "TLSv1.3")) as server:
        yield server


SSL_QUERY = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def pg_options(server: PostgresServer, ctx: ssl.SSLContext) -> dict[str, Any]:
    """How asyncpg reaches ``server`` over TLS with ``ctx`` (connect, create_pool)."""
    # asyncpg passes host as the server name (start_tls): "localhost" is the certificate's.
    return {
        "host": server.server_name,
        "port": server.port,
        "user": server.user,
        "database": server.database,
        "ssl": ctx,
        "timeout": TIMEOUT,
    }


async def pg_connect(server: PostgresServer, ctx: ssl.SSLContext) -> Any:
    import asyncpg

    return await asyncpg.connect(**pg_options(server, ctx))


async def test_asyncpg_works_and_never_resumes(
    postgres: PostgresServer, certs: Certs, tls_version: str
) -> None:
    ctx = enable_resumption(client_context(certs, tls_version))
    rounds = 3
    for _ in range(rounds):
        conn = await pg_connect(postgres, ctx)
        try:
            # The server's own view: this session is TLS, of the version asked for.
            assert tuple(await conn.fetchrow(SSL_QUERY)) == (True, tls_version)
            assert await conn.fetchval("SELECT 1 + 1") == 2
        finally:
            await conn.close(timeout=TIMEOUT)
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=rounds)
    # No TLS 1.3 ticket ever arrives and the TLS 1.2 session has no ID and no ticket: nothing
    # is stored, so nothing is offered, so nothing is rejected.
    assert (stats.full, stats.resumed, stats.stored) == (rounds, 0, 0), stats
    assert (stats.hits, stats.rejected, stats.misses) == (0, 0, rounds), stats


async def test_asyncpg_pool_burst_never_resumes(
    postgres: PostgresServer, certs: Certs, tls_version: str
) -> None:
    import asyncpg

    ctx = enable_resumption(client_context(certs, tls_version))
    size = 4
    async with asyncpg.create_pool(
        **pg_options(postgres, ctx), min_size=size, max_size=size
    ) as pool:

        async def query(i: int) -> int:
            async with pool.acquire() as conn:
                assert tuple(await conn.fetchrow(SSL_QUERY)) == (True, tls_version)
                return int(await conn.fetchval("SELECT $1::int * 2", i))

        assert await asyncio.gather(*(query(i) for i in range(2 * size))) == [
            2 * i for i in range(2 * size)
        ]
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=size)
    assert (stats.full, stats.resumed, stats.stored, stats.rejected) == (size, 0, 0, 0), stats
