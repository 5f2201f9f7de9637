"""A session store in Redis, shared by processes on many hosts, with an in-process tier in front.

Data layout, entries and scripts: :mod:`~aiotlspool.sessions.redis_entries`; the in-process
tier: :mod:`~aiotlspool.sessions.redis_local`; writing behind:
:mod:`~aiotlspool.sessions.redis_writer`. Importing this module does not import redis-py; making
a store needs it (``pip install 'aiotlspool[redis]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._timeout import deadline
from .._validate import count, seconds, seconds_or_zero
from ..engines.libssl import NativeUnavailable
from ..engines.libssl_load import load_libssl
from . import file_entries as entries
from . import redis_entries as data
from .cached import CachedSession
from .file import _process
from .key import SessionKey
from .redis_codec import EntryCodec
from .redis_counts import StoreCounts
from .redis_flight import Flights, Waiting
from .redis_io import LEAD, WAIT, RedisIO, client_for
from .redis_local import InProcess
from .redis_publish import Publisher
from .sealing import EntrySealer
from .store import SessionCache

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["RedisSessionCache"]
_FLAGS = ("reuse_tls13_tickets", "store_client_certificate_sessions", "local", "write_behind")


class RedisSessionCache(StoreCounts, SessionCache):
    """Sessions in Redis, shared by every process that uses the same server, namespace and
    secret; a small in-process tier in front saves round trips.

    Args:
        client: a ``redis.asyncio.Redis`` (also from ``Sentinel.master_for``) or
            ``redis.asyncio.RedisCluster`` made by you, with ``decode_responses=False``. Give
            it short socket timeouts (see :meth:`from_url`): its defaults (5 s, 10 retries)
            outlast a connect. The store is used on the client's event loop.
        secret: the key that authenticates entries (at least 32 random bytes), or an
            :class:`~aiotlspool.EntrySealer` for key rotation or encryption. Every process
            sharing the namespace needs it.
        namespace: the prefix of every key (``{namespace}:...``; letters, digits, ``_.:/-``).
        ttl: the longest a session is offered after it was stored, in seconds; the server's
            lifetime hint shortens it, and 7 days caps it. Enforced by the reader and by
            Redis (PEXPIRE, one second later).
        tickets_per_endpoint: TLS 1.3 tickets kept per key (one reusable session per key).
        max_keys: how many keys (server, port, settings) the namespace holds; beyond it the
            least recently used key goes, with its sessions (``evicted``).
        reuse_tls13_tickets: hand a TLS 1.3 ticket out more than once (RFC 8446 C.4 advises
            against it).
        store_client_certificate_sessions: also store sessions of contexts with a client
            certificate (skipped by default: see docs/security.md).
        local: keep parsed sessions in this process (see below); False reads and parses
            every session from Redis.
        local_size: sessions the in-process tier holds.
        write_behind: ``put`` returns at once and a task writes in batches (see below);
            False: ``put`` waits for Redis and raises if it fails.
        max_pending: entries that may wait to be written (the oldest dropped beyond).
        timeout: the longest one Redis call may take, in seconds (TimeoutError after).
        single_flight_wait: the longest a get waits while another process makes the full
            handshake for an empty key (see below); 0: no single flight. Keep it well below
            the pool's ``store_timeout`` (0.5 s), which bounds the whole get.
        single_flight_lease: how long a leader may take to publish its session; a leader
            that dies delays the others this long at most.
        hold_ticket_for: seconds this process keeps its newest TLS 1.3 ticket of a key for its
            own next connect before publishing it (0: publish every ticket at once).

    The in-process tier: a reusable session (TLS 1.2) this process wrote or read is offered
    again without a round trip until it expires or is invalidated; a TLS 1.3 ticket is taken
    from Redis (an atomic pop: exactly one process gets each), except one this process
    captured and has not sent: the newest of each key is held back for ``hold_ticket_for``
    (older ones are published at once; ``flush()`` publishes the held ones too), so that a
    process reconnecting to a server pays no round trip. A held ticket is in no other place:
    it is still used once. When this process wins a ticket it wrote, it offers the session it
    kept rather than parsing the entry again.

    The single flight: a fleet that starts cold makes one full handshake per key. A get that
    finds the key empty in Redis either leads (returns None: its caller's handshake makes the
    session, which its put publishes) or, while another process leads, waits up to
    ``single_flight_wait`` for that session, taking it as soon as it is there. While others
    wait for a key, its TLS 1.3 tickets are published at once rather than held
    (:mod:`~aiotlspool.sessions.redis_flight`).

    Errors: a get, an invalidation or a waited put raises when Redis fails (``TimeoutError``
    when it does not answer within ``timeout``, a ``redis.RedisError`` otherwise); the pool
    counts that as a miss (``store_errors``, ``store_timeouts``). Written behind, a failure is
    counted here (``failed_operations``, ``dropped_puts``) and logged once per outage.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        secret: bytes | EntrySealer,
        namespace: str = "aiotlspool",
        ttl: float = 3600.0,
        tickets_per_endpoint: int = 8,
        max_keys: int = 10_000,
        reuse_tls13_tickets: bool = False,
        store_client_certificate_sessions: bool = False,
        local: bool = True,
        local_size: int = 1024,
        write_behind: bool = True,
        max_pending: int = 256,
        timeout: float = 0.5,
        single_flight_wait: float = 0.25,
        single_flight_lease: float = 0.25,
        hold_ticket_for: float = 0.3,
    ) -> None:
        flags = (reuse_tls13_tickets, store_client_certificate_sessions, local, write_behind)
        for name, flag in zip(_FLAGS, flags, strict=True):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if not isinstance(namespace, str) or not data.NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace must be 1 to 100 letters, digits or _.:/- , got {namespace!r}"
            )
        self.ttl = seconds("ttl", ttl)
        self.tickets_per_endpoint = count("tickets_per_endpoint", tickets_per_endpoint, minimum=1)
        self.max_keys = count("max_keys", max_keys, minimum=1)
        self.timeout = seconds("timeout", timeout)
        self.single_flight_wait = seconds_or_zero("single_flight_wait", single_flight_wait)
        self.single_flight_lease = seconds("single_flight_lease", single_flight_lease)
        self.hold_ticket_for = seconds_or_zero("hold_ticket_for", hold_ticket_for)
        self.reuse_tls13_tickets = reuse_tls13_tickets
        self.store_client_certificate_sessions = store_client_certificate_sessions
        self.write_behind = write_behind
        self.namespace = namespace
        self.client = client
        self._sealer = secret if isinstance(secret, EntrySealer) else EntrySealer(secret)
        try:
            self._libssl = load_libssl()
        except NativeUnavailable as exc:
            raise RuntimeError(
                "RedisSessionCache stores sessions of the native engine, whose libssl binding "
                f"is unavailable here: {exc}"
            ) from None
        StoreCounts.__init__(self, namespace)
        self._io = RedisIO(client, data.Keys(namespace), self.timeout, self._count_failure)
        self._here = InProcess(
            count("local_size", local_size, minimum=1) if local else None,
            self.max_keys,
            count("max_pending", max_pending, minimum=1),
        )
        self._flights = Flights(self.single_flight_wait, self.single_flight_lease)
        self._publish = Publisher(
            self._lock,
            self._counts,
            self._here,
            self._io,
            self._flights,
            hold_for=self.hold_ticket_for,
            max_keys=self.max_keys,
            ttl=self.ttl,
            describe=f"RedisSessionCache {namespace!r}",
        )
        self._codec = EntryCodec(
            self._sealer,
            self._libssl,
            self._lock,
            self._counts,
            self._here,
            self._refuse,
            ttl=self.ttl,
            keep=self.tickets_per_endpoint,
            client_certificates=store_client_certificate_sessions,
        )
        _live_stores.add(self)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        secret: bytes | EntrySealer,
        socket_timeout: float = 0.25,
        client_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RedisSessionCache:
        """A store on a new ``redis.asyncio.Redis`` for ``url`` (``redis://``, ``rediss://``
        for TLS, ``unix://``; user and password in it for AUTH) with timeouts fit for a
        connect path: ``socket_timeout`` to connect and per reply, and one immediate retry on
        a new connection (a restarted server leaves pooled connections dead).
        ``client_options`` go to ``Redis.from_url`` (e.g. ``ssl_ca_certs``,
        ``ssl_certfile``); ``options`` are the store's."""
        return cls(client_for(url, socket_timeout, client_options), secret=secret, **options)

    # -- the SessionCache interface ---------------------------------------------------------

    async def get(self, key: SessionKey) -> CachedSession | None:
        key_id = self._codec.key_id(key)
        now = time.time()
        with self._lock:
            self._here.note(key_id, key)
            session = self._here.hit(key_id, now, self.reuse_tls13_tickets, self.write_behind)
            if session is not None:
                self._counts["local_hits"] += 1
                if self._here.touch(key_id, now) and self.write_behind:
                    self._publish.writer.kick()
                return session
            batch = self._here.queue.writing(key_id)
        if batch is not None:  # this process's own put of the key is on its way: after it
            await self._io.settled(batch.done)
        return await self._take(key, key_id)

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        item = self._codec.entry_for(key, session, self._reusable(session))
        if item is None:
            return
        if self.write_behind:
            self._publish.behind(item)
        else:
            await self._publish.now(item)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        """Forget ``session`` (by its session id) or every session of ``key``, here and in
        Redis."""
        key_id = self._codec.key_id(key)
        if session is None:
            await self._drop(key_id, None, "all", "")
        else:
            await self._drop(key_id, session, "tag", entries.session_tag(session.session_id))

    async def invalidate_where(self, stale: Callable[[SessionKey], bool]) -> int:
        """Drop this process's own entries (each entry names its writer) of the keys this
        process used that ``stale`` names, and what it holds of them. Other processes'
        entries stay: their keys differ whenever their settings do, and they expire."""
        with self._lock:
            doomed = [key_id for key_id, key in self._here.keys.items() if stale(key)]
        dropped = 0
        for key_id in doomed:
            dropped += await self._drop(key_id, None, "writer", _process.token)
            with self._lock:
                self._here.keys.pop(key_id, None)
        return dropped

    async def clear(self) -> None:
        """Delete every key of the namespace (SCAN and UNLINK, never KEYS or FLUSHDB) and
        everything this process holds or has still to write."""
        with self._lock:
            self._here.clear()
        await self._io.clear()

    def size(self) -> int:
        """Sessions stored as this process last saw them: the lists of the keys it used, as
        Redis returned them to its last call for each (other processes' changes since are
        not seen), plus its entries waiting to be written, less what has expired."""
        with self._lock:
            return self._here.size(self.ttl)

    async def flush(self, timeout: float = 5.0, *, publish_held: bool = True) -> bool:
        """Publish the held tickets and wait (at most ``timeout`` seconds) until every put has
        been written (or dropped); whether nothing is left waiting. Call it before the event
        loop ends (``Pool.aclose()`` does). ``publish_held=False`` waits for what is queued only:
        the held tickets stay for this process's next connects."""
        if publish_held:
            self._publish.release_held()
        with contextlib.suppress(TimeoutError):
            async with deadline(timeout):
                await self._publish.writer.wait()
        with self._lock:
            queue = self._here.queue
            return (
                not queue.pending and queue.batch is None and (not publish_held or not queue.held)
            )

    @property
    def backend_answered_at(self) -> float:
        """``time.monotonic()`` of Redis's last answer (the pool's guard ends an outage on it)."""
        return self._io.answered_at

    def lifetime_of(self, session: CachedSession) -> float:
        """Seconds ``session`` may stay in this store from now (0 or less: do not store)."""
        return self._codec.lifetime_of(session)

    # -- taking -----------------------------------------------------------------------------

    async def _take(self, key: SessionKey, key_id: str) -> CachedSession | None:
        waiting: Waiting | None = None
        refused, started = 0, time.monotonic()
        while refused < self.tickets_per_endpoint + 2:  # (refused entries are skipped)
            with self._lock:
                lease = self._flights.lease_for(key_id)
            reuse, token = self.reuse_tls13_tickets, self._flights.token
            try:  # (a waiter's takes end with its wait, however slow Redis or this loop is)
                async with deadline(None if waiting is None else waiting.left()):
                    reply = await self._io.take(key_id, self.ttl, reuse, lease, token)
            except TimeoutError:
                if waiting is None:
                    raise
                with self._lock:
                    self._flights.missed(key_id, False, True, self._counts)
                return None
            with self._lock:
                self._counts["expired"] += reply.expired
                self._here.view.saw(key_id, reply.names)
            if reply.element is None:
                if reply.flight == WAIT:  # another process makes the session: take it
                    with self._lock:
                        waiting = waiting or self._flights.begin_wait(key_id, started, self._counts)
                    if (pause := waiting.next_poll()) is not None:
                        await asyncio.sleep(pause)
                        continue
                with self._lock:
                    led = reply.flight == LEAD
                    self._flights.missed(key_id, led, waiting is not None, self._counts)
                return None
            held = self._codec.open(reply.element, key_id, key, reply.taken)
            if held is not None:
                self._count("remote_hits")
                if self._reusable(held.session):
                    with self._lock:
                        self._here.hold(key_id, held, reusable=True)
                return held.session
            if not reply.taken:  # a refused entry that reads leave in place: out with it
                await self._io.remove(key_id, reply.element)
            refused += 1
        return None

    async def _drop(self, key_id: str, session: CachedSession | None, what: str, value: str) -> int:
        """Remove a key's entries by ``what`` (``tag``: that session; ``writer``: this
        process's; ``all``) here and in Redis; how many."""
        one, tag = (session, value) if what == "tag" else (None, None)
        with self._lock:
            dropped = self._here.forget(key_id, one, tag)
            batch = self._here.queue.writing(key_id)
        if batch is not None:
            await self._io.settled(batch.done)
        removed, names = await self._io.drop(key_id, what, value)
        with self._lock:
            self._here.view.saw(key_id, names)
        return dropped + removed

    def _reusable(self, session: CachedSession) -> bool:
        return not session.single_use or self.reuse_tls13_tickets

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._here.after_fork()
        self._codec.lock = self._lock
        self._publish.after_fork(self._lock)
        self._flights.after_fork()

    def __repr__(self) -> str:
        return f"<RedisSessionCache namespace={self.namespace!r} {self._sealer!r}>"


_live_stores: weakref.WeakSet[RedisSessionCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Entries waiting to be written are the parent's to write; its task is not ours.
    for store in list(_live_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
