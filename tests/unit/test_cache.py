"""MemorySessionCache: bounds, LRU order, expiry, single-use TLS 1.3 tickets, key isolation.

Sessions here are CachedSession records around placeholder handles: the cache never looks
inside a handle, and the pool tests cover real sessions.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotlspool import CachedSession, MemorySessionCache, SessionKey

from ..support.helpers import key, make_session, run


def test_tls13_tickets_are_handed_out_once_newest_first() -> None:
    cache = MemorySessionCache()
    first, second = make_session(), make_session()
    run(cache.put(key(), first))
    run(cache.put(key(), second))
    assert run(cache.get(key())) is second
    assert run(cache.get(key())) is first
    assert run(cache.get(key())) is None


def test_tls12_session_is_reusable_and_replaced_by_newer() -> None:
    cache = MemorySessionCache()
    old, new = make_session("TLSv1.2"), make_session("TLSv1.2")
    run(cache.put(key(), old))
    assert run(cache.get(key())) is old
    assert run(cache.get(key())) is old
    run(cache.put(key(), new))
    assert run(cache.get(key())) is new
    assert cache.size() == 1


def test_tickets_per_endpoint_bound() -> None:
    cache = MemorySessionCache(tickets_per_endpoint=3)
    sessions = [make_session() for _ in range(5)]
    for s in sessions:
        run(cache.put(key(), s))
    assert cache.size() == 3 and cache.evicted == 2
    assert [run(cache.get(key())) for _ in range(3)] == sessions[:1:-1]


def test_lru_eviction_of_least_recently_used_key() -> None:
    cache = MemorySessionCache(max_size=2)
    run(cache.put(key("a"), make_session("TLSv1.2")))
    run(cache.put(key("b"), make_session("TLSv1.2")))
    run(cache.get(key("a")))  # a is now the most recently used
    run(cache.put(key("c"), make_session("TLSv1.2")))
    assert run(cache.get(key("b"))) is None
    assert run(cache.get(key("a"))) is not None and run(cache.get(key("c"))) is not None
    assert cache.evicted == 1


def test_expiry_uses_shorter_of_ttl_and_server_lifetime() -> None:
    cache = MemorySessionCache(ttl=3600)
    assert cache.lifetime_of(make_session(lifetime=60)) <= 60
    assert 3598 <= cache.lifetime_of(make_session(lifetime=None)) <= 3600
    long_lived = MemorySessionCache(ttl=30 * 24 * 3600)
    assert long_lived.lifetime_of(make_session(lifetime=None)) <= 7 * 24 * 3600


def test_lifetime_zero_is_not_stored() -> None:
    cache = MemorySessionCache()
    run(cache.put(key(), make_session(lifetime=0)))
    assert cache.size() == 0


def test_expired_sessions_are_dropped_and_counted() -> None:
    cache = MemorySessionCache(ttl=0.05)
    run(cache.put(key(), make_session()))
    time.sleep(0.1)
    assert run(cache.get(key())) is None
    assert cache.expired == 1 and cache.size() == 0


def test_version_change_replaces_stale_sessions() -> None:
    cache = MemorySessionCache()
    run(cache.put(key(), make_session("TLSv1.3")))
    tls12 = make_session("TLSv1.2")
    run(cache.put(key(), tls12))
    assert cache.size() == 1 and run(cache.get(key())) is tls12


def test_invalidate_one_or_all() -> None:
    cache = MemorySessionCache()
    a, b = make_session(), make_session()
    run(cache.put(key(), a))
    run(cache.put(key(), b))
    run(cache.invalidate(key(), b))
    assert run(cache.get(key())) is a
    run(cache.put(key(), b))
    run(cache.invalidate(key()))
    assert cache.size() == 0
    run(cache.put(key(), a))
    run(cache.clear())
    assert cache.size() == 0


def test_reuse_option_keeps_tickets() -> None:
    cache = MemorySessionCache(reuse_tls13_tickets=True)
    s = make_session()
    run(cache.put(key(), s))
    assert run(cache.get(key())) is s and run(cache.get(key())) is s


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


@settings(max_examples=200, deadline=None)
@given(ops=operations, max_size=st.integers(1, 4), per_key=st.integers(1, 3))
def test_properties_against_a_model(ops, max_size: int, per_key: int) -> None:  # type: ignore[no-untyped-def]
    """Never returns a session stored under another key, never holds more than its bounds,
    and never hands a TLS 1.3 ticket out twice."""
    cache = MemorySessionCache(max_size=max_size, tickets_per_endpoint=per_key)
    stored_under: dict[int, SessionKey] = {}
    handed_out: set[int] = set()
    keep_alive: list[CachedSession] = []  # so that id() values stay unique

    async def scenario() -> None:
        for op, k in ops:
            if op.startswith("put"):
                s = make_session("TLSv1.2" if op == "put12" else "TLSv1.3")
                keep_alive.append(s)
                stored_under[id(s)] = k
                await cache.put(k, s)
            elif op == "get":
                s = await cache.get(k)
                if s is not None:
                    assert stored_under[id(s)] == k
                    if s.single_use:
                        assert id(s) not in handed_out
                        handed_out.add(id(s))
            else:
                await cache.invalidate(k)
            assert cache.size() <= max_size * per_key
            assert len(cache._entries) <= max_size

    asyncio.run(scenario())
