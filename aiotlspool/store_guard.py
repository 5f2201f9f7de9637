"""A session store the pool does not trust to answer: every call bounded, every failure a miss.

A custom :class:`~aiotlspool.SessionCache` may talk to another process (a file tree, Redis...).
The pool calls it through :class:`GuardedStore`, so that the store can only cost resumptions,
never connections: a call that raises or outlives ``store_timeout`` counts (``store_errors``,
``store_timeouts``) and gives a miss (a full handshake) or drops what was to be stored. The
first failure of an outage is logged as a warning, the recovery once as info. After a failure
the store is left alone for a while (1 s, doubling up to 30 s while it keeps failing), so that
a store that hangs does not add its timeout to every connect; then the next call tries again.
The default in-process :class:`~aiotlspool.MemorySessionCache` is never wrapped.

A store that answers some calls by itself - an in-process tier in front of a remote one, or
writes queued behind - succeeds during an outage of what is behind it. Such a store tells the
guard when its backend last answered (a ``backend_answered_at`` attribute, a
``time.monotonic()`` value, as :class:`~aiotlspool.RedisSessionCache` has): the outage is over
only once the backend answered after the last failure. Without it, each local answer ended the
outage (and reset the pause) and the next remote call began another, logged again: the log
flapped every second and a hanging backend cost a timeout every second.
"""

from __future__ import annotations

import functools
import logging
import time
import types
from collections.abc import Callable, Coroutine, Generator
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
        self._failed_at = 0.0  # time.monotonic() of the last failure

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
            call = method(*args)
            if not isinstance(call, Coroutine):  # (an awaitable of another kind)
                async with deadline(self.timeout):
                    result: T = await call
            else:
                try:
                    waiting_for = call.send(None)
                except StopIteration as done:  # answered without waiting (an in-process tier)
                    result = done.value
                else:  # only now is there something to bound (a timer costs ~10 us a call)
                    async with deadline(self.timeout):
                        result = await _go_on(call, waiting_for)
        except TimeoutError:
            self.counters.store_timeouts += 1
            self._failed(action, f"no answer within {self.timeout}s")
            return fallback
        except Exception as exc:  # any failure of a user's store is a miss, never an outage
            self.counters.store_errors += 1
            self._failed(action, f"{type(exc).__name__}: {exc}")
            return fallback
        if self._failing and self._backend_answered():
            self._failing = False
            self._pause = FIRST_PAUSE
            logger.info("the session store %s answers again", _name(self.store))
        return result

    def _backend_answered(self) -> bool:
        """Whether the store's backend answered since the last failure (True when the store
        does not say: every answer is then its backend's)."""
        answered_at = getattr(self.store, "backend_answered_at", None)
        return not isinstance(answered_at, float) or answered_at > self._failed_at

    def _failed(self, action: str, reason: str) -> None:
        self._failed_at = time.monotonic()
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


@types.coroutine
def _go_on(call: Coroutine[Any, Any, T], waiting_for: Any) -> Generator[Any, Any, T]:
    """Await ``call``, which was started and is waiting for ``waiting_for`` (a future): the
    rest of what ``await call`` would have done, cancellation passed on to it."""
    while True:
        try:
            sent = yield waiting_for
        except GeneratorExit:
            call.close()
            raise
        except BaseException as exc:  # (CancelledError: the deadline, or the caller's)
            step: Callable[[], Any] = functools.partial(call.throw, exc)
        else:
            step = functools.partial(call.send, sent)
        try:
            waiting_for = step()
        except StopIteration as done:
            value: T = done.value
            return value


def _name(store: SessionCache) -> str:
    return type(store).__name__


async def flush_store(store: SessionCache | GuardedStore | None, timeout: float | None) -> None:
    """Let a store that writes behind (a ``flush()`` coroutine method, as
    :class:`~aiotlspool.RedisSessionCache` has) finish its writes, within ``timeout``: the
    pool is closing, and what it still holds (queued sessions, held TLS 1.3 tickets) would be
    lost with the process. A store that fails or runs out is logged, never raised from."""
    inner = store.store if isinstance(store, GuardedStore) else store
    flush = getattr(inner, "flush", None)
    if inner is None or flush is None:
        return
    try:
        async with deadline(timeout):
            await flush()
    except Exception as exc:  # (TimeoutError too) a store must not break closing
        logger.warning("could not flush the session store %s at close: %r", _name(inner), exc)
