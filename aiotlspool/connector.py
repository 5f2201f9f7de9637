"""Opens TLS connections: offers a cached session, checks whether it resumed, captures the next.

This is the only module that calls the event loop's ``create_connection``. A connection's life
as seen from here:

1. take a session for the endpoint's :func:`~aiotlspool.session_key.session_key` from the cache;
2. open TCP + TLS with an :class:`~aiotlspool.engine.OfferingContext` that attaches it;
3. count the outcome (full, resumed, rejected) and drop a rejected session;
4. capture the connection's own session once it is complete: right away for TLS 1.2; for
   TLS 1.3 only after the ticket has arrived (which follows the handshake) - at release once
   data has been received, or else after the close_notify exchange at close.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from ._timeout import deadline
from .connection import Connection, StreamProtocol
from .endpoint import Endpoint
from .engines.base import OfferingContext, SessionEngine
from .exceptions import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    ResumptionRejected,
    TLSHandshakeError,
)
from .sessions.cached import TLS13, CachedSession
from .sessions.key import SessionKey, context_number, session_key
from .sessions.memory import MemorySessionCache
from .sessions.store import SessionCache
from .sessions.verification import Verification, verification_of
from .stats import Counters

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("aiotlspool")

# Failures worth another attempt: the server may be restarting or briefly overloaded.
_TRANSIENT_ERRORS = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)


class Connector:
    """Opens connections for one pool and keeps its session cache up to date."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        engine: SessionEngine,
        cache: SessionCache | None,
        counters: Counters,
        share_sessions_across_ports: bool,
        connect_timeout: float | None,
        connect_retries: int,
        retry_backoff: float,
        require_resumption: bool,
        close_timeout: float,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.ssl_context = ssl_context
        self.engine = engine
        self.cache = cache
        self.counters = counters
        self.share_sessions_across_ports = share_sessions_across_ports
        self.connect_timeout = connect_timeout
        self.connect_retries = connect_retries
        self.retry_backoff = retry_backoff
        self.require_resumption = require_resumption
        self.close_timeout = close_timeout
        self.spawn = spawn  # runs a coroutine in a task the pool tracks (and awaits at close)
        # session_key() is the one place keys are made; this only remembers its answers for the
        # context's current verification settings.
        self._keys: dict[Endpoint, SessionKey] = {}
        self._verification: Verification | None = None
        self._context_number = context_number(ssl_context)

    async def current_key(self, endpoint: Endpoint) -> tuple[SessionKey, Verification]:
        """The key for ``endpoint`` under the context's settings as they are now.

        When the settings changed since the last call (the user mutated the context), the
        sessions cached under the old ones are dropped and counted: they were obtained under
        other verification and must never be offered under these.
        """
        verification = verification_of(self.ssl_context)
        if verification is not self._verification:
            previous, self._verification = self._verification, verification
            self._keys.clear()
            if previous is not None and previous.fingerprint != verification.fingerprint:
                number, fingerprint = self._context_number, verification.fingerprint
                await self._drop_stale(
                    lambda key: key.context == number and key.verification != fingerprint
                )
        key = self._keys.get(endpoint)
        if key is None:
            if len(self._keys) >= 1024:
                self._keys.clear()  # many distinct endpoints: start over rather than grow
            key = self._keys[endpoint] = session_key(
                self.ssl_context,
                endpoint,
                share_across_ports=self.share_sessions_across_ports,
                verification=verification,
            )
        return key, verification

    async def replace_context(self, ssl_context: ssl.SSLContext) -> None:
        """Use ``ssl_context`` for new connections; drop the sessions of the old one."""
        old_number = self._context_number
        self.ssl_context = ssl_context
        self._context_number = context_number(ssl_context)
        self._verification = None
        self._keys.clear()
        if old_number != self._context_number:
            await self._drop_stale(lambda key: key.context == old_number)

    async def _drop_stale(self, stale: Callable[[SessionKey], bool]) -> None:
        if self.cache is not None:
            self.counters.stale_sessions_dropped += await self.cache.invalidate_where(stale)

    def _is_current(self, key: SessionKey) -> bool:
        """Whether ``key`` was made under the settings the context has now (as last read)."""
        current = self._verification
        return (
            current is not None
            and key.context == self._context_number
            and key.verification == current.fingerprint
        )

    async def connect(self, pool: Pool, endpoint: Endpoint) -> Connection:
        """Open a verified TLS connection to ``endpoint``, resuming a cached session if any.

        Retries transient failures with jittered exponential backoff; ``connect_timeout`` bounds
        all attempts together. Raises a :class:`ConnectError` subclass naming the endpoint.
        """
        context = self.ssl_context  # the one this connection uses, even if replaced meanwhile
        key, verification = await self.current_key(endpoint)
        attempt = 0
        try:
            async with deadline(self.connect_timeout):
                while True:
                    offer = await self.take_session(key)
                    offering = self.engine.offering_context(context, offer, verification)
                    try:
                        return await self._connect_once(pool, endpoint, key, offering)
                    except BaseException as exc:
                        self._forget_or_return(key, offering)
                        if isinstance(exc, ConnectError) or not isinstance(exc, OSError):
                            raise
                        if attempt >= self.connect_retries or not _is_transient(exc):
                            raise
                        attempt += 1
                        delay = self.retry_backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1)
                        logger.debug(
                            "connect to %s failed (%r); retry in %.3fs", endpoint, exc, delay
                        )
                        await asyncio.sleep(delay)
        except ConnectError:
            self.counters.connect_errors += 1
            raise
        except TimeoutError as exc:
            self.counters.connect_errors += 1
            raise ConnectTimeout(
                f"connecting to {endpoint} timed out after {self.connect_timeout}s "
                f"(TCP connect and TLS handshake; is the server up and speaking TLS?)",
                endpoint,
            ) from exc
        except OSError as exc:
            self.counters.connect_errors += 1
            raise _translate(exc, endpoint) from exc

    def _forget_or_return(self, key: SessionKey, offering: OfferingContext) -> None:
        """After a failed attempt: a session the server saw is dropped (it may be what the
        server choked on); one never sent - TCP refused, cancelled before the handshake - goes
        back to the cache, since taking a TLS 1.3 ticket removed it."""
        session = offering.session
        if session is None or self.cache is None:
            return
        if offering.handshake_done:
            return  # the outcome was handled after the handshake
        if offering.settings_changed:
            return  # taken under settings the context no longer has: stale
        if offering.handshake_started:
            if not session.single_use:  # a TLS 1.3 ticket left the cache when it was taken
                self.spawn(self.cache.invalidate(key, session))
        elif session.single_use:
            self.spawn(self.cache.put(key, session))

    async def _connect_once(
        self, pool: Pool, endpoint: Endpoint, key: SessionKey, offering: OfferingContext
    ) -> Connection:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = StreamProtocol(reader)
        started = time.perf_counter()
        transport, _ = await loop.create_connection(
            lambda: protocol,
            endpoint.host,
            endpoint.port,
            # Duck-typed: asyncio and uvloop only call wrap_bio on it.
            ssl=cast(ssl.SSLContext, offering),
            server_hostname=endpoint.server_hostname,
        )
        finished = time.perf_counter()
        offering.handshake_done = True
        # From here on we own an open socket: any failure or cancellation must close it.
        try:
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            ssl_object = offering.ssl_object
            assert ssl_object is not None
            return await self._after_handshake(
                pool,
                endpoint,
                key,
                offering,
                reader,
                writer,
                protocol,
                ssl_object,
                started,
                finished,
            )
        except BaseException:
            if not transport.is_closing():  # (a close() above has counted itself)
                self.counters.connections_closed += 1
            transport.abort()
            raise

    async def _after_handshake(
        self,
        pool: Pool,
        endpoint: Endpoint,
        key: SessionKey,
        offering: OfferingContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: StreamProtocol,
        ssl_object: ssl.SSLObject,
        started: float,
        finished: float,
    ) -> Connection:
        reused = ssl_object.session_reused
        tls_version = ssl_object.version() or ""
        offer = offering.session
        rejected = offering.offered and not reused
        if offering.settings_changed:
            # The context changed between taking the session and the handshake: the session
            # was not offered, and this connection's own session belongs to neither key.
            offer = None
            if offering.session is not None and offering.session.single_use:
                self.counters.stale_sessions_dropped += 1  # taken out of the cache for nothing
        if reused:
            self.counters.resumed_handshakes += 1
        else:
            self.counters.full_handshakes += 1
        self.counters.connections_opened += 1
        handshake_seconds = finished - offering.handshake_started
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s handshake to %s (%s) in %.1f ms%s",
                "resumed" if reused else "full",
                endpoint,
                tls_version,
                handshake_seconds * 1000,
                "; the server refused the cached session" if rejected else "",
            )
        conn = Connection(
            pool=pool,
            endpoint=endpoint,
            key=key,
            reader=reader,
            writer=writer,
            protocol=protocol,
            ssl_object=ssl_object,
            session_reused=reused,
            handshake_seconds=handshake_seconds,
            connect_seconds=finished - started,
            # A resumed TLS 1.2 session stays valid in the cache; everything else is new.
            capture_pending=self.cache is not None
            and not offering.settings_changed
            and not (reused and tls_version != TLS13),
            created_at=asyncio.get_running_loop().time(),
            # After a TLS 1.3 resumption the connection shows the ticket it resumed with until
            # the server sends a new one: that one must not be stored again.
            resumed_session_id=offer.session_id if reused and offer is not None else b"",
        )
        if conn._capture_pending:
            conn._ticket_marker = self.engine.handshake_marker(ssl_object)
        if rejected and offer is not None:
            self.counters.rejected_sessions += 1
            await self._drop(key, offer)
        if tls_version != TLS13:
            # A TLS 1.2 session is complete once the handshake is: capture it now, so that
            # concurrent connects can already resume.
            await self.capture(conn)
        if rejected and self.require_resumption:
            await self.close(conn)
            raise ResumptionRejected(
                f"{endpoint} refused the cached TLS session (require_resumption=True); "
                "a new session was negotiated and cached",
                endpoint,
            )
        return conn

    async def capture(self, conn: Connection) -> None:
        """Capture ``conn``'s session into the cache, once per connection."""
        if not conn._capture_pending or self.cache is None:
            return
        conn._capture_pending = False
        session = self.engine.capture(conn.ssl_object)
        if session is None:
            logger.debug("no resumable session from %s (%s)", conn.endpoint, conn.tls_version)
            return
        if conn._resumed_session_id and session.session_id == conn._resumed_session_id:
            logger.debug("no new ticket from %s since it resumed", conn.endpoint)
            return
        if not self._is_current(conn._key):
            # The context changed (or was replaced) while the connection was open.
            self.counters.stale_sessions_dropped += 1
            return
        store = self._store(conn._key, session)
        if type(self.cache) is MemorySessionCache:  # exactly: a subclass may await in put
            await store  # completes without suspending: no cancellation can cut it short
        else:
            # A custom store may do I/O: a cancelled caller must not lose the session.
            await asyncio.shield(store)

    async def _store(self, key: SessionKey, session: CachedSession) -> None:
        assert self.cache is not None
        await self.cache.put(key, session)
        self.counters.sessions_stored += 1

    def ticket_likely_arrived(self, conn: Connection) -> bool:
        """Whether capturing ``conn``'s TLS 1.3 session now would find the ticket."""
        known = self.engine.ticket_arrived(conn.ssl_object, conn._ticket_marker)
        if known is not None:
            return known
        # Servers send tickets right after the handshake, before any application data.
        return conn._protocol.received_data

    async def close(self, conn: Connection) -> None:
        """Close with close_notify, then capture a TLS 1.3 session still waiting for its ticket
        (the shutdown exchange processes whatever the server sent before its close_notify)."""
        self.counters.connections_closed += 1
        try:
            await conn.close_streams(self.close_timeout)
        except asyncio.CancelledError:
            # Cancelled while waiting for the server's close_notify: finish in the background
            # (a TLS 1.3 ticket may still be captured), and let the caller go at once.
            self.spawn(self._finish_close(conn))
            raise
        await self.capture(conn)

    async def _finish_close(self, conn: Connection) -> None:
        try:
            await conn.close_streams(self.close_timeout)  # picks up where it was cancelled
            await self.capture(conn)
        except Exception:  # a failing custom cache: nothing else to do in the background
            logger.exception("error while closing %s", conn.endpoint)

    async def take_session(self, key: SessionKey) -> CachedSession | None:
        if self.cache is None:
            return None
        session = await self.cache.get(key)
        if session is not None and session.engine != self.engine.name:
            # Stored by a pool using another engine (a shared cache): unusable here.
            session = None
        if session is None:
            self.counters.cache_misses += 1
        else:
            self.counters.cache_hits += 1
        return session

    async def _drop(self, key: SessionKey, session: CachedSession) -> None:
        if self.cache is not None:
            await self.cache.invalidate(key, session)


def _is_transient(exc: OSError) -> bool:
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    return False


def _translate(exc: OSError, endpoint: Endpoint) -> ConnectError:
    """One clear exception per failure, naming the endpoint."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(
            f"certificate of {endpoint} did not verify for "
            f"{endpoint.server_hostname!r}: {exc.verify_message or exc.reason}",
            endpoint,
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        hint = " (is it a TLS server?)" if "WRONG_VERSION" in reason.upper() else ""
        return TLSHandshakeError(f"TLS handshake with {endpoint} failed: {reason}{hint}", endpoint)
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve host {endpoint.host!r}: {exc.strerror}", endpoint)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection to {endpoint} refused", endpoint)
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError)) or _is_eof(exc):
        return TLSHandshakeError(
            f"{endpoint} closed the connection during the TLS handshake (is it a TLS server?)",
            endpoint,
        )
    return ConnectError(f"cannot connect to {endpoint}: {exc}", endpoint)


def _is_eof(exc: Any) -> bool:
    return isinstance(exc, ssl.SSLEOFError)
