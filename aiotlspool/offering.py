"""The object the pool passes to the event loop as ``ssl=`` for one connection.

asyncio (and uvloop) create a connection's TLS object by calling ``wrap_bio(incoming,
outgoing, server_side=..., server_hostname=...)`` on whatever was passed as ``ssl=``, once the
TCP connection is up and right before the handshake. They never pass ``session=``, so the pool
hands them an :class:`OfferingContext`: a per-connection stand-in for the user's SSLContext
whose ``wrap_bio`` creates the SSLObject with the user's context, then asks the session engine
to offer the cached session and to watch for new ones. The user's context is never changed.
"""

from __future__ import annotations

import socket
import ssl
import time
import weakref
from typing import Any, Protocol, cast

from .engines.base import SessionEngine, SessionSink
from .sessions.cached import CachedSession
from .sessions.key import SessionKey
from .sessions.verification import Verification, verification_of


class OfferingContext:
    """``ssl=`` for one connection: offers ``session`` and watches for new ones with ``sink``.

    ``verification`` is the context's settings when the session was taken. The context may
    change before the loop calls :meth:`wrap_bio`; the settings are read again there, and if
    they changed (``settings_changed``) the session is not offered - it may come from weaker
    settings - and ``verification`` becomes the settings the handshake runs under.
    """

    __slots__ = (
        "context",
        "engine",
        "handshake_done",
        "handshake_started",
        "offered",
        "session",
        "settings_changed",
        "sink",
        "ssl_object",
        "verification",
        "watched",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        engine: SessionEngine,
        verification: Verification,
        session: CachedSession | None,
        sink: SessionSink | None,
    ) -> None:
        self.context = context
        self.engine = engine
        self.verification = verification
        self.session = session
        self.sink = sink  # None: capture nothing (no cache)
        self.ssl_object: ssl.SSLObject | None = None
        self.handshake_started = 0.0
        self.offered = False  # the session was really attached
        self.watched = False  # the engine delivers this connection's sessions to sink
        self.handshake_done = False
        self.settings_changed = False

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: Any = None,
    ) -> ssl.SSLObject:
        self.handshake_started = time.perf_counter()
        ssl_object = self.context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._prepare(ssl_object)
        return ssl_object

    def wrap_socket(self, sock: socket.socket, server_hostname: str) -> ssl.SSLSocket:
        """The same for the socket transport (:mod:`aiotlspool.transports`): a client
        ``SSLSocket`` whose handshake has not started."""
        self.handshake_started = time.perf_counter()
        tls = self.context.wrap_socket(
            # "" (no name sent or checked: asyncio's meaning) is None for wrap_socket.
            sock,
            server_hostname=server_hostname or None,
            do_handshake_on_connect=False,
        )
        # The engines use only what SSLObject and SSLSocket have in common.
        self._prepare(cast(ssl.SSLObject, tls))
        return tls

    def _prepare(self, ssl_object: ssl.SSLObject) -> None:
        self.ssl_object = ssl_object
        if self.session is None and self.sink is None:
            return  # no session store: nothing to offer, nothing to key
        now = verification_of(self.context, self.verification)
        if now is not self.verification:
            self.settings_changed = True  # the session may come from weaker settings
            self.verification = now  # what this handshake runs under
        elif self.session is not None:
            self.offered = self.engine.offer(ssl_object, self.session)
        if self.sink is not None:
            self.watched = self.engine.watch(ssl_object, self.sink)

    def __getattr__(self, name: str) -> Any:
        # Anything else a loop might read (e.g. check_hostname) comes from the real context.
        return getattr(self.context, name)


class ArrivalStore(Protocol):
    """Where :class:`Arrivals` passes sessions on (the connector)."""

    def store_arrived(self, key: SessionKey, session: CachedSession) -> None: ...


class Arrivals:
    """The sink for the sessions a watched connection delivers: held until the handshake has
    been judged (so that connect stores them before it returns), then passed to
    ``store.store_arrived`` with ``key`` as they come (``key`` None: dropped).

    ``store`` is a weak reference (to the connector): the event loop's transport keeps the sink
    alive as long as the socket is open, and that must not keep a pool nobody uses alive (nor
    hide that it was never closed). A plain ``weakref.ref`` made once by its owner, not a
    ``WeakMethod`` per connection (Python code, ~45 bytecodes each).
    """

    __slots__ = ("held", "key", "store")

    def __init__(self, store: weakref.ReferenceType[ArrivalStore], key: SessionKey):
        self.store = store
        self.key: SessionKey | None = key
        self.held: list[CachedSession] | None = []

    def __call__(self, session: CachedSession) -> None:
        if self.held is not None:
            self.held.append(session)
        elif self.key is not None and (store := self.store()) is not None:
            store.store_arrived(self.key, session)

    def stop_holding(self) -> list[CachedSession]:
        """Stop holding; return what was held."""
        held, self.held = self.held or [], None
        return held
