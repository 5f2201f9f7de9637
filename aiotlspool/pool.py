"""The connection pool.

All state is two things: the connections (:class:`_Slot`, one per connection, including those
still connecting) and the queue of waiting acquires (:class:`_Waiter`). One function,
:meth:`Pool._assign`, hands slots to waiters and returns the connections to close; it is
synchronous, so on the event loop it runs atomically and needs no lock. Network I/O (connecting,
closing, cache calls) always happens outside it, and a cancelled close finishes in the
background.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import ssl
import warnings
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from ._timeout import deadline
from .connection import Connection
from .connector import Connector
from .endpoint import Endpoint
from .engines.native import NativeSessionEngine
from .engines.select import select_engine
from .exceptions import ConnectError, PoolClosed, PoolTimeout
from .sessions import transfer
from .sessions.memory import MemorySessionCache
from .sessions.store import SessionCache
from .stats import Counters, PoolStats

logger = logging.getLogger("aiotlspool")


class _State(enum.Enum):
    CONNECTING = "connecting"  # slot reserved; its acquirer is opening the connection
    IDLE = "idle"
    IN_USE = "in use"


@dataclass(eq=False, slots=True)
class _Slot:
    """One connection counted against the limits, from reservation to close."""

    endpoint: Endpoint
    state: _State
    connection: Connection | None = None
    released_at: float = 0.0  # loop time when it last became idle


@dataclass(eq=False, slots=True)
class _Waiter:
    """An acquire waiting for a slot. ``order`` is its place in the global FIFO."""

    endpoint: Endpoint
    future: asyncio.Future[_Slot]
    order: int


@dataclass(eq=False, slots=True)
class _EndpointSlots:
    """The slots and waiters of one endpoint (an index over the pool's state)."""

    count: int = 0  # slots of this endpoint in any state
    idle: list[_Slot] = field(default_factory=list)  # most recently released last
    waiters: deque[_Waiter] = field(default_factory=deque)


def _positive(name: str, value: float | None, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"{name} must be a number > 0{' or None' if allow_none else ''}, got {value!r}"
        )
    return float(value)


class Pool:
    """An asyncio pool of TLS connections that resumes TLS sessions on reconnect.

    Args:
        ssl_context: the context every connection uses (default
            ``ssl.create_default_context()``). It is never modified. Sessions are bound to this
            object: they are never offered through another context.
        session_cache: ``None`` for a private :class:`MemorySessionCache`, ``False`` to disable
            resumption, or any :class:`SessionCache` (which may be shared between pools).
        max_connections: connections open at once, all endpoints together (default 100).
        max_connections_per_endpoint: connections open at once to one endpoint (default: no
            limit beyond ``max_connections``).
        idle_timeout: seconds an idle connection is kept (default 30; None keeps it forever).
        max_lifetime: seconds after which a connection is not reused (default None: no limit).
        connect_timeout: seconds for TCP connect and TLS handshake together, retries included
            (default 10; None: no limit).
        acquire_timeout: seconds for a whole :meth:`acquire`: waiting for a free slot and
            connecting (default 30; None: no limit). Raises :class:`PoolTimeout`.
        connect_retries: further attempts after a transient connect failure (refused, reset;
            default 2), with jittered exponential backoff from ``retry_backoff`` seconds.
        require_resumption: raise :class:`ResumptionRejected` when the server refuses a cached
            session, instead of carrying on with a full handshake.
        share_sessions_across_ports: key sessions by context and server name only, so that all
            ports of a host share them (as the ScyllaDB driver does). Default: per port.
        close_timeout: seconds to wait for the server's close_notify when closing (default 2).
        session_engine: how sessions are captured and offered: ``"native"`` through libssl
            (no copies, no leak; needed for export/import), ``"stdlib"`` through the standard
            library only, or ``"auto"`` (default): native when its self-check passes here.

    Use it as ``async with Pool(...) as pool`` or call :meth:`aclose` when done. A pool belongs
    to the event loop that first uses it.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        session_cache: SessionCache | Literal[False] | None = None,
        max_connections: int = 100,
        max_connections_per_endpoint: int | None = None,
        idle_timeout: float | None = 30.0,
        max_lifetime: float | None = None,
        connect_timeout: float | None = 10.0,
        acquire_timeout: float | None = 30.0,
        connect_retries: int = 2,
        retry_backoff: float = 0.05,
        require_resumption: bool = False,
        share_sessions_across_ports: bool = False,
        close_timeout: float = 2.0,
        session_engine: str = "auto",
    ) -> None:
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
        elif not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
        if session_cache is None:
            cache: SessionCache | None = MemorySessionCache()
        elif session_cache is False:
            cache = None
        elif isinstance(session_cache, SessionCache):
            cache = session_cache
        else:
            raise TypeError(
                f"session_cache must be None, False or a SessionCache, got {session_cache!r}"
            )
        for name, flag in (
            ("require_resumption", require_resumption),
            ("share_sessions_across_ports", share_sessions_across_ports),
        ):
            if not isinstance(flag, bool):  # "false" is truthy: never guess
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        for name, limit in (
            ("max_connections", max_connections),
            ("connect_retries", connect_retries),
        ):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"{name} must be an int >= 0, got {limit!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_connections_per_endpoint is not None and (
            isinstance(max_connections_per_endpoint, bool)
            or not isinstance(max_connections_per_endpoint, int)
            or max_connections_per_endpoint < 1
        ):
            raise ValueError(
                "max_connections_per_endpoint must be an int >= 1 or None, "
                f"got {max_connections_per_endpoint!r}"
            )
        self.session_cache = cache
        self.max_connections = max_connections
        self.max_connections_per_endpoint = max_connections_per_endpoint or max_connections
        self.idle_timeout = _positive("idle_timeout", idle_timeout)
        self.max_lifetime = _positive("max_lifetime", max_lifetime)
        self.acquire_timeout = _positive("acquire_timeout", acquire_timeout)
        self._counters = Counters()
        self._engine = select_engine(session_engine)
        self._connector = Connector(
            ssl_context=ssl_context,
            engine=self._engine,
            cache=cache,
            counters=self._counters,
            share_sessions_across_ports=share_sessions_across_ports,
            connect_timeout=_positive("connect_timeout", connect_timeout),
            connect_retries=connect_retries,
            retry_backoff=_positive("retry_backoff", retry_backoff, allow_none=False) or 0.0,
            require_resumption=require_resumption,
            close_timeout=_positive("close_timeout", close_timeout, allow_none=False) or 0.0,
            spawn=self._spawn,
        )
        # The pool's state: every connection, and per endpoint an index of idle ones and waiters.
        self._slots: set[_Slot] = set()
        self._endpoints: dict[Endpoint, _EndpointSlots] = {}
        self._idle_count = 0
        self._waiting = 0
        self._order = itertools.count()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._recent_endpoints: dict[tuple[str, int, str | None, type], Endpoint] = {}

    # -- public API -------------------------------------------------------------------------

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @asynccontextmanager
    async def connection(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> AsyncIterator[Connection]:
        """Check out a connection for the ``async with`` block, then give it back.

        If the block raises (or is cancelled), the connection is closed rather than pooled:
        whatever protocol exchange was under way is in an unknown state.
        """
        conn = await self.acquire(host, port, server_hostname=server_hostname)
        try:
            yield conn
        except BaseException:
            await self._close_checked_out(conn)
            raise
        await self.release(conn)

    async def acquire(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> Connection:
        """Check out a connection to ``host:port``: an idle one, or a new one when a slot is free.

        ``server_hostname`` overrides the name sent as SNI and verified in the certificate (and
        under which sessions are cached). Waiters are served first come, first served. Give the
        connection back with :meth:`release` or close it with ``await conn.aclose()``.

        Raises :class:`PoolClosed`, :class:`PoolTimeout` (``acquire_timeout``), or a
        :class:`ConnectError` subclass naming the endpoint.
        """
        endpoint = self._endpoint_for(host, port, server_hostname)
        self._check_name_is_verified(endpoint)
        self._check_loop()
        if self._closed:
            raise PoolClosed(f"the pool is closed; cannot connect to {endpoint}")
        # Fast paths, when nobody is queued for this endpoint before us: an idle connection,
        # or room for a new one (no waiter and no assignment pass needed).
        slot: _Slot | None = None
        slots = self._endpoints.get(endpoint)
        if slots is None or not slots.waiters:
            if slots is not None and slots.idle:
                to_close: list[Connection] = []
                slot = self._take_idle(slots, to_close)
                self._close_in_background(to_close)
                if slot is not None:
                    assert slot.connection is not None
                    slot.connection.checkouts += 1
                    return slot.connection
            count = 0 if slots is None else slots.count
            if (
                len(self._slots) < self.max_connections
                and count < self.max_connections_per_endpoint
            ):
                slot = self._reserve(endpoint)
        try:
            async with deadline(self.acquire_timeout):
                if slot is None:
                    slot = await self._wait_for_slot(endpoint)
                    if slot.connection is not None:
                        slot.connection.checkouts += 1
                        return slot.connection
                return await self._connect(slot)
        except ConnectError:
            raise
        except TimeoutError:
            raise PoolTimeout(
                f"no connection to {endpoint} within acquire_timeout={self.acquire_timeout}s "
                f"({self._describe_load()})",
                endpoint,
            ) from None

    async def release(self, conn: Connection) -> None:
        """Give a checked-out connection back to the pool for reuse.

        A connection that is closed, got data while nobody was reading, or is past
        ``max_lifetime`` is closed instead. Releasing twice raises RuntimeError.
        """
        slot = self._checked_out_slot(conn, "release")
        if slot is None:
            return  # closed by the user after checkout: nothing left to give back
        connector = self._connector
        # Whether the socket has unread bytes is asked at checkout, when it matters.
        reusable = (
            not self._closed
            and conn.is_reusable(ask_socket=False)
            and not self._too_old(slot)
            and self._current_context(conn)
        )
        capture_now = reusable and conn._capture_pending and connector.ticket_likely_arrived(conn)
        if reusable:
            self._make_idle(slot)
            to_close = self._assign()
            self._schedule_reaper(slot)
        else:
            self._remove(slot)
            to_close = self._assign()
            to_close.append(conn)
        if capture_now or to_close:
            # Cancel-safe without a shield (which costs a task per call): the capture is
            # synchronous, a custom cache's put is shielded, and a close cut short by a
            # cancellation finishes in the background.
            await self._finish_release(conn if capture_now else None, to_close)

    async def aclose(self, timeout: float | None = 10.0) -> None:
        """Close the pool: idle connections now, connections in use once released.

        Waits up to ``timeout`` seconds for connections in use to come back, then closes them
        anyway (logging a warning). From the start, every acquire raises :class:`PoolClosed`.
        Safe to call more than once.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(timeout))
        await asyncio.shield(self._closing)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context new connections use (replace it with :meth:`set_ssl_context`)."""
        return self._connector.ssl_context

    async def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """Use ``ssl_context`` for every new connection from now on (certificate rotation,
        a new CA bundle).

        Idle connections made with the old context are closed now, and connections in use are
        closed when released instead of being pooled. Sessions cached under the old context are
        dropped (``stale_sessions_dropped``) and never offered under the new one. Returns once
        the idle connections are closed.
        """
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
        self._check_loop()
        if self._closed:
            raise PoolClosed("the pool is closed; cannot replace its ssl_context")
        await self._connector.replace_context(ssl_context)
        idle = [slot for slot in self._slots if slot.state is _State.IDLE]
        for slot in idle:
            self._remove(slot)
        to_close = [slot.connection for slot in idle if slot.connection is not None]
        await self._close_all(to_close + self._assign())

    @property
    def session_engine(self) -> str:
        """The session engine in use: ``"native"`` or ``"stdlib"``."""
        return self._engine.name

    async def export_session(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> bytes | None:
        """Take a cached session for the endpoint and return it as bytes, or None if none.

        The bytes are bound to the server name, port and this context's verification settings
        (see :meth:`import_session`). They hold the session's secret: store them like a key.
        A TLS 1.3 ticket is handed out once, so an exported ticket leaves the cache. Needs the
        native session engine (the standard library cannot serialize sessions).
        """
        self._native_engine("export")
        endpoint = self._endpoint_for(host, port, server_hostname)
        self._check_name_is_verified(endpoint)
        key, verification = await self._connector.current_key(endpoint)
        if not verification.complete:  # pragma: no cover - the native engine reads it all
            raise RuntimeError("this context's verification settings cannot be read in full")
        session = await self._connector.take_session(key)
        if session is None:
            return None
        # The key names the settings the session was obtained under (a changed context gets
        # new keys), so the export carries those, not whatever the context says later.
        return transfer.encode(session, key)

    async def import_session(
        self, data: bytes, host: str, port: int, *, server_hostname: str | None = None
    ) -> None:
        """Put an exported session into the cache for the endpoint, after checking its binding.

        Raises ValueError - and caches nothing - unless ``data`` is a well-formed export made
        for exactly this server name and port, through a context with the same verification
        settings (verify mode, host-name check, CA certificates, client certificate, protocol
        range), and not expired. Only import bytes from a store you trust.
        """
        engine = self._native_engine("import")
        endpoint = self._endpoint_for(host, port, server_hostname)
        self._check_name_is_verified(endpoint)
        key, verification = await self._connector.current_key(endpoint)
        if not verification.complete:  # pragma: no cover - the native engine reads it all
            raise RuntimeError("this context's verification settings cannot be read in full")
        native = transfer.decode(data, key, engine.libssl)
        version = "TLSv1.3" if native.protocol_version == 0x0304 else "TLSv1.2"
        session = engine.describe(native, version)
        if session is None:
            raise ValueError("the exported session cannot be resumed")
        if self.session_cache is None:
            raise RuntimeError("this pool has no session cache (session_cache=False)")
        await self.session_cache.put(key, session)

    def _check_name_is_verified(self, endpoint: Endpoint) -> None:
        # asyncio hands wrap_bio None for "", and OpenSSL then checks no name at all: with
        # check_hostname=True that would silently accept a certificate for any name.
        if not endpoint.server_hostname and self._connector.ssl_context.check_hostname:
            raise ValueError(
                f"server_hostname='' for {endpoint.host}:{endpoint.port} sends no server name, "
                "so no host name would be checked; the pool's context has check_hostname=True "
                "(pass a name, or use a context with check_hostname=False)"
            )

    def _native_engine(self, action: str) -> NativeSessionEngine:
        if not isinstance(self._engine, NativeSessionEngine):
            raise RuntimeError(
                f"session {action} needs the native session engine; this pool uses "
                f"{self._engine.name!r}"
            )
        return self._engine

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._closed

    def stats(self) -> PoolStats:
        """A snapshot of the counters and the current state (see :class:`PoolStats`)."""
        counts = dict.fromkeys(_State, 0)
        for slot in self._slots:
            counts[slot.state] += 1
        cache = self.session_cache
        c = self._counters
        return PoolStats(
            full_handshakes=c.full_handshakes,
            resumed_handshakes=c.resumed_handshakes,
            rejected_sessions=c.rejected_sessions,
            cache_hits=c.cache_hits,
            cache_misses=c.cache_misses,
            sessions_stored=c.sessions_stored,
            cache_size=cache.size() if cache is not None else 0,
            expired=cache.expired if cache is not None else 0,
            evicted=cache.evicted if cache is not None else 0,
            connections_opened=c.connections_opened,
            connections_closed=c.connections_closed,
            connect_errors=c.connect_errors,
            stale_sessions_dropped=c.stale_sessions_dropped,
            in_use=counts[_State.IN_USE],
            idle=counts[_State.IDLE],
            connecting=counts[_State.CONNECTING],
            waiting=self._waiting,
        )

    # -- acquiring --------------------------------------------------------------------------

    async def _wait_for_slot(self, endpoint: Endpoint) -> _Slot:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(endpoint, loop.create_future(), next(self._order))
        self._endpoint(endpoint).waiters.append(waiter)
        self._waiting += 1
        self._close_in_background(self._assign())
        try:
            return await waiter.future
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                # A slot was assigned as we were cancelled (or timed out): hand it on, or it is
                # lost forever (httpcore #1093, aiohttp #9670).
                self._give_back(future.result())
            elif not future.done() or future.cancelled():
                # Cancelling the task cancels the future it awaits; either way it was never
                # served. (A future failed with PoolClosed was already counted out.)
                future.cancel()
                self._waiting -= 1
                self._forget_waiter(waiter)
            raise

    def _forget_waiter(self, waiter: _Waiter) -> None:
        slots = self._endpoints.get(waiter.endpoint)
        if slots is None:
            return
        with suppress(ValueError):  # already popped by _assign
            slots.waiters.remove(waiter)
        if slots.count == 0 and not slots.waiters:
            del self._endpoints[waiter.endpoint]

    async def _connect(self, slot: _Slot) -> Connection:
        try:
            conn = await self._connector.connect(self, slot.endpoint)
        except BaseException:
            self._remove(slot)
            self._close_in_background(self._assign())
            raise
        slot.connection = conn
        slot.state = _State.IN_USE
        conn._slot = slot
        conn.checkouts += 1
        if self._closed:
            self._remove(slot)
            self._close_in_background([conn])
            raise PoolClosed(f"the pool was closed while connecting to {slot.endpoint}")
        return conn

    def _give_back(self, slot: _Slot) -> None:
        """Undo an assignment whose acquirer left before taking it."""
        to_close: list[Connection] = []
        if slot.connection is None:
            self._remove(slot)
        elif self._closed:
            self._remove(slot)
            to_close.append(slot.connection)
        else:
            self._make_idle(slot, keep_time=True)
        self._close_in_background(to_close + self._assign())

    # -- the assignment -----------------------------------------------------------------------

    def _assign(self) -> list[Connection]:
        """Serve waiters in FIFO order while a slot is free; return the connections to close.

        A waiter gets the most recently used idle connection of its endpoint, else a new slot if
        both limits allow, evicting the longest-idle connection of another endpoint when only
        the global limit is in the way.
        """
        to_close: list[Connection] = []
        if self._closed or not self._waiting:
            return to_close
        while True:
            waiter, slots = self._first_servable_waiter()
            if waiter is None or slots is None:
                return to_close
            slots.waiters.popleft()
            self._waiting -= 1
            slot = self._take_idle(slots, to_close)
            if slot is None:
                if len(self._slots) >= self.max_connections:
                    victim = self._longest_idle()
                    assert victim is not None
                    assert victim.connection is not None
                    self._remove(victim)
                    to_close.append(victim.connection)
                slot = self._reserve(waiter.endpoint)
            waiter.future.set_result(slot)

    def _first_servable_waiter(self) -> tuple[_Waiter | None, _EndpointSlots | None]:
        """The oldest waiter that can be served now, with its endpoint's index."""
        best: _Waiter | None = None
        best_slots: _EndpointSlots | None = None
        global_room = len(self._slots) < self.max_connections or self._idle_count > 0
        for slots in self._endpoints.values():
            while slots.waiters and slots.waiters[0].future.done():
                slots.waiters.popleft()  # gave up (cancelled or timed out)
            if not slots.waiters:
                continue
            head = slots.waiters[0]
            servable = bool(slots.idle) or (
                slots.count < self.max_connections_per_endpoint and global_room
            )
            if servable and (best is None or head.order < best.order):
                best, best_slots = head, slots
        return best, best_slots

    def _take_idle(self, slots: _EndpointSlots, to_close: list[Connection]) -> _Slot | None:
        """Pop the most recent usable idle slot; stale or dead ones go to ``to_close``."""
        while slots.idle:
            slot = slots.idle[-1]
            conn = slot.connection
            assert conn is not None
            if self._expired(slot) or not conn.is_reusable() or not self._current_context(conn):
                self._remove(slot)
                to_close.append(conn)
                continue
            slots.idle.pop()
            self._idle_count -= 1
            conn._protocol.idle = False
            slot.state = _State.IN_USE
            return slot
        return None

    def _longest_idle(self) -> _Slot | None:
        oldest: _Slot | None = None
        for slots in self._endpoints.values():
            if slots.idle and (oldest is None or slots.idle[0].released_at < oldest.released_at):
                oldest = slots.idle[0]
        return oldest

    # -- state changes (the only places that move a slot between states) ----------------------

    def _endpoint_for(self, host: str, port: int, server_hostname: str | None) -> Endpoint:
        """The validated Endpoint for these arguments, remembered for the busy ones."""
        # Keyed by the port's type too: 443, 443.0 and True==1 hash alike, one is valid.
        args = (host, port, server_hostname, type(port))
        try:
            return self._recent_endpoints[args]
        except (KeyError, TypeError):  # TypeError: unhashable junk, rejected by create()
            endpoint = Endpoint.create(host, port, server_hostname)
        if len(self._recent_endpoints) >= 1024:
            self._recent_endpoints.clear()  # a crawler's long tail of hosts: start over
        self._recent_endpoints[args] = endpoint
        return endpoint

    def _endpoint(self, endpoint: Endpoint) -> _EndpointSlots:
        slots = self._endpoints.get(endpoint)
        if slots is None:
            slots = self._endpoints[endpoint] = _EndpointSlots()
        return slots

    def _reserve(self, endpoint: Endpoint) -> _Slot:
        """A new slot for a connection about to be opened (counted against the limits)."""
        slot = _Slot(endpoint, _State.CONNECTING)
        self._slots.add(slot)
        self._endpoint(endpoint).count += 1
        return slot

    def _make_idle(self, slot: _Slot, *, keep_time: bool = False) -> None:
        conn = slot.connection
        assert conn is not None
        assert slot.state is not _State.IDLE
        slot.state = _State.IDLE
        if not keep_time:
            slot.released_at = self._now()
        conn._protocol.idle = True
        self._endpoint(slot.endpoint).idle.append(slot)
        self._idle_count += 1

    def _remove(self, slot: _Slot) -> None:
        if slot not in self._slots:
            return
        self._slots.discard(slot)
        slots = self._endpoints[slot.endpoint]
        slots.count -= 1
        if slot.state is _State.IDLE:
            slots.idle.remove(slot)
            self._idle_count -= 1
        if slots.count == 0 and not slots.waiters:
            del self._endpoints[slot.endpoint]
        if slot.connection is not None:
            slot.connection._slot_removed = True
        if self._drained is not None and not self._slots:
            self._drained.set()

    # -- expiry ---------------------------------------------------------------------------

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _too_old(self, slot: _Slot) -> bool:
        conn = slot.connection
        return (
            self.max_lifetime is not None
            and conn is not None
            and self._now() - conn.created_at >= self.max_lifetime
        )

    def _current_context(self, conn: Connection) -> bool:
        """Whether ``conn`` was made with the context in use now (see set_ssl_context)."""
        return conn.ssl_object.context is self._connector.ssl_context

    def _expired(self, slot: _Slot) -> bool:
        when = self._expiry_time(slot)
        return when is not None and self._now() >= when

    def _expiry_time(self, slot: _Slot) -> float | None:
        times = []
        if self.idle_timeout is not None:
            times.append(slot.released_at + self.idle_timeout)
        if self.max_lifetime is not None and slot.connection is not None:
            times.append(slot.connection.created_at + self.max_lifetime)
        return min(times) if times else None

    def _schedule_reaper(self, slot: _Slot) -> None:
        """Make sure a timer will close ``slot`` when it expires, even if the pool goes quiet."""
        when = self._expiry_time(slot)
        if when is None or (self._reaper is not None and self._reaper.when() <= when):
            return
        if self._reaper is not None:
            self._reaper.cancel()
        assert self._loop is not None
        self._reaper = self._loop.call_at(when, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        to_close: list[Connection] = []
        for slot in [s for s in self._slots if s.state is _State.IDLE]:
            if self._expired(slot):
                assert slot.connection is not None
                self._remove(slot)
                to_close.append(slot.connection)
        to_close += self._assign()
        self._close_in_background(to_close)
        for slot in self._slots:
            if slot.state is _State.IDLE:
                self._schedule_reaper(slot)

    # -- closing ----------------------------------------------------------------------------

    def _checked_out_slot(self, conn: Connection, action: str) -> _Slot | None:
        if conn._pool is not self:
            raise ValueError(f"cannot {action} {conn!r}: it belongs to another pool")
        if conn._slot_removed:
            return None
        slot = conn._slot
        if slot is None or slot.state is not _State.IN_USE:
            raise RuntimeError(f"cannot {action} {conn!r}: it is not checked out")
        return slot

    async def _close_checked_out(self, conn: Connection) -> None:
        """Close a connection the user holds, freeing its slot (``Connection.aclose``)."""
        if conn._pool is not self:
            raise ValueError(f"{conn!r} belongs to another pool")
        slot = conn._slot
        if slot is not None and not conn._slot_removed:
            self._remove(slot)
            to_close = self._assign()
        else:
            to_close = []
        to_close.insert(0, conn)
        await self._finish_release(None, to_close)

    async def _finish_release(
        self, capture_from: Connection | None, to_close: list[Connection]
    ) -> None:
        if capture_from is not None:
            await self._connector.capture(capture_from)
        await self._close_all(to_close)

    async def _close_all(self, connections: list[Connection]) -> None:
        pending = [conn for conn in connections if not conn._close_started]
        for conn in pending:
            conn._close_started = True
        if len(pending) == 1:
            await self._close_one(pending[0])  # the common case: no task for gather
        elif pending:
            await asyncio.gather(*(self._close_one(conn) for conn in pending))

    async def _close_one(self, conn: Connection) -> None:
        try:
            await self._connector.close(conn)
        except Exception:  # a failing custom cache must not break closing
            logger.exception("error while closing %r", conn)

    def _close_in_background(self, connections: list[Connection]) -> None:
        if connections:
            self._spawn(self._close_all(connections))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task that :meth:`aclose` waits for."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close(self, timeout: float | None) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for slots in self._endpoints.values():
            for waiter in slots.waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(
                        PoolClosed(f"the pool was closed while waiting for {waiter.endpoint}")
                    )
            slots.waiters.clear()
        self._waiting = 0
        idle = [slot for slot in self._slots if slot.state is _State.IDLE]
        for slot in idle:
            self._remove(slot)
        await self._close_all([slot.connection for slot in idle if slot.connection is not None])
        if self._slots:
            self._drained = asyncio.Event()
            try:
                async with deadline(timeout):
                    await self._drained.wait()
            except TimeoutError:
                busy = [slot for slot in self._slots if slot.connection is not None]
                logger.warning(
                    "pool closed with %d connection(s) still in use after %ss; closing them",
                    len(self._slots),
                    timeout,
                )
                for slot in list(self._slots):
                    self._remove(slot)
                for slot in busy:
                    assert slot.connection is not None
                    slot.connection.writer.transport.abort()
                    slot.connection._close_started = True
                    self._counters.connections_closed += 1
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- misc -------------------------------------------------------------------------------

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this Pool is bound to another event loop")

    def _describe_load(self) -> str:
        return (
            f"{len(self._slots)}/{self.max_connections} connections open, "
            f"{self._idle_count} idle, {self._waiting} waiting"
        )

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Like asyncio transports and aiohttp sessions: say so when sockets are left open.
        if not getattr(self, "_closed", True) and getattr(self, "_slots", None):
            _warn(
                f"unclosed {self!r}: use 'async with Pool()' or 'await pool.aclose()'",
                ResourceWarning,
                source=self,
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Pool {state}: {self._describe_load()}>"
