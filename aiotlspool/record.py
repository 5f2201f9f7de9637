"""What the connector and the pool keep about one open connection."""

from __future__ import annotations

import ssl
import weakref
from dataclasses import dataclass
from typing import cast

from .connection import Connection
from .engines.base import SessionEngine
from .sessions.cached import CachedSession
from .sessions.key import SessionKey


@dataclass(eq=False)  # (no slots: the socket transport's close hook holds it weakly)
class ConnectionRecord:
    """What the connector keeps about one open connection."""

    connection: Connection
    key: SessionKey
    # A session still to be captured the explicit way (the engine does not watch it).
    capture_pending: bool
    # The ticket a TLS 1.3 connection resumed with: seen again, it is not a new one.
    resumed_session_id: bytes
    closing: bool = False
    # The socket transport's capture at close (its SSLSocket forgets its TLS state once
    # closed): taken in its close hook, stored by the connector's close.
    captured_at_close: bool = False
    session_at_close: CachedSession | None = None


class CloseCapture:
    """The socket transport's close hook for one connection (``before_close``): its SSLSocket's
    last moment with TLS state (close_notify exchanged), when the TLS 1.3 session still waiting
    for its ticket is taken, with the engine's ``capture(ssl_socket)``, into the record (once it
    exists) for the connector's close to store.

    The event loop holds the hook while the socket is open, and the engine and the record lead
    to the pool: both are held weakly, so that a pool nobody uses is not kept alive by its
    sockets.
    """

    __slots__ = ("_engine", "record")

    def __init__(self, engine: weakref.ReferenceType[SessionEngine]) -> None:
        self._engine = engine
        self.record: weakref.ReferenceType[ConnectionRecord] | None = None

    def __call__(self, tls: ssl.SSLSocket) -> None:
        engine = self._engine()
        record = self.record() if self.record is not None else None
        if engine is not None and record is not None and record.capture_pending:
            # (the engines use only what SSLObject and SSLSocket have in common)
            record.session_at_close = engine.capture(cast(ssl.SSLObject, tls))
            record.captured_at_close = True
