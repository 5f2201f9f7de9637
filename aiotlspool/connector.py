"""Opens TLS connections: offers a cached session, judges the handshake, stores what comes back.

One connection's life as seen from here (the transport is opened by
:mod:`aiotlspool.transports.choice`: the loop's ``create_connection`` or the socket transport):

1. the key for the endpoint (:class:`~aiotlspool.sessions.keyring.KeyRing`), a session for it;
2. TCP + TLS through an :class:`~aiotlspool.offering.OfferingContext`, whose ``wrap_bio`` (or
   ``wrap_socket``) reads the context's settings (a change since the take: nothing offered or
   captured, and the next connect drops the stale sessions) and has the engine offer the
   session and watch;
3. the outcome counted (full, resumed, rejected), a refused session dropped;
4. each new session stored as it arrives (native engine), or else captured once: TLS 1.2
   after the handshake, TLS 1.3 at release once data arrived or after close_notify at close.

A :class:`~aiotlspool.record.ConnectionRecord` per open connection is held by the pool's slot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .config import PoolConfig
from .connection import Connection, StreamProtocol
from .deadlines import Deadlines
from .endpoint import Endpoint
from .engines.base import SessionEngine
from .exceptions import ConnectError, ConnectTimeout, ResumptionRejected, is_transient, translate
from .offering import Arrivals, ArrivalStore, OfferingContext
from .record import CloseCapture, ConnectionRecord
from .sessions.cached import TLS13, CachedSession
from .sessions.key import SessionKey
from .sessions.keyring import KeyRing, StaleRule
from .sessions.memory import MemorySessionCache
from .sessions.store import SessionCache
from .sessions.verification import Verification
from .stats import Counters
from .store_guard import GuardedStore
from .transports.choice import open_tls_transport, resolve_choice, transport_plan

logger = logging.getLogger("aiotlspool")

CloseHook = Callable[[Connection], Awaitable[None]]


class Connector:
    """Opens connections for one pool and keeps its session store up to date."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        engine: SessionEngine,
        cache: SessionCache | None,
        counters: Counters,
        config: PoolConfig,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.engine = engine
        # Exactly the default store is called directly, and stored into without a task (it
        # never suspends or fails; a subclass may); any other store through the guard.
        self._memory_cache = cache if type(cache) is MemorySessionCache else None
        self.cache: SessionCache | GuardedStore | None = cache
        if cache is not None and self._memory_cache is None:
            self.cache = GuardedStore(cache, config.store_timeout, counters)
        self.counters = counters
        self.config = config
        self.spawn = spawn  # runs a coroutine in a task the pool tracks (and awaits at close)
        self.keys = KeyRing(ssl_context, share_across_ports=config.share_sessions_across_ports)
        self.transport_choice = resolve_choice(config.tls_transport)
        self._connect_deadlines = Deadlines(config.connect_timeout)  # one timer for all
        # What the loop's sinks and close hooks hold (weakly: see Arrivals), made once.
        self._weak_self: weakref.ReferenceType[ArrivalStore] = weakref.ref(self)
        self._weak_engine = weakref.ref(engine)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        return self.keys.context

    async def current_key(self, endpoint: Endpoint) -> tuple[SessionKey, Verification]:
        """The key for ``endpoint`` under the context's settings as they are now; when they
        changed, the sessions of the old settings are dropped (``stale_sessions_dropped``)."""
        key, verification, stale = self.keys.key_for(endpoint)
        if stale is not None:
            await self._drop_stale(stale)
        return key, verification

    async def replace_context(self, ssl_context: ssl.SSLContext) -> None:
        """Use ``ssl_context`` for new connections; drop the sessions of the old one."""
        stale = self.keys.replace(ssl_context)
        if stale is not None:
            await self._drop_stale(stale)

    async def _drop_stale(self, stale: StaleRule) -> None:
        if self.cache is not None:
            self.counters.stale_sessions_dropped += await self.cache.invalidate_where(stale)

    # -- connecting -----------------------------------------------------------------------

    async def connect(self, endpoint: Endpoint, close_hook: CloseHook) -> ConnectionRecord:
        """Open a verified TLS connection to ``endpoint``, resuming a cached session if any.

        Retries transient failures with jittered exponential backoff; ``connect_timeout`` bounds
        all attempts together. Raises a :class:`ConnectError` subclass naming the endpoint.
        """
        context = self.ssl_context  # the one this connection uses, even if replaced meanwhile
        # The settings are read once per connect, in wrap_bio right before the handshake (a
        # session taken under settings changed since is not offered): not re-read here.
        key, verification, stale = self.keys.key_for(endpoint, reread=False)
        assert stale is None
        attempt = 0
        try:
            with self._connect_deadlines.block():
                while True:
                    if self._memory_cache is not None:  # (no coroutine to make and await)
                        offer = self._count_taken(self._memory_cache.get_nowait(key))
                    else:
                        offer = await self.take_session(key)
                    arrivals = None if self.cache is None else Arrivals(self._weak_self, key)
                    offering = OfferingContext(context, self.engine, verification, offer, arrivals)
                    try:
                        return await self._connect_once(endpoint, key, offering, close_hook)
                    except BaseException as exc:
                        self._forget_or_return(key, offering)
                        if offering.settings_changed:  # (a retry uses the new settings' key)
                            key, verification = await self.current_key(endpoint)
                        if isinstance(exc, ConnectError) or not isinstance(exc, OSError):
                            raise
                        if attempt >= self.config.connect_retries or not is_transient(exc):
                            raise
                        attempt += 1
                        delay = self.config.retry_backoff * 2 ** (attempt - 1)
                        delay *= random.uniform(0.5, 1)
                        logger.debug(
                            "connect to %s failed (%r); retry in %.3fs", endpoint, exc, delay
                        )
                        await asyncio.sleep(delay)
        except (ConnectError, OSError) as exc:  # (TimeoutError is an OSError)
            self.counters.connect_errors += 1
            if isinstance(exc, ConnectError):
                raise
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout(
                    f"connecting to {endpoint} timed out after {self.config.connect_timeout}s "
                    f"(TCP connect and TLS handshake; is the server up and speaking TLS?)",
                    endpoint,
                ) from exc
            raise translate(exc, endpoint) from exc

    def _forget_or_return(self, key: SessionKey, offering: OfferingContext) -> None:
        """After a failed attempt: a session the server saw is dropped (it may be what the
        server choked on); one never sent - TCP refused, cancelled before the handshake - goes
        back to the cache, since taking a TLS 1.3 ticket removed it."""
        session = offering.session
        if session is None or self.cache is None or offering.handshake_done:
            return  # (after the handshake, the outcome was handled there)
        if offering.settings_changed:  # taken under settings the context no longer has
            if session.single_use:
                self.counters.stale_sessions_dropped += 1  # out of the cache for nothing
            return
        if offering.handshake_started:
            if not session.single_use:  # a TLS 1.3 ticket left the cache when it was taken
                self.spawn(self.cache.invalidate(key, session))
        elif session.single_use:
            self.spawn(self.cache.put(key, session))

    async def _connect_once(
        self, endpoint: Endpoint, key: SessionKey, offering: OfferingContext, hook: CloseHook
    ) -> ConnectionRecord:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)  # (no lookup of it: a getpid() on 3.10-3.11)
        protocol = StreamProtocol(reader, loop)
        started = time.perf_counter()
        plan = transport_plan(self.transport_choice, loop)  # (asked once per connect)
        capture_at_close = plan.socket and self.cache is not None
        at_close = CloseCapture(self._weak_engine) if capture_at_close else None
        transport, _ = await open_tls_transport(
            loop,
            plan,
            protocol,
            endpoint.host,
            endpoint.port,
            endpoint.server_hostname,
            bio_context=offering,  # asyncio and uvloop only call its wrap_bio
            wrap_socket=offering.wrap_socket,
            connect_timeout=self.config.connect_timeout,  # (our deadline around all of it)
            shutdown_timeout=self.config.close_timeout,
            before_close=at_close,
        )
        finished = time.perf_counter()
        offering.handshake_done = True
        # From here on we own an open socket: any failure or cancellation must close it.
        try:
            ssl_object = offering.ssl_object
            assert ssl_object is not None
            conn = Connection(
                endpoint=endpoint,
                reader=reader,
                writer=asyncio.StreamWriter(transport, protocol, reader, loop),
                protocol=protocol,
                ssl_object=ssl_object,
                session_reused=ssl_object.session_reused,
                handshake_seconds=finished - offering.handshake_started,
                connect_seconds=finished - started,
                created_at=loop.time(),
                close_hook=hook,
                close_bound=self.config.close_timeout if plan.ends_close else None,
            )
            return await self._after_handshake(conn, key, offering, at_close)
        except BaseException:
            if not transport.is_closing():  # (a close() above has counted itself)
                self.counters.connections_closed += 1
            transport.abort()
            raise

    async def _after_handshake(
        self,
        conn: Connection,
        key: SessionKey,
        offering: OfferingContext,
        at_close: CloseCapture | None,
    ) -> ConnectionRecord:
        reused = conn.session_reused
        offer = offering.session
        capture = self.cache is not None
        if offering.settings_changed:
            # The context changed between the take and the handshake: the session was not
            # offered; this connection's own sessions go under the key of the new settings.
            if offer is not None and offer.single_use:
                self.counters.stale_sessions_dropped += 1  # taken out of the cache for nothing
            offer = None
            key, now = await self.current_key(conn.endpoint)  # (drops the stale sessions)
            capture = capture and now is offering.verification  # (unless changed yet again)
            if isinstance(offering.sink, Arrivals):
                offering.sink.key = key if capture else None
        rejected = offering.offered and not reused
        self.counters.connections_opened += 1
        if reused:
            self.counters.resumed_handshakes += 1
        else:
            self.counters.full_handshakes += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s handshake to %s (%s) in %.1f ms%s",
                "resumed" if reused else "full",
                conn.endpoint,
                conn.tls_version,
                conn.handshake_seconds * 1000,
                "; the server refused the cached session" if rejected else "",
            )
        record = ConnectionRecord(
            conn,
            key,
            # Only what the engine does not watch; a resumed TLS 1.2 session stays cached.
            capture_pending=capture
            and not offering.watched
            and not (reused and conn.tls_version != TLS13),
            resumed_session_id=offer.session_id if reused and offer is not None else b"",
        )
        if at_close is not None:
            at_close.record = weakref.ref(record)  # (a close from here on may capture through it)
        if rejected and offer is not None:
            self.counters.rejected_sessions += 1
            if self.cache is not None:
                await self.cache.invalidate(key, offer)
        # Sessions from the handshake (TLS 1.2: delivered by a watching engine, or captured now)
        # are stored before connect returns, for concurrent connects; later ones as they come.
        if isinstance(offering.sink, Arrivals):
            for session in offering.sink.stop_holding():
                if capture:
                    await self._store_now(key, session)
        if record.capture_pending and conn.tls_version != TLS13:
            await self._capture(record)
        if rejected and self.config.require_resumption:
            await self.close(record)
            raise ResumptionRejected(
                f"{conn.endpoint} refused the cached TLS session (require_resumption=True); "
                "a new session was negotiated and cached",
                conn.endpoint,
            )
        return record

    async def take_session(self, key: SessionKey) -> CachedSession | None:
        if self.cache is None:
            return None
        return self._count_taken(await self.cache.get(key))

    def _count_taken(self, session: CachedSession | None) -> CachedSession | None:
        """``session`` as taken from the store, counted; None if this pool cannot use it."""
        if session is not None and session.engine != self.engine.name:
            # Stored by a pool using another engine (a shared cache): unusable here.
            session = None
        if session is None:
            self.counters.cache_misses += 1
        else:
            self.counters.cache_hits += 1
        return session

    # -- storing sessions -----------------------------------------------------------------

    def store_arrived(self, key: SessionKey, session: CachedSession) -> None:
        """A watched connection's new session, delivered as it arrives (inside the read)."""
        if self._memory_cache is not None:
            self._store_in_memory(key, session)
        else:
            self.spawn(self._store_remote(key, session))

    async def _store_now(self, key: SessionKey, session: CachedSession) -> None:
        if self._memory_cache is not None:
            self._store_in_memory(key, session)  # no suspension: a cancellation cannot cut it
        else:
            # A custom store may do I/O: a cancelled caller must not lose the session.
            await asyncio.shield(self._store_remote(key, session))

    def _store_in_memory(self, key: SessionKey, session: CachedSession) -> None:
        assert self._memory_cache is not None
        if self._still_current(key):
            self._memory_cache.put_nowait(key, session)
            self.counters.sessions_stored += 1

    async def _store_remote(self, key: SessionKey, session: CachedSession) -> None:
        assert self.cache is not None
        if self._still_current(key):
            await self.cache.put(key, session)
            self.counters.sessions_stored += 1

    def _still_current(self, key: SessionKey) -> bool:
        """Whether the context still has the settings ``key`` was made under (counted if not:
        the session must not be stored where settings it was not obtained under find it)."""
        if self.keys.is_current(key):
            return True
        self.counters.stale_sessions_dropped += 1
        return False

    def released(self, record: ConnectionRecord) -> Awaitable[None] | None:
        """The connection goes back to the pool: the capture to await, if a TLS 1.3 session is
        still to be captured and its ticket has arrived (servers send tickets before any
        application data); None (nothing to await, no coroutine made) otherwise. Awaiting it is
        cancel-safe: a capture into the default store completes without suspending, and a
        custom store's put is shielded."""
        if record.capture_pending and record.connection.bytes_received:
            return self._capture(record)
        return None

    async def _capture(self, record: ConnectionRecord) -> None:
        """Capture the connection's latest session, once per connection."""
        if not record.capture_pending or self.cache is None:
            return
        record.capture_pending = False
        conn = record.connection
        if record.captured_at_close:
            session = record.session_at_close
        else:
            session = self.engine.capture(conn.ssl_object)
        if session is None:
            logger.debug("no resumable session from %s (%s)", conn.endpoint, conn.tls_version)
        elif record.resumed_session_id and session.session_id == record.resumed_session_id:
            logger.debug("no new ticket from %s since it resumed", conn.endpoint)
        else:
            await self._store_now(record.key, session)

    # -- closing --------------------------------------------------------------------------

    async def close(self, record: ConnectionRecord) -> None:
        """Close once, with close_notify; then capture a TLS 1.3 session still waiting for its
        ticket (the shutdown exchange processes whatever the server sent before its
        close_notify). A watched connection's late tickets arrive during that exchange too."""
        if record.closing:
            return
        record.closing = True
        self.counters.connections_closed += 1
        try:
            await record.connection.close_streams(self.config.close_timeout)
        except asyncio.CancelledError:
            # Cancelled while waiting for the server's close_notify: finish in the background
            # (a TLS 1.3 ticket may still be captured), and let the caller go at once.
            self.spawn(self._finish_close(record))
            raise
        if record.capture_pending:  # (else no coroutine to make: the usual close)
            await self._capture(record)

    async def _finish_close(self, record: ConnectionRecord) -> None:
        try:
            await record.connection.close_streams(self.config.close_timeout)  # picks up again
            await self._capture(record)
        except Exception:  # a failing custom cache: nothing else to do in the background
            logger.exception("error while closing %s", record.connection.endpoint)

    def abort(self, record: ConnectionRecord) -> None:
        """Drop the connection at once (no close_notify, nothing captured)."""
        if not record.closing:
            record.closing = True
            self.counters.connections_closed += 1
            record.connection.abort()
