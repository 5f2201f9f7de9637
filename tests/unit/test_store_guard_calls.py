"""How the pool's guard calls a store: a call that answers without waiting needs no timer; one
that waits is bounded by ``store_timeout`` and gets its result, its exceptions and a
cancellation exactly as an ``await`` would give them."""

from __future__ import annotations

import asyncio

import pytest

from aiotlspool import CachedSession, MemorySessionCache, SessionKey, store_guard
from aiotlspool.stats import Counters

from ..support.helpers import key

SESSION_ENGINES = ["native"]  # (no engine plays a part)


class Scripted(MemorySessionCache):
    """``get`` answers at once, after ``waits`` suspensions, or hangs (``waits`` None)."""

    def __init__(self, waits: int | None) -> None:
        super().__init__()
        self.waits = waits
        self.unwound = False

    async def get(self, key: SessionKey) -> CachedSession | None:
        try:
            if self.waits is None:
                await asyncio.sleep(3600)
            for _ in range(self.waits or 0):
                await asyncio.sleep(0.001)
                await asyncio.sleep(0)  # (a bare yield too)
            if key.server_hostname == "raise.test":
                raise ConnectionError("store unreachable")
            return None
        finally:
            self.unwound = True


def guard(store: MemorySessionCache, timeout: float = 0.2) -> store_guard.GuardedStore:
    return store_guard.GuardedStore(store, timeout, Counters())


@pytest.mark.parametrize("waits", [0, 3])
async def test_a_call_gets_its_result_and_its_errors_whether_it_waits_or_not(
    waits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    timers = []
    real = store_guard.deadline
    monkeypatch.setattr(store_guard, "deadline", lambda s: timers.append(s) or real(s))
    guarded = guard(Scripted(waits))
    assert await guarded.get(key()) is None
    assert await guarded.get(key("raise.test")) is None  # an error: a miss, counted
    assert guarded.counters.store_errors == 1
    assert len(timers) == (0 if waits == 0 else 2)  # (a timer only for what waits)


async def test_a_hanging_call_is_cut_at_the_timeout_and_unwound() -> None:
    store = Scripted(None)
    guarded = guard(store, timeout=0.1)
    assert await asyncio.wait_for(guarded.get(key()), 2) is None
    assert guarded.counters.store_timeouts == 1 and store.unwound


async def test_a_cancelled_caller_cancels_the_stores_call() -> None:
    store = Scripted(None)
    task = asyncio.ensure_future(guard(store, timeout=10).get(key()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.unwound


class Flushing(MemorySessionCache):
    """A store that writes behind: ``flush`` raises, hangs, or records that it ran."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.flushed = False

    async def flush(self) -> None:
        if self.how == "raise":
            raise ConnectionError("store unreachable")
        if self.how == "hang":
            await asyncio.sleep(3600)
        self.flushed = True


@pytest.mark.parametrize("how", ["ok", "raise", "hang"])
async def test_closing_flushes_a_store_and_never_fails_for_it(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Flushing(how)
    await store_guard.flush_store(guard(store), timeout=0.05)  # as the pool holds it
    assert store.flushed is (how == "ok")
    warned = [r for r in caplog.records if "could not flush the session store" in r.message]
    assert len(warned) == (0 if how == "ok" else 1)
    await store_guard.flush_store(MemorySessionCache(), 0.05)  # (nothing to flush)
    await store_guard.flush_store(None, 0.05)
