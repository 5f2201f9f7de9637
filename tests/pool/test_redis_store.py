"""A pool with a RedisSessionCache, against real TLS servers and a real redis-server: sessions
resume through Redis in another store (another process), TLS to Redis itself, a Redis that
restarts, stops, stalls or resets (every connect still succeeds; the store's failures are
counted misses, bounded by ``store_timeout``), and several processes sharing one store.

The servers start once for the module (a missing redis-server skips locally and fails in CI).
The slower tests run on the asyncio loop only (their subject is Redis, not the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme

from aiotlspool import Pool, RedisSessionCache

from ..support.faultproxy import FaultProxy
from ..support.helpers import connect_once, python_child, wait_for
from ..support.realservers import Certs, certificates
from ..support.redisserver import RedisServer
from ..support.servers import Server, client_context, running_server, server_context
from ..support.stores import redis_for_stores

SESSION_ENGINES = ["native"]  # (only native sessions can be stored outside the process)
ONE_LOOP = pytest.mark.asyncio(loop_factories=["asyncio"])
SECRET = secrets.token_bytes(32)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_stores() as server:
        yield server


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to restart or stop."""
    with redis_for_stores() as server:
        yield server


def store_for(server: RedisServer | str, **options: Any) -> RedisSessionCache:
    url = server if isinstance(server, str) else server.url
    options.setdefault("namespace", f"pool-{secrets.token_hex(4)}")
    return RedisSessionCache.from_url(url, secret=SECRET, **options)


@pytest.fixture
async def closing() -> AsyncIterator[list[RedisSessionCache]]:
    """Stores whose clients the test leaves open: closed at its end."""
    stores: list[RedisSessionCache] = []
    yield stores
    for store in stores:
        await store.flush(timeout=1)
        await store.client.aclose()


async def test_sessions_resume_through_redis_in_another_store(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    tls_version: str,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
) -> None:
    first = store_for(redis_server)
    # "Another process": a store of its own, with nothing in memory, on another client.
    second = store_for(redis_server, namespace=first.namespace, local=False)
    closing += [first, second]
    async with running_server(server_context(cert, tls_version)) as srv:
        async with Pool(client_context(ca, tls_version), session_cache=first) as pool:
            assert await connect_once(pool, srv.port) is False
            assert await connect_once(pool, srv.port) is True
            assert pool.stats().store_errors == pool.stats().store_timeouts == 0
        assert await first.flush()
        async with Pool(client_context(ca, tls_version), session_cache=second) as pool:
            assert await connect_once(pool, srv.port) is True
        assert srv.resumed == 2
        assert second.counters()["remote_hits"] == 1 and second.rejected_entries == 0


@pytest.fixture(scope="module")
def redis_tls() -> Iterator[tuple[RedisServer, Certs]]:
    with certificates() as certs, redis_for_stores(certs) as server:
        yield server, certs


@ONE_LOOP
async def test_tls_to_redis_itself(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_tls: tuple[RedisServer, Certs],
    closing: list[RedisSessionCache],
) -> None:
    server, certs = redis_tls
    assert server.url.startswith("rediss://")
    store = store_for(server, client_options={"ssl_ca_certs": str(certs.ca_file)})
    other = store_for(
        server,
        namespace=store.namespace,
        local=False,
        client_options={"ssl_ca_certs": str(certs.ca_file)},
    )
    closing += [store, other]
    async with running_server(server_context(cert, "TLSv1.3")) as srv:
        async with Pool(client_context(ca, "TLSv1.3"), session_cache=store) as pool:
            assert await connect_once(pool, srv.port) is False
        await store.flush()
        async with Pool(client_context(ca, "TLSv1.3"), session_cache=other) as pool:
            assert await connect_once(pool, srv.port) is True
            assert pool.stats().store_errors == 0


@ONE_LOOP
async def test_redis_restarts_and_stops_mid_run_and_the_pool_goes_on(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    fresh_redis: RedisServer,
    closing: list[RedisSessionCache],
) -> None:
    store = store_for(fresh_redis)
    probe = store_for(fresh_redis, namespace=store.namespace, local=False)  # reads Redis only
    closing += [store, probe]
    ctx = client_context(ca, "TLSv1.3")
    async with (
        running_server(server_context(cert, "TLSv1.3")) as srv,
        Pool(ctx, session_cache=store, store_timeout=0.3) as pool,
    ):
        assert [await connect_once(pool, srv.port) for _ in range(2)] == [False, True]
        # A restart (data lost) between two connects: the client's one retry on a new
        # connection hides it from the pool; the next connects resume again.
        fresh_redis.restart()
        results = [await connect_once(pool, srv.port) for _ in range(3)]
        assert results[-1] is True and pool.stats().store_errors == 0
        # Stopped: every connect still succeeds; the store's failures are counted misses.
        fresh_redis.stop()
        started = time.monotonic()
        for _ in range(6):
            await connect_once(pool, srv.port)
            await asyncio.sleep(0.05)
        stats = pool.stats()
        assert stats.store_errors + stats.store_timeouts >= 1, stats
        assert time.monotonic() - started < 3.0  # (bounded: no connect waited on Redis long)
        assert store.failed_operations >= 1
        # Back: after the pause the pool's store calls reach Redis again, and the sessions
        # captured from then on are in Redis for everyone.
        fresh_redis.start()
        await asyncio.sleep(1.1)  # (the pool leaves a failing store alone for 1 s)

        async def shared() -> bool:
            await connect_once(pool, srv.port)
            await store.flush(timeout=1)
            return await probe.get(pool_key(store)) is not None

        for _ in range(30):
            if await shared():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no session reached the restarted Redis: {store.counters()}")
        assert await connect_once(pool, srv.port) is True


