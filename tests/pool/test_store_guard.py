"""A custom session store that fails or hangs costs resumptions, never connections: every call
is bounded by ``store_timeout``, every failure is a miss, counted and logged once per outage,
and the pool uses the store again once it answers."""

from __future__ import annotations

import asyncio
import logging

import pytest
import trustme

from aiotlspool import CachedSession, MemorySessionCache, Pool, SessionKey, store_guard

from ..support.helpers import connect_once
from ..support.servers import Server, client_context


class FlakyCache(MemorySessionCache):
    """The default cache behind a switch: ``"ok"``, ``"raise"`` (an outage) or ``"hang"``."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"
        self.calls = 0

    async def _check(self) -> None:
        self.calls += 1
        if self.mode == "raise":
            raise ConnectionError("store unreachable")
        if self.mode == "hang":
            await asyncio.sleep(3600)

    async def get(self, key: SessionKey) -> CachedSession | None:
        await self._check()
        return await super().get(key)

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        await self._check()
        await super().put(key, session)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        await self._check()
        await super().invalidate(key, session)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_failing_store_is_a_miss_counted_and_logged_once(
    ca: trustme.CA, server: Server, tls_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FlakyCache()
    cache.mode = "raise"
    async with Pool(client_context(ca, tls_version), session_cache=cache) as pool:
        results = [await connect_once(pool, server.port) for _ in range(3)]
        stats = pool.stats()
    assert results == [False, False, False]
    assert stats.full_handshakes == 3 and stats.connect_errors == 0, stats
    assert stats.store_errors >= 1 and stats.store_timeouts == 0, stats
    assert stats.cache_misses == 3, stats
    logged = warnings_logged(caplog)
    assert len(logged) == 1, logged
    assert "FlakyCache" in logged[0] and "store unreachable" in logged[0]
    # Left alone after the failure (not called on every connect while it keeps failing).
    assert cache.calls < 3 + 3 * 2


async def test_a_hanging_store_is_bounded_by_store_timeout(
    ca: trustme.CA, server: Server, tls_version: str
) -> None:
    cache = FlakyCache()
    cache.mode = "hang"
    ctx = client_context(ca, tls_version)
    async with Pool(ctx, session_cache=cache, store_timeout=0.05, connect_timeout=5) as pool:
        assert await asyncio.wait_for(connect_once(pool, server.port), 2.0) is False
        assert await asyncio.wait_for(connect_once(pool, server.port), 2.0) is False
        stats = pool.stats()
    assert stats.store_timeouts >= 1 and stats.store_errors == 0, stats
    assert stats.full_handshakes == 2 and stats.connect_errors == 0, stats


async def test_the_pool_uses_the_store_again_once_it_answers(
    ca: trustme.CA,
    server: Server,
    tls_version: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store_guard, "FIRST_PAUSE", 0.05)
    caplog.set_level(logging.INFO, logger="aiotlspool")
    cache = FlakyCache()
    async with Pool(client_context(ca, tls_version), session_cache=cache) as pool:
        assert await connect_once(pool, server.port) is False  # stores its session(s)
        cache.mode = "raise"
        assert await connect_once(pool, server.port) is False  # the take fails: a miss
        cache.mode = "ok"
        await asyncio.sleep(0.1)  # past the pause
        assert await connect_once(pool, server.port) is True
        stats = pool.stats()
    assert stats.store_errors >= 1 and stats.resumed_handshakes == 1, stats
    messages = [r.getMessage() for r in caplog.records]
    assert any("answers again" in m for m in messages), messages


async def test_the_default_cache_is_called_directly(ca: trustme.CA) -> None:
    async with Pool(client_context(ca)) as pool:
        assert type(pool._connector.cache) is MemorySessionCache
    async with Pool(client_context(ca), session_cache=FlakyCache()) as pool:
        assert isinstance(pool._connector.cache, store_guard.GuardedStore)


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_store_timeout_is_validated(ca: trustme.CA, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="store_timeout"):
        Pool(client_context(ca), store_timeout=value)  # type: ignore[arg-type]
