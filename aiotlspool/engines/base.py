"""The session engine interface: offer a session before a handshake, capture what comes back.

One small API serves every place where TLS is opened - the pool's connector today, an
``SSLContext`` handed to other libraries tomorrow - because it works on the ``SSLObject`` alone:

- :meth:`SessionEngine.offer` attaches a cached session to a connection whose handshake has not
  started;
- :meth:`SessionEngine.watch` asks the engine to deliver every session the server sends on the
  connection, the moment it arrives (the native engine does, through OpenSSL's new-session
  callback: each TLS 1.3 ticket, the TLS 1.2 session at the end of the handshake);
- :meth:`SessionEngine.capture` copies the connection's latest session, for engines (or
  contexts) that cannot watch: the caller then picks the moment (see the connector).

Both engines describe what they capture with the one rule of :meth:`SessionEngine.cacheable`.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable

from ..sessions.cached import TLS13, CachedSession

# Receives each session captured from a watched connection (on the thread that read it).
SessionSink = Callable[[CachedSession], None]


class SessionEngine(ABC):
    """Offers and captures sessions for one kind of session handle."""

    name: str

    @abstractmethod
    def offer(self, ssl_object: ssl.SSLObject, session: CachedSession) -> bool:
        """Attach ``session`` before the handshake; False (logged) if it could not be."""

    def watch(self, ssl_object: ssl.SSLObject, sink: SessionSink) -> bool:
        """Deliver every resumable session of this connection to ``sink`` as it arrives.

        Call before the handshake. False when this engine cannot for this connection: then
        :meth:`capture` is the only way.
        """
        return False

    @abstractmethod
    def capture(self, ssl_object: ssl.SSLObject) -> CachedSession | None:
        """The connection's latest session, if it can be resumed (a TLS 1.3 one needs its
        ticket, which arrives after the handshake). The standard library copies the session
        on every read, and leaks the copy on Python 3.10-3.13.0: call it sparingly."""

    def cacheable(
        self,
        handle: object,
        tls_version: str,
        *,
        resumable: bool,
        has_ticket: bool,
        lifetime_hint: int,
        created_at: float,
        session_id: bytes,
    ) -> CachedSession | None:
        """Describe a session for the cache, or None if offering it could not resume."""
        if not resumable or (tls_version == TLS13 and not has_ticket):
            # A ticketless TLS 1.3 session would silently give a full handshake.
            return None
        lifetime: float | None = None
        if has_ticket and (tls_version == TLS13 or lifetime_hint > 0):
            # TLS 1.3: a hint of 0 means "discard now"; TLS 1.2: 0 means "unspecified".
            lifetime = float(lifetime_hint)
        return CachedSession(
            handle=handle,
            engine=self.name,
            tls_version=tls_version,
            has_ticket=has_ticket,
            lifetime=lifetime,
            created_at=float(created_at),
            session_id=session_id,
        )
