"""Session stores: the :class:`SessionCache` interface and the default in-memory cache.

Modelled on rustls' client session cache: a bounded LRU map from key to the few sessions of one
server; TLS 1.3 tickets are handed out once each, a TLS 1.2 session may be used again; each
session expires after the shorter of the cache TTL and the server's stated lifetime.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from .session import CachedSession
from .session_key import SessionKey

# RFC 8446 4.6.1: servers MUST NOT give a ticket a lifetime above 7 days; trust no more than that.
MAX_SESSION_LIFETIME = 7 * 24 * 3600.0


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


@dataclass(slots=True)
class _Stored:
    session: CachedSession
    expires_at: float  # time.monotonic() deadline


@dataclass(slots=True)
class _Entry:
    """The sessions of one key. They are all of one TLS version: when a server changes version,
    the older kind is stale and is replaced as a whole."""

    tls_version: str
    sessions: deque[_Stored] = field(default_factory=deque)


class MemorySessionCache(SessionCache):
    """A bounded, in-process LRU session cache. Nothing is written to disk.

    Args:
        max_size: how many keys (server name, port, context) are remembered; the least recently
            used key is evicted beyond it. At most ``max_size * tickets_per_endpoint`` sessions
            (about 1 KB each) are held.
        ttl: the longest a session is kept, in seconds; the server's lifetime hint shortens it,
            and 7 days caps it.
        tickets_per_endpoint: TLS 1.3 tickets kept per key, so that a burst of reconnects can
            each resume with a fresh ticket.
        reuse_tls13_tickets: hand a TLS 1.3 ticket out more than once. RFC 8446 C.4 advises
            against it (the server can link the connections); off by default.

    Thread-safe: every operation holds a ``threading.Lock`` for a few dictionary operations and
    never awaits while holding it, so one cache may serve pools on several event loops.
    """

    def __init__(
        self,
        max_size: int = 1024,
        ttl: float = 3600.0,
        *,
        tickets_per_endpoint: int = 8,
        reuse_tls13_tickets: bool = False,
    ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        if (
            isinstance(tickets_per_endpoint, bool)
            or not isinstance(tickets_per_endpoint, int)
            or tickets_per_endpoint < 1
        ):
            raise ValueError(
                f"tickets_per_endpoint must be an int >= 1, got {tickets_per_endpoint!r}"
            )
        self.max_size = max_size
        self.ttl = float(ttl)
        self.tickets_per_endpoint = tickets_per_endpoint
        self.reuse_tls13_tickets = reuse_tls13_tickets
        self._entries: OrderedDict[SessionKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._expired = 0
        self._evicted = 0

    def lifetime_of(self, session: CachedSession) -> float:
        """Seconds ``session`` may stay in this cache from now (0 or less: do not store)."""
        lifetime = min(self.ttl, MAX_SESSION_LIFETIME)
        if session.lifetime is not None:
            lifetime = min(lifetime, session.lifetime)
        # A session stored some time after its handshake has less of its lifetime left.
        # OpenSSL records creation in whole seconds, hence the one second of slack.
        age = max(0.0, time.time() - session.created_at - 1.0)
        return lifetime - age

    async def get(self, key: SessionKey) -> CachedSession | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._drop_expired(key, entry, time.monotonic())
            if not entry.sessions:
                return None
            self._entries.move_to_end(key)
            newest = entry.sessions[-1].session
            if newest.single_use and not self.reuse_tls13_tickets:
                entry.sessions.pop()
                if not entry.sessions:
                    del self._entries[key]
            return newest

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        lifetime = self.lifetime_of(session)
        if lifetime <= 0:
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.tls_version != session.tls_version:
                if entry is not None:
                    self._evicted += len(entry.sessions)
                entry = self._entries[key] = _Entry(session.tls_version)
            if any(stored.session is session for stored in entry.sessions):
                return
            entry.sessions.append(_Stored(session, time.monotonic() + lifetime))
            # A TLS 1.2 session is reusable, so one per key is enough.
            keep = self.tickets_per_endpoint if session.single_use else 1
            while len(entry.sessions) > keep:
                entry.sessions.popleft()
                self._evicted += 1
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                _, oldest = self._entries.popitem(last=False)
                self._evicted += len(oldest.sessions)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            if session is not None:
                kept = [stored for stored in entry.sessions if stored.session is not session]
                entry.sessions = deque(kept)
            if session is None or not entry.sessions:
                del self._entries[key]

    async def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def size(self) -> int:
        with self._lock:
            now = time.monotonic()
            for key, entry in list(self._entries.items()):
                self._drop_expired(key, entry, now)
            return sum(len(entry.sessions) for entry in self._entries.values())

    @property
    def expired(self) -> int:
        return self._expired

    @property
    def evicted(self) -> int:
        return self._evicted

    def _drop_expired(self, key: SessionKey, entry: _Entry, now: float) -> None:
        # Caller holds the lock.
        live = [stored for stored in entry.sessions if stored.expires_at > now]
        if len(live) != len(entry.sessions):
            self._expired += len(entry.sessions) - len(live)
            entry.sessions = deque(live)
        if not entry.sessions:
            del self._entries[key]
