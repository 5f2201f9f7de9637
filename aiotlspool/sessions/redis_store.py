"""A session store in Redis, shared by processes on many hosts, with an in-process tier in front.

Data layout, entries and scripts: :mod:`~aiotlspool.sessions.redis_entries`; the in-process
tier: :mod:`~aiotlspool.sessions.redis_local`; writing behind:
:mod:`~aiotlspool.sessions.redis_writer`. Importing this module does not import redis-py; making
a store needs it (``pip install 'aiotlspool[redis]'``).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._timeout import deadline
from .._validate import count, seconds
from ..engines.libssl import NativeSession, NativeUnavailable
from ..engines.libssl_load import load_libssl
from . import file_entries as entries
from . import redis_entries as data
from .cached import TLS13, CachedSession
from .file import _process
from .key import SessionKey
from .redis_counts import StoreCounts
from .redis_io import RedisIO
from .redis_local import Held, InProcess
from .redis_writer import Pending, Writer
from .sealing import EntrySealer
from .store import SessionCache

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["RedisSessionCache"]

BATCH = 64  # entries written per round trip


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

    The in-process tier: a reusable session (TLS 1.2) this process wrote or read is offered
    again without a round trip until it expires or is invalidated; a TLS 1.3 ticket is always
    taken from Redis (an atomic pop: exactly one process gets each), except one this process
    captured that is still waiting to be written, which its next connect may take - it was
    never anywhere else. When this process wins a ticket it wrote, it offers the session it
    kept rather than parsing the entry again.

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
    ) -> None:
        flags = {
            "reuse_tls13_tickets": reuse_tls13_tickets,
            "store_client_certificate_sessions": store_client_certificate_sessions,
            "local": local,
            "write_behind": write_behind,
        }
        for name, flag in flags.items():
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
        self._writer = Writer(self._write_step, f"RedisSessionCache {namespace!r}")
        self._last_ns = 0
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
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        settings: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 1),
        }
        settings.update(client_options or {})
        return cls(Redis.from_url(url, **settings), secret=secret, **options)

    # -- the SessionCache interface ---------------------------------------------------------

    async def get(self, key: SessionKey) -> CachedSession | None:
        key_id = entries.key_dir_name(key.store_id())
        now = time.time()
        with self._lock:
            self._here.note(key_id, key)
            session = self._here.hit(key_id, now, self.reuse_tls13_tickets, self.write_behind)
            if session is not None:
                self._counts["local_hits"] += 1
                if self._here.touch(key_id, now) and self.write_behind:
                    self._writer.kick()
                return session
            batch = self._here.queue.writing(key_id)
        if batch is not None:  # this process's own put of the key is on its way: after it
            await self._io.settled(batch.done)
        return await self._take(key, key_id)

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        item = self._entry_for(key, session)
        if item is None:
            return
        if self.write_behind:
            with self._lock:
                evicted, dropped = self._here.queue.add(item)
                self._counts["evicted"] += evicted
                self._counts["dropped"] += dropped
            self._writer.kick()
        else:
            with self._lock:
                touches = self._here.take_touches()
            await self._write([item], touches)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        """Forget ``session`` (by its session id) or every session of ``key``, here and in
        Redis."""
        key_id = entries.key_dir_name(key.store_id())
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

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout`` seconds) until every put has been written (or dropped);
        whether nothing is left waiting. Call it before the event loop ends."""
        try:
            async with deadline(timeout):
                await self._writer.wait()
        except TimeoutError:
            pass
        with self._lock:
            return not self._here.queue.pending and self._here.queue.batch is None

    def lifetime_of(self, session: CachedSession) -> float:
        """Seconds ``session`` may stay in this store from now (0 or less: do not store)."""
        return min(self.ttl, entries.server_lifetime_left(session))

    # -- taking -----------------------------------------------------------------------------

    async def _take(self, key: SessionKey, key_id: str) -> CachedSession | None:
        for _ in range(self.tickets_per_endpoint + 2):  # (refused entries are skipped)
            reply = await self._io.take(key_id, self.ttl, self.reuse_tls13_tickets)
            with self._lock:
                self._counts["expired"] += reply.expired
                self._here.view.saw(key_id, reply.names)
            if reply.element is None:
                self._count("remote_misses")
                return None
            held = self._open(reply.element, key_id, key, reply.taken)
            if held is not None:
                self._count("remote_hits")
                if self._reusable(held.session):
                    with self._lock:
                        self._here.hold(key_id, held, reusable=True)
                return held.session
            if not reply.taken:  # a refused entry that reads leave in place: out with it
                await self._io.remove(key_id, reply.element)
        return None

    def _open(self, element: bytes, key_id: str, key: SessionKey, taken: bool) -> Held | None:
        """The session of an entry read from ``key_id``'s list, or None (counted)."""
        name, sealed = data.split_element(element)
        if name is None:
            self._refuse(key_id, "corrupt")
            return None
        if self._here.local is not None:
            with self._lock:
                copy = self._here.local.copy_of(key_id, name, taken, time.time())
            if copy is not None:
                return copy
        try:
            payload = entries.open_entry(self._sealer, sealed, key_id)
            session = entries.session_of(payload, key, name, self._libssl, self.ttl)
        except entries.EntryExpired:
            self._count("expired")
            return None
        except entries.EntryRefused as exc:
            self._refuse(key_id, exc.reason)
            return None
        stored_at = payload["stored_at"]
        return Held(session, entries.deadline(stored_at, *_times(session), self.ttl), name)

    # -- storing ----------------------------------------------------------------------------

    def _entry_for(self, key: SessionKey, session: CachedSession) -> Pending | None:
        """The entry to write for ``session`` (also held in the local tier), or None."""
        if not isinstance(session.handle, NativeSession) or (
            key.client_certificate and not self.store_client_certificate_sessions
        ):
            self._count("skipped")
            return None
        lifetime = self.lifetime_of(session)
        if lifetime <= 0:
            return None
        with self._lock:
            stored_ns = self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name, sealed = entries.seal_entry(self._sealer, session, key, stored_ns, _process.token)
        key_id = entries.key_dir_name(key.store_id())
        keep = self.tickets_per_endpoint if session.tls_version == TLS13 else 1
        px = math.ceil(lifetime * 1000) + data.EXPIRY_GRACE_MS
        until = time.time() + lifetime
        with self._lock:
            self._here.note(key_id, key)
            self._here.hold(key_id, Held(session, until, name), self._reusable(session))
        return Pending(key_id, name, data.element_of(name, sealed), session, until, keep, px)

    async def _write_step(self) -> bool:
        """The writer's step: one batch (and the pending LRU updates); False if none."""
        with self._lock:
            batch, expired = self._here.queue.start_batch(asyncio.get_running_loop(), BATCH)
            self._counts["expired"] += expired
            touches = self._here.take_touches()
        if batch is None and not touches:
            return False
        try:
            await self._write([] if batch is None else batch.items, touches)
        except Exception:
            self._count("dropped", 0 if batch is None else len(batch.items))
            raise
        finally:
            if batch is not None:
                with self._lock:
                    self._here.queue.end_batch(batch)
        return True

    async def _write(self, items: list[Pending], touches: dict[str, int]) -> None:
        replies = await self._io.put(items, touches, self.max_keys, self.ttl)
        with self._lock:
            for item, reply in zip(items, replies, strict=True):
                self._counts["evicted"] += reply.evicted
                self._here.written(item, reply.names, reply.victims)

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
        self._writer.reset()

    def __repr__(self) -> str:
        return f"<RedisSessionCache namespace={self.namespace!r} {self._sealer!r}>"


def _times(session: CachedSession) -> tuple[float, float | None]:
    return session.created_at, session.lifetime


_live_stores: weakref.WeakSet[RedisSessionCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Entries waiting to be written are the parent's to write; its task is not ours.
    for store in list(_live_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
