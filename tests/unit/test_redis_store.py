"""RedisSessionCache beyond the store contract (tests/unit/test_cache.py), against a real
redis-server started once for the module: the data layout, entries refused when tampered with,
expiry on the contents, what is never stored, writing behind (and Redis failing under it),
every call bounded in time, ``clear``/``invalidate_where``, several processes taking tickets,
Redis Cluster and Sentinel through redis-py's own clients.

Sessions are real native sessions (tests/support/stores.py). A pool resuming through Redis,
TLS to Redis, restarts and a fault proxy are in tests/pool/test_redis_store.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from aiotlspool import EntrySealer, RedisSessionCache, SessionKey
from aiotlspool.sessions import file as file_module
from aiotlspool.sessions.file_entries import EntryName, key_dir_name, seal_entry
from aiotlspool.sessions.redis_entries import element_of

from ..support.helpers import (
    FORK,
    key,
    make_session,
    require_module,
    run_forked,
    skip_or_fail,
    wait_for,
)
from ..support.memory_tls import libssl_or_skip_module
from ..support.realservers import ServerUnavailable, _Process, _watchdog
from ..support.redisserver import RedisServer, redis_binary
from ..support.stores import SECRET, native_record, redis_for_stores

libssl_or_skip_module()
SESSION_ENGINES = ["native"]  # (the engine plays no part here: one run per loop)

try:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError:  # the fixture's require_module("redis") skips (fails in CI)
    Redis = None  # type: ignore[assignment,misc]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_stores() as server:
        yield server


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = Redis(host=redis_server.host, port=redis_server.port, socket_timeout=2)
    yield redis
    await redis.flushdb()  # (our own throwaway server)
    await redis.aclose()


def new_store(client: Any, namespace: str = "test", **options: Any) -> RedisSessionCache:
    options.setdefault("secret", SECRET)
    options.setdefault("write_behind", False)
    return RedisSessionCache(client, namespace=namespace, **options)


def list_key(k: SessionKey, namespace: str = "test") -> str:
    return "{" + namespace + "}:" + key_dir_name(k.store_id())


# -- what Redis holds ---------------------------------------------------------------------------


async def test_layout_names_no_server_and_expires_with_the_lifetime(client: Any) -> None:
    store = new_store(client, ttl=600)
    record = native_record("TLSv1.3", lifetime=300)
    await store.put(key("secret-host.example"), record)
    entries_key = list_key(key("secret-host.example"))
    names = {k.decode() for k in await client.keys("*")}
    assert names == {entries_key, "{test}:lru"}
    assert not any("secret-host" in name for name in names)
    [entry] = await client.lrange(entries_key, 0, -1)
    assert entry[33:35] == b"13" and entry[75:76] == b"\n"  # the file store's entry name
    assert record.handle.to_der() not in entry  # (base64 in a sealed envelope)
    # min(ttl 600, server 300) + one second of grace, enforced by Redis itself
    assert 299_000 < await client.pttl(entries_key) <= 301_000
    assert await client.zscore("{test}:lru", key_dir_name(key("secret-host.example").store_id()))


async def test_clear_deletes_only_its_namespace_with_scan(client: Any) -> None:
    mine, other = new_store(client, "mine"), new_store(client, "other")
    for n in range(3):
        await mine.put(key(f"{n}.test"), native_record("TLSv1.2"))
    await other.put(key(), native_record("TLSv1.2"))
    await client.set("unrelated", b"x")
    await mine.clear()
    left = {k.decode() for k in await client.keys("*")}
    assert left == {"unrelated", list_key(key(), "other"), "{other}:lru"}
    assert mine.size() == 0 and await mine.get(key("0.test")) is None


async def test_namespaces_are_kept_apart_and_checked(client: Any) -> None:
    await new_store(client, "a").put(key(), native_record("TLSv1.2"))
    assert await new_store(client, "b").get(key()) is None
    for bad in ["", "a b", "{x}", "a*", "x" * 101]:
        with pytest.raises(ValueError, match="namespace"):
            new_store(client, bad)
    decoding = Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        new_store(decoding)
    await decoding.aclose()
    for options in [{"ttl": 0}, {"max_keys": 0}, {"timeout": -1}, {"max_pending": 0}]:
        with pytest.raises(ValueError, match=next(iter(options))):
            new_store(client, **options)
    with pytest.raises(TypeError, match="local"):
        new_store(client, local=1)


# The ACL of docs/security.md, word for word: the store needs nothing more.
ACL = (
    "sessions on >PASSWORD ~{aiotlspool}:* resetchannels -@all +evalsha +eval"
    " +lindex +lpop +lpush +ltrim +lrange +llen +lrem +del +unlink +pttl +pexpire"
    " +zadd +zrem +zcard +zrange +zremrangebyscore +scan +ping +get +set +incr"
)


async def test_an_acl_user_limited_to_the_namespace_is_enough(
    client: Any, redis_server: RedisServer
) -> None:
    await client.execute_command("ACL", "SETUSER", *ACL.split())
    url = f"redis://sessions:PASSWORD@{redis_server.host}:{redis_server.port}/0"
    for write_behind in (False, True):
        store = RedisSessionCache.from_url(url, secret=SECRET, write_behind=write_behind)
        other = RedisSessionCache.from_url(url, secret=SECRET, local=False, max_keys=1)
        await store.put(key(), native_record())
        await store.put(key("b.test"), native_record("TLSv1.2"))
        await store.flush()
        assert await other.get(key()) is not None  # TAKE
        await other.put(key("c.test"), native_record("TLSv1.2"))  # PUT, evicting (max_keys)
        await store.put(key("c.test"), native_record("TLSv1.2"))
        await store.invalidate(key("c.test"), native_record())  # DROP by tag
        assert await store.invalidate_where(lambda k: True) >= 0  # DROP by writer
        await store.clear()  # SCAN, UNLINK
        assert store.failed_operations == other.failed_operations == 0
        for made in (store, other):
            await made.client.aclose()
    assert await client.execute_command("ACL", "LOG") == []
    await client.execute_command("ACL", "DELUSER", "sessions")


# -- refused entries ----------------------------------------------------------------------------


def _flip(entry: bytes) -> bytes:
    middle = 76 + (len(entry) - 76) // 2
    return entry[:middle] + bytes([entry[middle] ^ 1]) + entry[middle + 1 :]


def _other_version(entry: bytes) -> bytes:
    header = entry[:75].decode()
    swapped = header.replace("-13-", "-1X-").replace("-12-", "-13-").replace("-1X-", "-12-")
    return swapped.encode() + entry[75:]


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "a flipped byte": (_flip, "tampered"),
    "truncated": (lambda e: e[:100], "corrupt"),
    "random bytes": (lambda e: os.urandom(900), "corrupt"),
    "a name that lies about the version": (_other_version, "corrupt"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_a_damaged_entry_is_refused_counted_and_removed(
    client: Any, damage: str, version: str
) -> None:
    await new_store(client).put(key(), native_record(version))
    [entry] = await client.lrange(list_key(key()), 0, -1)
    spoil, reason = DAMAGE[damage]
    await client.lset(list_key(key()), 0, spoil(entry))
    reader = new_store(client)  # (another process: nothing held in memory)
    assert await reader.get(key()) is None
    assert reader.rejections == Counter({reason: 1}) and reader.rejected_entries == 1
    assert await client.llen(list_key(key())) == 0 and reader.size() == 0


async def test_an_entry_signed_with_an_unknown_key_is_refused_as_foreign(client: Any) -> None:
    await new_store(client, secret=secrets.token_bytes(32)).put(key(), native_record("TLSv1.2"))
    reader = new_store(client)
    assert await reader.get(key()) is None
    assert reader.rejections == Counter({"foreign": 1})


async def test_an_entry_moved_under_another_key_is_refused(client: Any) -> None:
    store = new_store(client, local=False)
    await store.put(key("a.test"), native_record("TLSv1.3"))
    await store.put(key("b.test"), native_record("TLSv1.3"))
    [a_entry] = await client.lrange(list_key(key("a.test")), 0, -1)
    await client.lset(list_key(key("b.test")), 0, a_entry)  # a.test's ticket filed under b.test
    assert await store.get(key("b.test")) is None
    assert store.rejections == Counter({"tampered": 1})
    assert await store.get(key("a.test")) is not None  # the original is untouched


async def test_the_writer_offers_its_own_copy_and_never_the_damaged_entry(client: Any) -> None:
    # The writer keeps what it wrote: a TLS 1.3 ticket it wins back in Redis (the pop is what
    # makes it single-use) is offered from memory, never parsed from the bytes found there.
    writer = new_store(client)
    ticket = native_record("TLSv1.3")
    await writer.put(key(), ticket)
    [entry] = await client.lrange(list_key(key()), 0, -1)
    await client.lset(list_key(key()), 0, _flip(entry))
    assert await writer.get(key()) is ticket and writer.rejected_entries == 0
    assert await writer.get(key()) is None  # taken: gone for everyone
    tls12 = native_record("TLSv1.2")
    await writer.put(key(), tls12)
    [entry] = await client.lrange(list_key(key()), 0, -1)
    await client.lset(list_key(key()), 0, _flip(entry))
    assert await writer.get(key()) is tls12  # reusable, held: no round trip
    reader = new_store(client)
    assert await reader.get(key()) is None and reader.rejections == Counter({"tampered": 1})


async def test_expiry_is_decided_by_the_authenticated_contents_not_the_name(client: Any) -> None:
    sealer = EntrySealer(SECRET)
    store = new_store(client, secret=sealer)
    # Authentic, but its server lifetime (10 s from 60 s ago) has run out; its name lies.
    record = native_record("TLSv1.2", lifetime=10, created_at=time.time() - 60)
    name, sealed = seal_entry(sealer, record, key(), time.time_ns(), "0" * 16)
    lying = EntryName(name.stored_ns, 10**10, name.tls13, name.tag, name.writer)
    await client.lpush(list_key(key()), element_of(lying, sealed))
    assert await store.get(key()) is None
    assert store.expired == 1 and store.rejected_entries == 0
    assert await client.llen(list_key(key())) == 0


async def test_the_readers_ttl_applies_to_what_others_stored(client: Any) -> None:
    await new_store(client, ttl=3600).put(key(), native_record("TLSv1.2"))
    await asyncio.sleep(0.06)
    reader = new_store(client, ttl=0.05)
    assert await reader.get(key()) is None and reader.expired == 1
    assert await new_store(client, ttl=3600).get(key()) is None  # (dropped for all)


# -- what is stored -----------------------------------------------------------------------------


async def test_what_may_not_be_stored_is_skipped_and_counted(client: Any) -> None:
    store = new_store(client)
    await store.put(key(), make_session("TLSv1.2"))  # the stdlib engine: not serializable
    with_cert = SessionKey(1, "a.test", 443, client_certificate=True)
    await store.put(with_cert, native_record("TLSv1.2"))
    assert store.skipped_puts == 2 and await client.dbsize() == 0
    asked = new_store(client, store_client_certificate_sessions=True)
    await asked.put(with_cert, native_record("TLSv1.2"))
    assert await new_store(client).get(with_cert) is not None


async def test_the_same_session_is_stored_once(client: Any) -> None:
    store = new_store(client)
    record = native_record()
    await store.put(key(), record)
    await store.put(key(), record)
    assert await client.llen(list_key(key())) == 1 and store.size() == 1


async def test_invalidate_where_drops_only_this_processs_entries(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(client, local=False)
    await store.put(key(), native_record())
    with monkeypatch.context() as m:  # an entry written by "another process"
        m.setattr(file_module._process, "token", "f" * 16)
        await new_store(client).put(key(), native_record())
    assert await store.invalidate_where(lambda k: k.server_hostname == "a.test") == 1
    [left] = await client.lrange(list_key(key()), 0, -1)
    assert left[53:69] == b"f" * 16


# -- writing behind -----------------------------------------------------------------------------


async def test_puts_written_behind_land_in_batches_and_flush_waits(client: Any) -> None:
    store = new_store(client, write_behind=True, local=False)
    records = [native_record() for _ in range(5)]
    for record in records:
        await store.put(key(), record)  # (returns at once: no round trip)
    assert store.size() == 5
    assert await store.flush() is True
    assert await client.llen(list_key(key())) == 5
    reader = new_store(client)
    assert (await reader.get(key())).session_id == records[-1].session_id


async def test_a_ticket_still_waiting_is_taken_locally_and_never_written(client: Any) -> None:
    store = new_store(client, write_behind=True)
    ticket = native_record()
    await store.put(key(), ticket)
    assert await store.get(key()) is ticket  # not yet sent: nowhere else, still single-use
    assert await store.flush() is True
    assert await client.llen(list_key(key())) == 0
    assert store.counters()["local_hits"] == 1


async def test_a_get_waits_for_its_own_write_in_flight(client: Any) -> None:
    store = new_store(client, write_behind=True, hold_ticket_for=0)  # (sent at once)
    ticket = native_record()
    await store.put(key(), ticket)
    await asyncio.sleep(0)  # the writer sends the batch
    assert store._here.queue.batch is not None
    assert await store.get(key()) is ticket  # won in Redis, offered from memory
    assert store.counters()["remote_hits"] == 1


async def test_the_queue_is_bounded(client: Any) -> None:
    store = new_store(client, write_behind=True, max_pending=3)
    for n in range(5):
        await store.put(key(f"{n}.test"), native_record("TLSv1.2"))
    assert store.dropped_puts == 2
    await store.flush()
    assert await client.dbsize() == 4  # 3 keys and the LRU index


async def test_redis_down_behind_puts_one_warning_and_local_tickets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_module("redis")
    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 1)
    )
    store = new_store(down, write_behind=True)
    caplog.set_level(logging.WARNING, "aiotlspool")
    await store.put(key(), native_record())
    await wait_for(lambda: store.failed_operations == 1)  # the batch failed: dropped
    assert store.dropped_puts == 1
    for _ in range(3):  # the writer pauses (1 s): these wait in memory
        await store.put(key(), native_record())
    taken = await store.get(key())  # this process's own ticket, waiting: resumes anyway
    assert taken is not None and store.counters()["local_hits"] == 1
    with pytest.raises(Exception, match="onnect"):
        await store.get(key("other.test"))  # nothing local: Redis, which fails (raised)
    warnings = [r for r in caplog.records if "could not write" in r.getMessage()]
    assert len(warnings) == 1
    await down.aclose()


async def test_every_call_is_bounded_by_the_timeout() -> None:
    require_module("redis")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging = Redis(host="127.0.0.1", port=port, socket_timeout=None)  # would wait forever
    store = new_store(hanging, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await store.get(key())
    with pytest.raises(TimeoutError):
        await store.put(key(), native_record())
    assert time.monotonic() - started < 1.5
    assert store.failed_operations == 2
    await hanging.aclose()
    server.close()


# -- several processes --------------------------------------------------------------------------


def test_each_ticket_is_taken_by_exactly_one_process(redis_server: RedisServer) -> None:
    """Four processes, each with its own client and store, put tickets and take them at the
    same time; every ticket is taken exactly once (the parent takes what they leave). A TLS
    1.2 session is offered to all of them."""
    require_module("redis")
    processes, per_process = 4, 12
    # (No ticket held back: each goes through Redis; held tickets have tests of their own.)
    options: dict[str, Any] = {"tickets_per_endpoint": 100, "write_behind": True}
    options["hold_ticket_for"] = 0
    tls12 = native_record("TLSv1.2")  # (made before the fork: the children reuse its handshake)

    async def seed() -> None:
        redis = Redis(host=redis_server.host, port=redis_server.port)
        await new_store(redis).put(key("shared.test"), tls12)
        await redis.aclose()

    asyncio.run(seed())
    start = FORK.Barrier(processes)

    async def work() -> tuple[list[bytes], list[bytes], list[bytes], int, int]:
        redis = Redis(host=redis_server.host, port=redis_server.port)
        store = new_store(redis, **options)
        start.wait()
        written, taken = [], []
        for _ in range(per_process):
            record = native_record()
            written.append(record.session_id)
            await store.put(key(), record)
            await asyncio.sleep(0)
            got = await store.get(key())
            if got is not None:
                taken.append(got.session_id)
        while (got := await store.get(key())) is not None:
            taken.append(got.session_id)
        await store.flush()
        shared = [(await store.get(key("shared.test"))).session_id for _ in range(2)]
        await redis.aclose()
        troubles = store.rejected_entries + store.failed_operations
        return written, taken, shared, troubles, store.counters()["remote_hits"]

    def worker() -> tuple[list[bytes], list[bytes], list[bytes], int, int]:
        return asyncio.run(work())

    outcomes = run_forked([worker] * processes)

    async def leftovers() -> list[bytes]:
        redis = Redis(host=redis_server.host, port=redis_server.port)
        store = new_store(redis, **options)
        taken = []
        while (got := await store.get(key())) is not None:
            taken.append(got.session_id)
        await redis.flushdb()
        await redis.aclose()
        return taken

    written = [sid for outcome in outcomes for sid in outcome[0]]
    taken = [sid for outcome in outcomes for sid in outcome[1]] + asyncio.run(leftovers())
    assert len(written) == processes * per_process
    assert Counter(taken) == Counter(written)  # each exactly once
    assert all(outcome[2] == [tls12.session_id] * 2 for outcome in outcomes)
    assert all(outcome[3] == 0 for outcome in outcomes)
    assert sum(outcome[4] for outcome in outcomes) > 4  # (tickets went through Redis)


# -- Redis Cluster and Sentinel, through redis-py's clients ---------------------------------------


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisServer]:
    """A one-node Redis Cluster holding every slot (a master is writable 2 s after start)."""
    require_module("redis")
    import redis

    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    args += ["--cluster-port", str(_free_tcp_port())]  # (not port + 10000, maybe > 65535)
    with redis_for_stores(extra_args=args) as server:
        with redis.Redis(host=server.host, port=server.port) as plain:
            plain.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            for _ in range(100):
                if b"cluster_state:ok" in plain.execute_command("CLUSTER", "INFO"):
                    break
                time.sleep(0.05)
        yield server


async def test_redis_cluster_one_slot_namespace(redis_cluster: RedisServer) -> None:
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisCluster(host=redis_cluster.host, port=redis_cluster.port)
    writer = new_store(cluster, write_behind=True, max_keys=2)
    ticket, tls12 = native_record(), native_record("TLSv1.2")
    await writer.put(key(), ticket)
    await writer.put(key("b.test"), tls12)
    assert await writer.flush()
    reader = new_store(cluster, local=False)
    assert (await reader.get(key())).session_id == ticket.session_id
    assert await reader.get(key()) is None
    assert (await reader.get(key("b.test"))).session_id == tls12.session_id
    for name in ("c.test", "d.test"):  # the bound on keys (scripts touch several keys)
        await writer.put(key(name), native_record("TLSv1.2"))
    await writer.flush()
    assert writer.evicted >= 1
    await writer.clear()
    assert await cluster.keys("*") == []
    await cluster.aclose()


async def test_redis_sentinel_master_for(redis_server: RedisServer) -> None:
    from redis.asyncio.sentinel import Sentinel

    with _watchdog.directory("aiotlspool-sentinel-") as workdir:
        port = _free_tcp_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames no\n"
            f"sentinel monitor main {redis_server.host} {redis_server.port} 1\n"
        )
        proc = _Process(
            "redis-sentinel", [_binary(), str(conf), "--sentinel"], workdir, workdir / "log"
        )
        proc.start()
        try:
            proc.wait_ready(port)
            sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=0.5)
            master = sentinel.master_for("main", socket_timeout=0.5)
            ticket = native_record()
            await new_store(master).put(key(), ticket)
            assert (await new_store(master).get(key())).session_id == ticket.session_id
            await master.aclose()
        finally:
            proc.stop()


def _binary() -> str:
    try:
        return redis_binary()
    except ServerUnavailable as exc:
        skip_or_fail(str(exc))


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the single flight --------------------------------------------------------------------------


def flight_key(k: SessionKey, namespace: str = "test") -> str:
    return "{" + namespace + "}:flight:" + key_dir_name(k.store_id())


async def test_a_miss_leads_and_another_store_waits_for_the_leaders_session(client: Any) -> None:
    leader = new_store(client, single_flight_lease=5.0)
    waiter = new_store(client, single_flight_wait=5.0)
    assert await leader.get(key()) is None
    assert leader.counters()["flights_led"] == 1 and await client.exists(flight_key(key()))
    waiting = asyncio.ensure_future(waiter.get(key()))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # (without a single flight: a miss at once)
    session = native_record("TLSv1.2")
    put_at = time.monotonic()
    await leader.put(key(), session)  # publishes, and ends the flight
    got = await asyncio.wait_for(waiting, 3)
    assert got is not None and got.session_id == session.session_id
    assert time.monotonic() - put_at < 1.0  # (taken once there, not at the end of the wait)
    assert not await client.exists(flight_key(key()))
    counts = waiter.counters()
    assert (counts["flights_waited"], counts["waits_in_vain"], counts["remote_hits"]) == (1, 0, 1)


async def test_a_leader_never_waits_for_its_own_flight(client: Any) -> None:
    store = new_store(client, single_flight_wait=5.0, single_flight_lease=5.0)
    for _ in range(3):
        started = time.monotonic()
        assert await store.get(key()) is None
        assert time.monotonic() - started < 1.0
    assert store.counters()["flights_led"] == 3 and store.counters()["flights_waited"] == 0


async def test_a_leader_that_never_puts_delays_the_others_by_its_lease_only(client: Any) -> None:
    gone = new_store(client, single_flight_lease=0.5)  # leads, then dies (never puts)
    other = new_store(client, single_flight_wait=10.0, single_flight_lease=0.5)
    led_at = time.monotonic()
    assert await gone.get(key()) is None
    started = time.monotonic()
    assert await other.get(key()) is None  # waited for the lease, then led itself
    assert time.monotonic() - led_at > 0.45  # (the lease runs from gone's take)
    assert time.monotonic() - started < 0.5 + 1.0  # (the lease, not the 10 s wait)
    counts = other.counters()
    assert (counts["flights_waited"], counts["flights_led"], counts["waits_in_vain"]) == (1, 1, 1)
    # Having waited in vain, it does not wait for that key again for a while.
    third = new_store(client, single_flight_wait=10.0, single_flight_lease=5.0)
    assert await third.get(key()) is None  # (waits out other's lease, then leads)
    started = time.monotonic()
    assert await other.get(key()) is None
    assert time.monotonic() - started < 0.3


async def test_a_waiter_gives_up_after_single_flight_wait(client: Any) -> None:
    leader = new_store(client, single_flight_lease=10.0)
    waiter = new_store(client, single_flight_wait=0.3)
    assert await leader.get(key()) is None
    started = time.monotonic()
    assert await waiter.get(key()) is None
    assert 0.25 < time.monotonic() - started < 1.3
    assert waiter.counters()["waits_in_vain"] == 1


async def test_single_flight_wait_0_turns_the_single_flight_off(client: Any) -> None:
    first, second = (new_store(client, single_flight_wait=0) for _ in range(2))
    assert await first.get(key()) is None
    started = time.monotonic()
    assert await second.get(key()) is None
    assert time.monotonic() - started < 0.3
    assert not await client.exists(flight_key(key()))
    assert first.counters()["flights_led"] == second.counters()["flights_waited"] == 0


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("single_flight_wait", -1, ValueError),
        ("single_flight_lease", 0, ValueError),
        ("hold_ticket_for", "1", TypeError),
        ("hold_ticket_for", True, TypeError),
    ],
)
def test_the_new_options_are_validated(option: str, value: object, error: type) -> None:
    with pytest.raises(error, match=option):
        RedisSessionCache(object(), secret=SECRET, **{option: value})  # type: ignore[arg-type]


# -- the held ticket ----------------------------------------------------------------------------


async def test_a_held_ticket_is_taken_back_without_a_round_trip(client: Any) -> None:
    store = new_store(client, write_behind=True)
    ticket = native_record()
    await store.put(key(), ticket)
    await asyncio.sleep(0.05)  # the writer had its chance: the newest ticket is held back
    assert await client.llen(list_key(key())) == 0
    get = store.get(key())
    with pytest.raises(StopIteration) as done:
        get.send(None)  # done without suspending once: no Redis call
    assert done.value.value is ticket
    assert store.counters()["local_hits"] == 1
    assert await store.flush() is True
    assert await client.llen(list_key(key())) == 0  # taken: never written


async def test_the_same_ticket_put_twice_is_held_once(client: Any) -> None:
    store = new_store(client, write_behind=True)
    ticket = native_record()
    await store.put(key(), ticket)
    await store.put(key(), ticket)
    assert await store.get(key()) is ticket
    assert await store.flush() is True
    assert await client.llen(list_key(key())) == 0  # (nothing left to publish)


async def test_a_held_ticket_is_published_when_it_lingers_and_on_flush(client: Any) -> None:
    store = new_store(client, write_behind=True, hold_ticket_for=1.0)
    first, second, third = (native_record() for _ in range(3))
    await store.put(key(), first)
    await store.put(key(), second)  # a newer one: the first is published at once
    held_at = time.monotonic()
    await wait_for_async(lambda: client.llen(list_key(key())), 1)
    assert time.monotonic() - held_at < 0.8
    await wait_for_async(lambda: client.llen(list_key(key())), 2)  # lingered: published
    assert time.monotonic() - held_at > 0.9
    await store.put(key(), third)
    assert await store.flush() is True  # publishes the held one
    assert await client.llen(list_key(key())) == 3
    reader = new_store(client, local=False)
    taken = [(await reader.get(key())).session_id for _ in range(3)]
    assert taken == [r.session_id for r in (third, second, first)]


async def wait_for_async(value: Callable[[], Any], expected: object, timeout: float = 5) -> None:
    stop_at = time.monotonic() + timeout
    while (got := await value()) != expected:
        assert time.monotonic() < stop_at, f"{got!r}, not {expected!r}"
        await asyncio.sleep(0.01)


async def test_a_ticket_is_handed_out_once_whether_held_or_published(client: Any) -> None:
    """Two stores (two processes) put and take tickets of one key in a random order, with
    short holds lingering out in between; each ticket is taken exactly once."""
    options: dict[str, Any] = {"write_behind": True, "hold_ticket_for": 0.03}
    options.update(single_flight_wait=0, tickets_per_endpoint=1000)
    stores = [new_store(client, **options) for _ in range(2)]
    rng = random.Random(12)
    written: list[bytes] = []
    taken: list[bytes] = []
    for _ in range(300):
        store, action = rng.choice(stores), rng.random()
        if action < 0.45:
            record = native_record()
            written.append(record.session_id)
            await store.put(key(), record)
        elif action < 0.9:
            if (got := await store.get(key())) is not None:
                taken.append(got.session_id)
        else:
            await asyncio.sleep(rng.choice([0, 0.01, 0.05]))
    for store in stores:
        assert await store.flush() is True
    for store in stores:
        while (got := await store.get(key())) is not None:
            taken.append(got.session_id)
    assert Counter(taken) == Counter(written)
    assert all(n == 1 for n in Counter(taken).values())
    local = sum(store.counters()["local_hits"] for store in stores)
    remote = sum(store.counters()["remote_hits"] for store in stores)
    assert local > 10 and remote > 10  # (both paths taken)