def pool_key(store: RedisSessionCache) -> Any:
    """A key this store has used (the one endpoint of these tests)."""
    [key] = store._here.keys.values()
    return key


@contextlib.asynccontextmanager
async def resumed_through(
    store: RedisSessionCache, ca: trustme.CA, cert: trustme.LeafCert
) -> AsyncIterator[tuple[Server, Pool]]:
    """A TLS 1.3 server and a pool on ``store`` (``store_timeout`` 0.3 s) that has made one
    full handshake and one resumption, its sessions flushed to Redis."""
    async with (
        running_server(server_context(cert, "TLSv1.3")) as srv,
        Pool(client_context(ca, "TLSv1.3"), session_cache=store, store_timeout=0.3) as pool,
    ):
        assert [await connect_once(pool, srv.port) for _ in range(2)] == [False, True]
        await store.flush()
        yield srv, pool


@ONE_LOOP
async def test_a_stalled_redis_costs_at_most_store_timeout(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
) -> None:
    async with FaultProxy(redis_server.port) as proxy:
        # socket_timeout of 5 s: only the pool's store_timeout (and the store's timeout)
        # bound a stalled call.
        store = store_for(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=5.0)
        closing.append(store)
        async with resumed_through(store, ca, cert) as (srv, pool):
            proxy.half_open("down")  # Redis's replies vanish on the open connections
            proxy.stall_after(0)  # and new connections get nothing either
            started = time.monotonic()
            await connect_once(pool, srv.port)
            elapsed = time.monotonic() - started
            assert pool.stats().store_timeouts == 1 and elapsed < 0.3 + 0.5, elapsed
            for _ in range(3):  # the store is left alone for a while: no more waiting
                started = time.monotonic()
                await connect_once(pool, srv.port)
                assert time.monotonic() - started < 0.25
            assert pool.stats().store_timeouts == 1


@ONE_LOOP
async def test_a_resetting_redis_is_a_counted_miss(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
) -> None:
    async with FaultProxy(redis_server.port) as proxy:
        store = store_for(f"redis://127.0.0.1:{proxy.port}/0")
        closing.append(store)
        async with resumed_through(store, ca, cert) as (srv, pool):
            proxy.reset_after(0)  # new connections: reset at once
            proxy.close_idle(reset=True)  # open ones: reset now
            await connect_once(pool, srv.port)
            await connect_once(pool, srv.port)
            assert pool.stats().store_errors >= 1
            assert pool.stats().connect_errors == 0
            proxy.heal()
            await asyncio.sleep(1.1)  # (the pool's pause after a failing call)
            await wait_for(lambda: store.failed_operations >= 1)
            for _ in range(3):
                await connect_once(pool, srv.port)
            await store.flush()
            assert store.counters()["remote_hits"] + store.counters()["local_hits"] >= 2


# -- several processes ------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, json, ssl, sys
    from aiotlspool import Pool, RedisSessionCache

    class Recording(RedisSessionCache):
        taken = []
        async def get(self, key):
            session = await super().get(key)
            if session is not None:
                self.taken.append(session.session_id.hex())
            return session

    async def first_connect(version, port, store, ca_file):
        ctx = ssl.create_default_context()  # the same settings, in another process
        ctx.load_verify_locations(cafile=ca_file)
        ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
        async with Pool(ctx, session_engine="native", session_cache=store) as pool:
            conn = await pool.acquire("127.0.0.1", port, server_hostname="localhost")
            reused = conn.session_reused
            await conn.aclose()
        return reused

    async def main(url, secret, namespace, ca_file, port12, port13):
        store = Recording.from_url(url, secret=bytes.fromhex(secret), namespace=namespace)
        results = {}
        for version, port in [("TLSv1_2", port12), ("TLSv1_3", port13)]:
            store.taken = []
            reused = await first_connect(version, int(port), store, ca_file)
            results[version] = [reused, store.taken]
        await store.flush()
        await store.client.aclose()
        results["rejected"] = store.rejected_entries
        print(json.dumps(results))

    asyncio.run(main(*sys.argv[1:]))
    """
)


@ONE_LOOP
async def test_a_fleet_cold_start_one_full_handshake_then_every_process_resumes(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
    tmp_path: Any,
) -> None:
    """Process A makes one full handshake per server; processes B, C and D, started together
    with their own pools and Redis clients, resume on their first connect to each: all with
    the one TLS 1.2 session, and each with a TLS 1.3 ticket of its own (the server sends 4;
    each is taken by exactly one process)."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    store = store_for(redis_server)
    closing.append(store)
    async with (
        running_server(server_context(cert, "TLSv1.2")) as srv12,
        running_server(server_context(cert, "TLSv1.3", num_tickets=4)) as srv13,
    ):
        for version, srv in [("TLSv1.2", srv12), ("TLSv1.3", srv13)]:
            async with Pool(client_context(ca, version), session_cache=store) as pool:
                assert await connect_once(pool, srv.port) is False
        assert await store.flush()
        args = [redis_server.url, SECRET.hex(), store.namespace, str(ca_file)]
        args += [str(srv12.port), str(srv13.port)]
        outputs = await asyncio.gather(*(python_child(CHILD, *args) for _ in range(3)))
        results = [json.loads(out) for out in outputs]
        for version in ("TLSv1_2", "TLSv1_3"):
            assert [r[version][0] for r in results] == [True, True, True], results
            taken = [session_id for r in results for session_id in r[version][1]]
            assert len(taken) == 3, results
            # TLS 1.2: the one session, reused by all; TLS 1.3: each ticket to one process
            assert len(set(taken)) == (1 if version == "TLSv1_2" else 3), results
        assert [r["rejected"] for r in results] == [0, 0, 0]
        assert (srv12.handshakes, srv12.resumed) == (srv13.handshakes, srv13.resumed) == (4, 3)
