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
import logging
import secrets
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme

from aiotlspool import Pool, RedisSessionCache, store_guard

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
    # (No ticket held back: every connect takes from Redis, which is what this test is about.)
    store = store_for(fresh_redis, hold_ticket_for=0)
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


# -- the single flight: one full handshake for a fleet that starts cold ----------------------

FLIGHT_CHILD = textwrap.dedent(
    """
    import asyncio, json, ssl, sys
    import redis.asyncio
    from aiotlspool import Pool, RedisSessionCache

    class NeverPuts(RedisSessionCache):  # a leader that dies before it publishes anything
        async def put(self, key, session):
            pass

    async def main(url, secret, namespace, ca_file, port, kind, lease):
        cls = NeverPuts if kind == "never-puts" else RedisSessionCache
        store = cls.from_url(
            url, secret=bytes.fromhex(secret), namespace=namespace,
            single_flight_wait=10.0, single_flight_lease=float(lease),
        )
        ctx = ssl.create_default_context()  # the same settings, in another process
        ctx.load_verify_locations(cafile=ca_file)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        options = {"session_engine": "native", "session_cache": store, "store_timeout": 20}
        async with Pool(ctx, **options) as pool:
            await store.client.ping()  # (connected to Redis before the start)
            async with redis.asyncio.Redis.from_url(url) as barrier:  # ready; wait for "go"
                await barrier.incr(namespace + ":ready")
                assert await barrier.blpop([namespace + ":go"], timeout=60)
            conn = await pool.acquire("127.0.0.1", int(port), server_hostname="localhost")
            reused = conn.session_reused
            await conn.aclose()
        await store.flush()
        print(json.dumps({"reused": reused, "counters": store.counters()}))
        await store.client.aclose()

    asyncio.run(main(*sys.argv[1:]))
    """
)


