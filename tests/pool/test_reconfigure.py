"""Runtime reconfiguration: Pool.set_ssl_context() and MemorySessionCache.configure().

A new context (certificate rotation, a new CA bundle) takes effect for every new connection at
once, and nothing made under the old one - idle connections, cached sessions - outlives the swap.
A cache's new bounds apply to what it already holds.
"""

from __future__ import annotations

import ssl
import time

import pytest
import trustme

from aiotlspool import (
    CertificateError,
    MemorySessionCache,
    Pool,
    PoolClosed,
)

from ..support.helpers import HOST, NAME, connect_once, key, make_session, roundtrip, run
from ..support.servers import Server, client_context, running_server, server_context

# -- Pool.set_ssl_context ------------------------------------------------------------------------


async def test_set_ssl_context_refuses_non_contexts_and_closed_pools(ca) -> None:
    ctx = client_context(ca)
    async with Pool(ctx) as pool:
        with pytest.raises(TypeError):
            await pool.set_ssl_context("not a context")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await pool.set_ssl_context(None)  # type: ignore[arg-type]
        assert pool.ssl_context is ctx
        new_ctx = client_context(ca)
        await pool.set_ssl_context(new_ctx)
        assert pool.ssl_context is new_ctx
    with pytest.raises(PoolClosed):
        await pool.set_ssl_context(client_context(ca))
    assert pool.ssl_context is new_ctx


async def test_set_ssl_context_closes_idle_connections_now_and_busy_ones_at_release(
    ca, server: Server, tls_version
) -> None:
    async with Pool(client_context(ca, tls_version)) as pool:
        idle = await pool.acquire(HOST, server.port, server_hostname=NAME)
        busy = await pool.acquire(HOST, server.port, server_hostname=NAME)
        await roundtrip(idle)
        await pool.release(idle)
        before = pool.stats()
        assert (before.idle, before.in_use) == (1, 1)
        await pool.set_ssl_context(client_context(ca, tls_version))
        after = pool.stats()
        assert (after.idle, after.in_use) == (0, 1)
        assert after.connections_closed == before.connections_closed + 1
        assert idle.closed
        # The connection checked out before the swap still works, but is not pooled again.
        await roundtrip(busy)
        await pool.release(busy)
        released = pool.stats()
        assert (released.idle, released.in_use) == (0, 0)
        assert released.connections_closed == before.connections_closed + 2
        assert busy.closed
        # The next checkout opens a new connection.
        async with pool.connection(HOST, server.port, server_hostname=NAME) as conn:
            await roundtrip(conn)
            assert conn is not idle and conn is not busy
        assert pool.stats().connections_opened == before.connections_opened + 1


async def test_new_connections_verify_with_the_new_context(ca, tls_version) -> None:
    ca2 = trustme.CA()
    async with running_server(server_context(ca2.issue_cert("localhost"), tls_version)) as srv:
        async with Pool(client_context(ca, tls_version)) as pool:  # trusts CA1 only
            with pytest.raises(CertificateError):
                await connect_once(pool, srv.port)
            await pool.set_ssl_context(client_context(ca2, tls_version))
            assert await connect_once(pool, srv.port) is False
            assert await connect_once(pool, srv.port) is True  # and caches under it
        assert (srv.handshakes, srv.resumed) == (2, 1)


async def test_sessions_cached_under_the_old_context_are_never_offered_under_the_new(
    ca, server: Server, tls_version
) -> None:
    async with Pool(client_context(ca, tls_version)) as pool:
        await connect_once(pool, server.port)
        assert await connect_once(pool, server.port) is True  # a session is cached and works
        resumed = server.resumed
        dropped = pool.stats().stale_sessions_dropped
        # A context that does not trust the server: verification fails, no resumption.
        untrusting = ssl.create_default_context()
        untrusting.minimum_version = untrusting.maximum_version = pool.ssl_context.maximum_version
        await pool.set_ssl_context(untrusting)
        with pytest.raises(CertificateError):
            await connect_once(pool, server.port)
        # Back to a trusting context (same settings as the first): still a full handshake.
        await pool.set_ssl_context(client_context(ca, tls_version))
        assert await connect_once(pool, server.port) is False
        assert server.resumed == resumed  # the server agrees: nothing was offered
        assert pool.stats().stale_sessions_dropped > dropped
        assert await connect_once(pool, server.port) is True


async def test_set_ssl_context_drops_the_old_sessions_from_a_shared_cache(
    ca, server: Server, tls_version
) -> None:
    cache = MemorySessionCache()
    async with Pool(client_context(ca, tls_version), session_cache=cache) as pool:
        await connect_once(pool, server.port)
        assert cache.size() >= 1
        await pool.set_ssl_context(client_context(ca, tls_version))
        assert cache.size() == 0
        assert pool.stats().stale_sessions_dropped >= 1


# -- MemorySessionCache.configure -----------------------------------------------------------------


def test_configure_smaller_max_size_evicts_least_recently_used_keys_now() -> None:
    cache = MemorySessionCache(max_size=10)
    keys = [key(f"h{i}.test") for i in range(5)]
    for k in keys:
        run(cache.put(k, make_session("TLSv1.2")))
    assert run(cache.get(keys[0])) is not None  # keys[0] is now the most recently used
    evicted = cache.evicted
    cache.configure(max_size=2)
    assert cache.size() == 2
    assert cache.evicted == evicted + 3
    assert [run(cache.get(k)) is not None for k in keys] == [True, False, False, False, True]
    # The new bound holds for later puts too.
    run(cache.put(key("new.test"), make_session("TLSv1.2")))
    assert cache.size() == 2


def test_configure_lower_ttl_applies_to_sessions_already_stored() -> None:
    cache = MemorySessionCache(ttl=60)
    run(cache.put(key("old.test"), make_session("TLSv1.2")))
    time.sleep(0.4)
    run(cache.put(key("new.test"), make_session("TLSv1.2")))
    expired = cache.expired
    cache.configure(ttl=0.2)
    assert run(cache.get(key("old.test"))) is None  # stored 0.4 s ago: past the new ttl
    assert run(cache.get(key("new.test"))) is not None  # stored just now: still within it
    assert cache.size() == 1
    assert cache.expired == expired + 1
    time.sleep(0.3)
    assert run(cache.get(key("new.test"))) is None
    assert cache.size() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_size": 0},
        {"max_size": -1},
        {"max_size": 1.5},
        {"max_size": True},
        {"max_size": "10"},
        {"ttl": 0},
        {"ttl": -1.0},
        {"ttl": True},
        {"ttl": "60"},
    ],
    ids=repr,
)
def test_configure_refuses_what_the_constructor_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)) as refused:
        MemorySessionCache(**kwargs)  # type: ignore[arg-type]
    cache = MemorySessionCache(max_size=7, ttl=30)
    run(cache.put(key("a.test"), make_session("TLSv1.2")))
    (argument,) = kwargs
    with pytest.raises(refused.type, match=argument):
        cache.configure(**kwargs)  # type: ignore[arg-type]
    assert (cache.max_size, cache.ttl, cache.size()) == (7, 30.0, 1)  # nothing changed
