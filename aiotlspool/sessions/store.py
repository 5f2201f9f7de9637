"""The session store interface: where a pool keeps sessions between connections.

Modelled on rustls' ``ClientSessionStore`` trait: the pool only takes, puts and invalidates;
expiry, bounds and sharing are the store's business. :class:`~aiotlspool.MemorySessionCache` is
the default implementation; :class:`~aiotlspool.FileSessionCache` persists sessions in a
directory shared by one user's processes, :class:`~aiotlspool.RedisSessionCache` in Redis shared
by processes on many hosts. All pass the same contract tests (``tests/unit/test_cache.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from .cached import CachedSession
from .key import SessionKey


class SessionCache(ABC):
    """Where the pool keeps sessions between connections. Subclass it to share or persist them.

    Methods are async so that an implementation may talk to another process; the pool calls them
    from its event loop. ``get`` *takes* a session: return a single-use session (TLS 1.3) to one
    caller only.
    """

    @abstractmethod
    async def get(self, key: SessionKey) -> CachedSession | None:
        """Take a session for ``key``, or None. Never return a session stored under another key."""

    @abstractmethod
    async def put(self, key: SessionKey, session: CachedSession) -> None:
        """Store a session captured from a successful handshake to ``key``."""

    @abstractmethod
    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        """Forget ``session`` (or every session of ``key`` when None): the server refused it."""

    @abstractmethod
    async def clear(self) -> None:
        """Forget every session."""

    async def invalidate_where(self, stale: Callable[[SessionKey], bool]) -> int:
        """Forget the sessions of every key for which ``stale(key)`` is true; return how many.

        The pool calls it when its context's verification settings change, so that sessions
        of the old settings do not linger. Such sessions are never offered again either way
        (their keys no longer match), so a store that cannot enumerate its keys may keep the
        default, which drops nothing and returns 0.
        """
        return 0

    @abstractmethod
    def size(self) -> int:
        """How many sessions are stored now."""

    @property
    def expired(self) -> int:
        """Sessions dropped because their lifetime ran out (0 if the cache does not count)."""
        return 0

    @property
    def evicted(self) -> int:
        """Sessions dropped to respect a size bound (0 if the cache does not count)."""
        return 0
