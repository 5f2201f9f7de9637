"""Session engines: how a session is offered to a new connection and captured from a finished one.

asyncio (and uvloop) create a connection's TLS object by calling ``ssl.wrap_bio(incoming,
outgoing, server_side=..., server_hostname=...)`` on whatever was passed as ``ssl=``. They never
pass ``session=``, so the pool hands them an :class:`OfferingContext`: a per-connection stand-in
for the user's SSLContext whose ``wrap_bio`` adds the cached session. The user's context is never
changed.

An engine is the small interface behind which the session mechanism sits, so that another
implementation (one that avoids the standard library's copies) can replace it.
"""

from __future__ import annotations

import logging
import ssl
import time
from abc import ABC, abstractmethod
from typing import Any

from ..sessions.cached import TLS13, CachedSession
from ..sessions.verification import Verification, verification_of

logger = logging.getLogger("aiotlspool")


class OfferingContext:
    """Passed to the event loop as ``ssl=`` for one connection: wraps the BIOs with the user's
    context and offers ``session``. Also remembers the SSLObject and when the handshake began.

    ``verification`` is the context's settings when the session was taken. The context may
    change before the loop calls :meth:`wrap_bio` (after the TCP connect); the settings are read
    again there, and a session taken under other settings is not offered (``settings_changed``).
    """

    __slots__ = (
        "context",
        "engine",
        "handshake_done",
        "handshake_started",
        "offered",
        "session",
        "settings_changed",
        "ssl_object",
        "verification",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        session: CachedSession | None,
        engine: SessionEngine,
        verification: Verification,
    ) -> None:
        self.context = context
        self.session = session
        self.engine = engine
        self.verification = verification
        self.ssl_object: ssl.SSLObject | None = None
        self.handshake_started = 0.0
        # True once the session was really attached (False if it could not be).
        self.offered = False
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
        # The loop calls this once the TCP connection is up, right before the handshake.
        self.handshake_started = time.perf_counter()
        if verification_of(self.context) is not self.verification:
            # Changed since the session was taken: it may come from weaker settings.
            self.settings_changed = True
        ssl_object = self.engine.wrap(self, incoming, outgoing, server_side, server_hostname)
        self.ssl_object = ssl_object
        return ssl_object

    def __getattr__(self, name: str) -> Any:
        # Anything else a loop might read (e.g. check_hostname) comes from the real context.
        return getattr(self.context, name)


class SessionEngine(ABC):
    """Offers and captures sessions for one kind of session handle."""

    name: str

    def offering_context(
        self, context: ssl.SSLContext, session: CachedSession | None, verification: Verification
    ) -> OfferingContext:
        """The object to pass as ``ssl=`` for one connection."""
        # (The connector never passes another engine's session: see Connector.take_session.)
        return OfferingContext(context, session, self, verification)

    @staticmethod
    def session_to_offer(offer: OfferingContext) -> CachedSession | None:
        """The session ``wrap`` may attach: none when the settings changed since it was taken."""
        return None if offer.settings_changed else offer.session

    @abstractmethod
    def wrap(
        self,
        offer: OfferingContext,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool,
        server_hostname: str | None,
    ) -> ssl.SSLObject:
        """Create the SSLObject with ``offer.context``, attaching ``offer.session`` if any."""

    @abstractmethod
    def capture(self, ssl_object: ssl.SSLObject) -> CachedSession | None:
        """The connection's session, if it can be resumed later (a TLS 1.3 one needs its ticket).

        Called at most once per connection: the standard library copies the session on every
        read (and leaks the copy on Python 3.10-3.13.0).
        """

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

    def handshake_marker(self, ssl_object: ssl.SSLObject) -> object:
        """Whatever :meth:`ticket_arrived` needs to remember from the end of the handshake."""
        return None

    def ticket_arrived(self, ssl_object: ssl.SSLObject, marker: object) -> bool | None:
        """Whether a new TLS 1.3 ticket has arrived since the handshake, if the engine can
        tell without copying the session; None when it cannot."""
        return None
