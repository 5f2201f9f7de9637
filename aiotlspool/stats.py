"""Pool statistics: counters bumped where each event happens, and the snapshot users read."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .sessions.store import SessionCache


@dataclass(slots=True)
class Counters:
    """Running totals since the pool was created, all counted by the connector where their
    event happens (a handshake, a store, a close: ``connections_closed`` counts closes with
    close_notify, and aborts - by the pool at the end of its close timeout, or inside a connect
    cut short after its handshake)."""

    full_handshakes: int = 0
    resumed_handshakes: int = 0
    rejected_sessions: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    sessions_stored: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connect_errors: int = 0
    stale_sessions_dropped: int = 0
    store_errors: int = 0
    store_timeouts: int = 0


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of :meth:`Pool.stats`.

    Totals since the pool was created:

    - ``full_handshakes`` / ``resumed_handshakes``: successful TLS handshakes, by kind.
    - ``rejected_sessions``: cached sessions the server refused (the handshake went on in full);
      each such session was dropped from the cache.
    - ``cache_hits`` / ``cache_misses``: connects that found / did not find a session to offer.
    - ``sessions_stored``: sessions captured from connections and handed to the cache.
    - ``expired`` / ``evicted``: sessions the cache dropped for age / for its size bound.
    - ``connections_opened`` / ``connections_closed``, ``connect_errors`` (failed connects).
    - ``stale_sessions_dropped``: cached sessions dropped because the pool's context changed
      its verification settings or was replaced (:meth:`Pool.set_ssl_context`); such sessions
      are never offered under the new settings.
    - ``store_errors`` / ``store_timeouts``: calls to a custom session store that raised / did
      not answer within ``store_timeout``; each was a miss (or a session not stored), never a
      failed connect (:mod:`aiotlspool.store_guard`).

    Current state: ``cache_size`` (sessions held), ``in_use``, ``idle``, ``connecting`` (slots
    whose connection is being opened) and ``waiting`` (acquires queued for a slot).
    """

    full_handshakes: int
    resumed_handshakes: int
    rejected_sessions: int
    cache_hits: int
    cache_misses: int
    sessions_stored: int
    cache_size: int
    expired: int
    evicted: int
    connections_opened: int
    connections_closed: int
    connect_errors: int
    stale_sessions_dropped: int
    store_errors: int
    store_timeouts: int
    in_use: int
    idle: int
    connecting: int
    waiting: int

    @classmethod
    def of(
        cls,
        counters: Counters,
        cache: SessionCache | None,
        *,
        in_use: int,
        idle: int,
        connecting: int,
        waiting: int,
    ) -> PoolStats:
        """The snapshot from the running totals, the cache's own counts and the pool's state."""
        totals = {f.name: getattr(counters, f.name) for f in fields(counters)}
        return cls(
            **totals,
            cache_size=cache.size() if cache is not None else 0,
            expired=cache.expired if cache is not None else 0,
            evicted=cache.evicted if cache is not None else 0,
            in_use=in_use,
            idle=idle,
            connecting=connecting,
            waiting=waiting,
        )
