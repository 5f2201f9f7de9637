"""The store contract - bounds, LRU order, expiry, single-use TLS 1.3 tickets, key isolation -
for every store (MemorySessionCache, FileSessionCache and RedisSessionCache, through the
``store`` fixture), and what is the memory cache's alone.

Memory records wrap placeholder handles (the memory cache never looks inside one); file and
Redis records wrap real native sessions (those stores serialize them). The Redis kinds run
against one real redis-server for the module. The pool tests cover real use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotlspool import CachedSession, MemorySessionCache, SessionKey

from ..support.helpers import key
from ..support.redisserver import RedisServer
from ..support.stores import STORE_KINDS, StoreKind, redis_for_stores, store_kind


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_stores() as server:
        yield server


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKind]:
    redis = request.getfixturevalue("redis_server") if request.param.startswith("redis") else None
    kind = store_kind(request.param, tmp_path, redis)
    yield kind
    kind.close()


def test_tls13_tickets_are_handed_out_once_newest_first(store: StoreKind) -> None:
    cache = store.cache()
    first, second = store.session(), store.session()
    store.run(cache.put(key(), first))
    store.run(cache.put(key(), second))
    assert store.same(store.run(cache.get(key())), second)
    assert store.same(store.run(cache.get(key())), first)
    assert store.run(cache.get(key())) is None


def test_tls12_session_is_reusable_and_replaced_by_newer(store: StoreKind) -> None:
    cache = store.cache()
    old, new = store.session("TLSv1.2"), store.session("TLSv1.2")
    store.run(cache.put(key(), old))
    assert store.same(store.run(cache.get(key())), old)
    assert store.same(store.run(cache.get(key())), old)
    store.run(cache.put(key(), new))
    assert store.same(store.run(cache.get(key())), new)
    assert cache.size() == 1


def test_tickets_per_endpoint_bound(store: StoreKind) -> None:
    cache = store.cache(tickets_per_endpoint=3)
    sessions = [store.session() for _ in range(5)]
    for s in sessions:
        store.run(cache.put(key(), s))
    assert cache.size() == 3 and cache.evicted == 2
    got = [store.ident(store.run(cache.get(key()))) for _ in range(3)]
    assert got == [store.ident(s) for s in sessions[:1:-1]]


def test_lru_eviction_of_least_recently_used_key(store: StoreKind) -> None:
    cache = store.cache(max_size=2)
    store.run(cache.put(key("a"), store.session("TLSv1.2")))
    store.run(cache.put(key("b"), store.session("TLSv1.2")))
    store.run(cache.get(key("a")))  # a is now the most recently used
    store.run(cache.put(key("c"), store.session("TLSv1.2")))
    assert store.run(cache.get(key("b"))) is None
    assert store.run(cache.get(key("a"))) is not None and store.run(cache.get(key("c"))) is not None
    assert cache.evicted == 1


def test_expiry_uses_shorter_of_ttl_and_server_lifetime(store: StoreKind) -> None:
    cache = store.cache(ttl=3600)
    assert cache.lifetime_of(store.session(lifetime=60)) <= 60
    assert 3598 <= cache.lifetime_of(store.session(lifetime=None)) <= 3600
    long_lived = store.cache(ttl=30 * 24 * 3600)
    assert long_lived.lifetime_of(store.session(lifetime=None)) <= 7 * 24 * 3600


def test_lifetime_zero_is_not_stored(store: StoreKind) -> None:
    cache = store.cache()
    store.run(cache.put(key(), store.session(lifetime=0)))
    assert cache.size() == 0


def test_expired_sessions_are_dropped_and_counted(store: StoreKind) -> None:
    cache = store.cache(ttl=0.05)
    store.run(cache.put(key(), store.session()))
    time.sleep(0.1)
    assert store.run(cache.get(key())) is None
    assert cache.expired == 1 and cache.size() == 0


def test_version_change_replaces_stale_sessions(store: StoreKind) -> None:
    cache = store.cache()
    store.run(cache.put(key(), store.session("TLSv1.3")))
    tls12 = store.session("TLSv1.2")
    store.run(cache.put(key(), tls12))
    assert cache.size() == 1 and store.same(store.run(cache.get(key())), tls12)


def test_invalidate_one_or_all(store: StoreKind) -> None:
    cache = store.cache()
    a, b = store.session(), store.session()
    store.run(cache.put(key(), a))
    store.run(cache.put(key(), b))
    store.run(cache.invalidate(key(), b))
    assert store.same(store.run(cache.get(key())), a)
    store.run(cache.put(key(), b))
    store.run(cache.invalidate(key()))
    assert cache.size() == 0
    store.run(cache.put(key(), a))
    store.run(cache.clear())
    assert cache.size() == 0


def test_reuse_option_keeps_tickets(store: StoreKind) -> None:
    cache = store.cache(reuse_tls13_tickets=True)
    s = store.session()
    store.run(cache.put(key(), s))
    assert store.same(store.run(cache.get(key())), s) and store.same(store.run(cache.get(key())), s)


@pytest.mark.parametrize(
    "kwargs", [{"max_size": 0}, {"ttl": 0}, {"ttl": -1}, {"tickets_per_endpoint": 0}]
)
def test_invalid_options(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MemorySessionCache(**kwargs)  # type: ignore[arg-type]


keys = st.builds(
    SessionKey,
    context=st.integers(1, 3),
    server_hostname=st.sampled_from(["a.test", "b.test", "A.test", ""]),
    port=st.sampled_from([443, 8443, None]),
)
operations = st.lists(
    st.tuples(st.sampled_from(["put12", "put13", "get", "invalidate"]), keys), max_size=60
)


def test_properties_against_a_model(store: StoreKind) -> None:
    """Never returns a session stored under another key, never holds more than its bounds,
    and never hands a TLS 1.3 ticket out twice."""
    # Each file example makes a directory and real sessions: fewer examples, no fsync.
    examples = 200 if store.name == "memory" else 60 if store.name.startswith("file") else 40

    @settings(max_examples=examples, deadline=None)
    @given(ops=operations, max_size=st.integers(1, 4), per_key=st.integers(1, 3))
    def check(ops, max_size: int, per_key: int) -> None:  # type: ignore[no-untyped-def]
        if store.counts_keys:
            cache = store.cache(max_size=max_size, tickets_per_endpoint=per_key)
        else:
            cache = store.cache(
                max_size=max_size * per_key, tickets_per_endpoint=per_key, fsync=False
            )
        stored_under: dict[object, SessionKey] = {}
        handed_out: set[object] = set()
        keep_alive: list[CachedSession] = []  # so that id() values stay unique

        async def scenario() -> None:
            for op, k in ops:
                if op.startswith("put"):
                    s = store.session("TLSv1.2" if op == "put12" else "TLSv1.3")
                    keep_alive.append(s)
                    stored_under[store.ident(s)] = k
                    await cache.put(k, s)
                elif op == "get":
                    s = await cache.get(k)
                    if s is not None:
                        assert store.same_key(stored_under[store.ident(s)], k)
                        if s.single_use:
                            assert store.ident(s) not in handed_out
                            handed_out.add(store.ident(s))
                else:
                    await cache.invalidate(k)
                assert cache.size() <= max_size * per_key
                if store.name == "memory":
                    assert len(cache._entries) <= max_size

        store.run(scenario())

    check()
