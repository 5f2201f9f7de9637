"""The object the pool passes to the event loop as ``ssl=`` for one connection.

asyncio (and uvloop) create a connection's TLS object by calling ``wrap_bio(incoming,
outgoing, server_side=..., server_hostname=...)`` on whatever was passed as ``ssl=``, once the
TCP connection is up and right before the handshake. They never pass ``session=``, so the pool
hands them an :class:`OfferingContext`: a per-connection stand-in for the user's SSLContext
whose ``wrap_bio`` creates the SSLObject with the user's context, then asks the session engine
to offer the cached session and to watch for new ones. The user's context is never changed.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from .engines.base import SessionEngine, SessionSink
from .sessions.cached import CachedSession
from .sessions.verification import Verification, verification_of


class OfferingContext:
    """``ssl=`` for one connection: offers ``session`` and watches for new ones with ``sink``.

    ``verification`` is the context's settings when the session was taken. The context may
    change before the loop calls :meth:`wrap_bio`; the settings are read again there, and if
    they changed (``settings_changed``) nothing is offered and nothing captured: the session may
    come from weaker settings, and this connection's own belongs to neither key.
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
        self.ssl_object = ssl_object
        if verification_of(self.context) is not self.verification:
            self.settings_changed = True
            return ssl_object
        if self.session is not None:
            self.offered = self.engine.offer(ssl_object, self.session)
        if self.sink is not None:
            self.watched = self.engine.watch(ssl_object, self.sink)
        return ssl_object

    def __getattr__(self, name: str) -> Any:
        # Anything else a loop might read (e.g. check_hostname) comes from the real context.
        return getattr(self.context, name)
