"""The default session store: a bounded in-process LRU cache.

Modelled on rustls' client session cache: a bounded LRU map from key to the few sessions of one
server; TLS 1.3 tickets are handed out once each, a TLS 1.2 session may be used again; each
session expires after the shorter of the cache TTL and the server's stated lifetime.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._validate import count, seconds
from .cached import TLS13, CachedSession
from .key import SessionKey
from .store import SessionCache

# RFC 8446 4.6.1: servers MUST NOT give a ticket a lifetime above 7 days; trust no more than that.
MAX_SESSION_LIFETIME = 7 * 24 * 3600.0


@dataclass(slots=True)
class _Stored:
    session: CachedSession
    stored_at: float  # time.monotonic() when stored: the cache's ttl counts from here
    expires_at: float  # time.monotonic() deadline from the server's lifetime (and the 7-day cap)


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
        if not isinstance(reuse_tls13_tickets, bool):
            raise TypeError(f"reuse_tls13_tickets must be a bool, got {reuse_tls13_tickets!r}")
        self.max_size = count("max_size", max_size, minimum=1)
        self.ttl = seconds("ttl", ttl)
        self.tickets_per_endpoint = count("tickets_per_endpoint", tickets_per_endpoint, minimum=1)
        self.reuse_tls13_tickets = reuse_tls13_tickets
        self._entries: OrderedDict[SessionKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._expired = 0
        self._evicted = 0
        _live_caches.add(self)

    def configure(
        self,
        *,
        max_size: int | None = None,
        ttl: float | None = None,
        tickets_per_endpoint: int | None = None,
    ) -> None:
        """Change the bounds at runtime; what is already stored obeys them at once.

        A smaller ``max_size`` evicts the least recently used keys now; a shorter ``ttl``
        applies to stored sessions too (counted from when each was stored); a smaller
        ``tickets_per_endpoint`` drops the oldest tickets. Arguments left None are unchanged.
        """
        new_size = self.max_size if max_size is None else count("max_size", max_size, minimum=1)
        new_ttl = self.ttl if ttl is None else seconds("ttl", ttl)
        new_tickets = (
            self.tickets_per_endpoint
            if tickets_per_endpoint is None
            else count("tickets_per_endpoint", tickets_per_endpoint, minimum=1)
        )
        with self._lock:
            self.max_size, self.ttl, self.tickets_per_endpoint = new_size, new_ttl, new_tickets
            now = time.monotonic()
            for key, entry in list(self._entries.items()):
                self._drop_expired(key, entry, now)
                keep = self.tickets_per_endpoint if entry.tls_version == TLS13 else 1
                while len(entry.sessions) > keep:
                    entry.sessions.popleft()
                    self._evicted += 1
            self._evict_beyond_max_size()

    def lifetime_of(self, session: CachedSession) -> float:
        """Seconds ``session`` may stay in this cache from now (0 or less: do not store)."""
        return min(self.ttl, self._server_lifetime_left(session))

    @staticmethod
    def _server_lifetime_left(session: CachedSession) -> float:
        """Seconds left of the server's lifetime for ``session``, capped at 7 days."""
        lifetime = MAX_SESSION_LIFETIME
        if session.lifetime is not None:
            lifetime = min(lifetime, session.lifetime)
        # A session stored some time after its handshake has less of its lifetime left.
        # OpenSSL records creation in whole seconds, hence the one second of slack.
        age = max(0.0, time.time() - session.created_at - 1.0)
        return lifetime - age

    async def get(self, key: SessionKey) -> CachedSession | None:
        return self.get_nowait(key)

    def get_nowait(self, key: SessionKey) -> CachedSession | None:
        """Take a session without awaiting (what :meth:`get` does, callable from TLS hooks)."""
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
        self.put_nowait(key, session)

    def put_nowait(self, key: SessionKey, session: CachedSession) -> None:
        """Store a session without awaiting (what :meth:`put` does, callable from a callback)."""
        server_left = self._server_lifetime_left(session)
        if min(self.ttl, server_left) <= 0:  # (lifetime_of(), the server's part read once)
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.tls_version != session.tls_version:
                if entry is not None:
                    self._evicted += len(entry.sessions)
                entry = self._entries[key] = _Entry(session.tls_version)
            session_id = session.session_id
            for stored in entry.sessions:
                if stored.session is session or (
                    session_id and stored.session.session_id == session_id
                ):
                    return  # the same ticket or session, captured twice: keep one copy
            now = time.monotonic()
            entry.sessions.append(_Stored(session, now, now + server_left))
            # A TLS 1.2 session is reusable, so one per key is enough.
            keep = self.tickets_per_endpoint if session.single_use else 1
            while len(entry.sessions) > keep:
                entry.sessions.popleft()
                self._evicted += 1
            self._entries.move_to_end(key)
            self._evict_beyond_max_size()

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

    async def invalidate_where(self, stale: Callable[[SessionKey], bool]) -> int:
        with self._lock:
            dropped = 0
            for key in [key for key in self._entries if stale(key)]:
                dropped += len(self._entries.pop(key).sessions)
            return dropped

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

    # The helpers below run with the lock held.

    def _drop_expired(self, key: SessionKey, entry: _Entry, now: float) -> None:
        oldest_stored = now - self.ttl
        sessions = entry.sessions
        for s in sessions:
            if s.expires_at <= now or s.stored_at <= oldest_stored:
                break
        else:
            if sessions:
                return  # (the usual case: nothing expired, nothing to copy)
        live = [s for s in sessions if s.expires_at > now and s.stored_at > oldest_stored]
        if len(live) != len(entry.sessions):
            self._expired += len(entry.sessions) - len(live)
            entry.sessions = deque(live)
        if not entry.sessions:
            del self._entries[key]

    def _evict_beyond_max_size(self) -> None:
        while len(self._entries) > self.max_size:
            _, oldest = self._entries.popitem(last=False)
            self._evicted += len(oldest.sessions)

    def _drop_single_use(self) -> None:
        """In a forked child: TLS 1.3 tickets stay with the parent (each is used once);
        reusable TLS 1.2 sessions stay in both."""
        self._lock = threading.Lock()  # the parent's may have been held by another thread
        for key, entry in list(self._entries.items()):
            if entry.tls_version == TLS13:
                del self._entries[key]


# Every MemorySessionCache of this process, so that a fork can split them (see below).
_live_caches: weakref.WeakSet[MemorySessionCache] = weakref.WeakSet()
_held_across_fork: list[MemorySessionCache] = []


def _before_fork() -> None:
    # Hold every cache's lock across fork(), so that no cache is copied half-updated.
    _held_across_fork[:] = list(_live_caches)
    for cache in _held_across_fork:
        cache._lock.acquire()


def _after_fork_in_parent() -> None:
    for cache in _held_across_fork:
        cache._lock.release()
    _held_across_fork.clear()


def _after_fork_in_child() -> None:
    for cache in _held_across_fork:
        cache._drop_single_use()
    _held_across_fork.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