@ONE_LOOP
async def test_processes_starting_at_once_make_one_full_handshake(
    ca: trustme.CA, cert: trustme.LeafCert, redis_server: RedisServer, tmp_path: Any
) -> None:
    """Five processes, each with a new pool and store, connect to one TLS 1.2 server at the
    same moment: one leads (the full handshake), the others wait for its session and resume
    (generous bounds: a loaded machine may take long to spawn and handshake). Without the
    single flight (``single_flight_wait=0``) all five make a full handshake."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    namespace = f"flight-{secrets.token_hex(4)}"
    store = store_for(redis_server, namespace=namespace)  # (its client: the start signal)
    async with running_server(server_context(cert, "TLSv1.2")) as srv:
        args = [redis_server.url, SECRET.hex(), namespace, str(ca_file), str(srv.port)]
        args += ["normal", "10"]
        children = [asyncio.ensure_future(python_child(FLIGHT_CHILD, *a)) for a in [args] * 5]
        for _ in range(600):  # every child ready (started, connected to Redis): go
            if int(await store.client.get(namespace + ":ready") or 0) == 5:
                break
            await asyncio.sleep(0.1)
        await store.client.rpush(namespace + ":go", *[1] * 5)
        results = [json.loads(out) for out in await asyncio.gather(*children)]
        await store.client.aclose()
        assert sorted(r["reused"] for r in results) == [False, True, True, True, True], results
        assert sum(r["counters"]["flights_led"] for r in results) == 1, results
        assert (srv.handshakes, srv.resumed) == (5, 4)  # (counted by the server)


@ONE_LOOP
async def test_a_leader_that_dies_delays_the_others_by_its_lease_only(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
    tmp_path: Any,
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    lease = 3.0
    store = store_for(redis_server, single_flight_wait=20.0)  # only the lease can end its wait
    closing.append(store)
    async with running_server(server_context(cert, "TLSv1.2")) as srv:
        args = [redis_server.url, SECRET.hex(), store.namespace, str(ca_file), str(srv.port)]
        args += ["never-puts", str(lease)]
        child = asyncio.ensure_future(python_child(FLIGHT_CHILD, *args))
        await wait_for_async(lambda: store.client.get(store.namespace + ":ready"), b"1")
        await store.client.rpush(store.namespace + ":go", 1)
        output = json.loads(await child)
        assert output["reused"] is False and output["counters"]["flights_led"] == 1
        [flight] = [k async for k in store.client.scan_iter(match="{" + store.namespace + "}:f*")]
        left = await store.client.pttl(flight) / 1000  # of the dead leader's lease
        assert left > 0.5, left
        started = time.monotonic()
        ctx = client_context(ca, "TLSv1.2")
        async with Pool(ctx, session_cache=store, store_timeout=30) as pool:
            assert await connect_once(pool, srv.port) is False
        elapsed = time.monotonic() - started
        assert left - 0.3 < elapsed < left + 1.5, (left, elapsed)
        counts = store.counters()
        assert (counts["flights_waited"], counts["flights_led"]) == (1, 1), counts


async def wait_for_async(value: Any, expected: object, timeout: float = 60) -> None:
    stop_at = time.monotonic() + timeout
    while (got := await value()) != expected:
        assert time.monotonic() < stop_at, f"{got!r}, not {expected!r}"
        await asyncio.sleep(0.05)


# -- the held TLS 1.3 ticket ------------------------------------------------------------------


async def script_calls(store: RedisSessionCache) -> int:
    """EVALSHA and EVAL calls Redis has served (every take and every write is one)."""
    stats = await store.client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


@ONE_LOOP
async def test_tls13_reconnects_use_their_held_ticket_without_redis(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
) -> None:
    store = store_for(redis_server)
    other = store_for(redis_server, namespace=store.namespace, local=False, single_flight_wait=0)
    closing += [store, other]
    async with (
        running_server(server_context(cert, "TLSv1.3")) as srv,
        Pool(client_context(ca, "TLSv1.3"), session_cache=store) as pool,
    ):
        assert [await connect_once(pool, srv.port) for _ in range(2)] == [False, True]
        await store.flush(publish_held=False)
        while await other.get(pool_key(store)):  # ("another process" takes what Redis has)
            pass
        before = await script_calls(store)
        resumed = []
        for _ in range(5):
            resumed.append(await connect_once(pool, srv.port))
            await asyncio.sleep(0.01)  # (the ticket's put runs in a task of the pool)
        assert resumed == [True] * 5
        # Each connect took the ticket the one before left, held here: no take, no write.
        assert await script_calls(store) == before
        assert store.counters()["local_hits"] >= 5
        assert not await other.get(pool_key(store))  # nothing published while held...
        lingering_since = time.monotonic()
        while not await other.get(pool_key(store)):  # ...until it lingers unused (0.3 s)
            assert time.monotonic() - lingering_since < 5.0
            await asyncio.sleep(0.05)


@ONE_LOOP
async def test_closing_the_pool_writes_the_held_ticket(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    redis_server: RedisServer,
    closing: list[RedisSessionCache],
) -> None:
    """Pool.aclose() flushes the store: the ticket held for a next connect that will not come
    is published (held for an hour here, it would be lost with the process otherwise)."""
    store = store_for(redis_server, hold_ticket_for=3600.0)
    other = store_for(redis_server, namespace=store.namespace, local=False, single_flight_wait=0)
    closing += [store, other]
    async with running_server(server_context(cert, "TLSv1.3")) as srv:
        pool = Pool(client_context(ca, "TLSv1.3"), session_cache=store)
        # (the first, a leader, publishes its tickets; the resumed one's is held)
        assert [await connect_once(pool, srv.port) for _ in range(2)] == [False, True]
        await asyncio.sleep(0.05)  # (the ticket's put runs in a task of the pool)
        await store.flush(publish_held=False)
        while await other.get(pool_key(store)):  # ("another process" takes what Redis has)
            pass
        await pool.aclose()
        assert await other.get(pool_key(store)) is not None


# -- the guard and the local tier -----------------------------------------------------------


@ONE_LOOP
async def test_an_outage_behind_the_local_tier_is_logged_once_and_its_end_once(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    fresh_redis: RedisServer,
    closing: list[RedisSessionCache],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While Redis is down, the store still answers some calls itself (a TLS 1.2 session of
    its tier; puts written behind): that is no end of the outage for the pool's guard - one
    warning, no "answers again" until Redis answers, then one."""
    monkeypatch.setattr(store_guard, "FIRST_PAUSE", 0.05)
    monkeypatch.setattr(store_guard, "LONGEST_PAUSE", 0.2)
    caplog.set_level(logging.INFO, "aiotlspool")
    store = store_for(fresh_redis)
    closing.append(store)

    def logged(text: str) -> int:
        return sum(
            text in r.getMessage() and "the session store RedisSessionCache" in r.getMessage()
            for r in caplog.records
            if r.name == "aiotlspool"
        )

    async with contextlib.AsyncExitStack() as stack:
        known, *others = [
            await stack.enter_async_context(running_server(server_context(cert, "TLSv1.2")))
            for _ in range(7)
        ]
        ctx = client_context(ca, "TLSv1.2")
        pool = await stack.enter_async_context(Pool(ctx, session_cache=store, store_timeout=0.3))
        assert [await connect_once(pool, known.port) for _ in range(2)] == [False, True]
        fresh_redis.stop()
        for other in others:  # each new server needs Redis (which fails); known one: the tier
            await connect_once(pool, known.port)
            await connect_once(pool, other.port)
            await asyncio.sleep(0.25)  # (past the guard's pause)
        stats = pool.stats()
        assert stats.store_errors + stats.store_timeouts >= 2, stats
        assert store.counters()["local_hits"] >= 2  # (the tier did answer meanwhile)
        assert logged("could not") == 1 and logged("answers again") == 0
        fresh_redis.start()
        for _ in range(100):
            await connect_once(pool, others[0].port)
            if logged("answers again"):
                break
            await asyncio.sleep(0.05)
        assert logged("answers again") == 1 and logged("could not") == 1
