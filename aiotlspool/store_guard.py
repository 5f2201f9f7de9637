"""A session store the pool does not trust to answer: every call bounded, every failure a miss.

A custom :class:`~aiotlspool.SessionCache` may talk to another process (a file tree, Redis...).
The pool calls it through :class:`GuardedStore`, so that the store can only cost resumptions,
never connections: a call that raises or outlives ``store_timeout`` counts (``store_errors``,
``store_timeouts``) and gives a miss (a full handshake) or drops what was to be stored. The
first failure of an outage is logged as a warning, the recovery once as info. After a failure
the store is left alone for a while (1 s, doubling up to 30 s while it keeps failing), so that
a store that hangs does not add its timeout to every connect; then the next call tries again.
The default in-process :class:`~aiotlspool.MemorySessionCache` is never wrapped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._timeout import deadline
from .sessions.cached import CachedSession
from .sessions.key import SessionKey
from .sessions.store import SessionCache
from .stats import Counters

logger = logging.getLogger("aiotlspool")

T = TypeVar("T")
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0


class GuardedStore:
    """``store``'s take, put and invalidations, bounded by ``timeout`` and failing open."""

    def __init__(self, store: SessionCache, timeout: float, counters: Counters) -> None:
        self.store = store
        self.timeout = timeout
        self.counters = counters
        self._failing = False
        self._pause = FIRST_PAUSE
        self._resume_at = 0.0  # time.monotonic() before which the store is not called

    async def get(self, key: SessionKey) -> CachedSession | None:
        return await self._call("take a session from", self.store.get, (key,), None)

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        await self._call("store a session in", self.store.put, (key, session), None)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        await self._call("drop a session from", self.store.invalidate, (key, session), None)

    async def invalidate_where(self, stale: Callable[[SessionKey], bool]) -> int:
        return await self._call(
            "drop stale sessions from", self.store.invalidate_where, (stale,), 0
        )

    async def _call(
        self,
        action: str,
        method: Callable[..., Coroutine[Any, Any, T]],
        args: tuple[Any, ...],
        fallback: T,
    ) -> T:
        if self._failing and time.monotonic() < self._resume_at:
            return fallback  # still failing a moment ago: a miss now beats a timeout
        try:
            async with deadline(self.timeout):
                result = await method(*args)
        except TimeoutError:
            self.counters.store_timeouts += 1
            self._failed(action, f"no answer within {self.timeout}s")
            return fallback
        except Exception as exc:  # any failure of a user's store is a miss, never an outage
            self.counters.store_errors += 1
            self._failed(action, f"{type(exc).__name__}: {exc}")
            return fallback
        if self._failing:
            self._failing = False
            self._pause = FIRST_PAUSE
            logger.info("the session store %s answers again", _name(self.store))
        return result

    def _failed(self, action: str, reason: str) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "could not %s the session store %s (%s): connecting with full handshakes "
                "where it cannot answer, and trying it again in %.0f s",
                action,
                _name(self.store),
                reason,
                self._pause,
            )
        else:
            self._pause = min(self._pause * 2, LONGEST_PAUSE)
        self._resume_at = time.monotonic() + self._pause


def _name(store: SessionCache) -> str:
    return type(store).__name__
