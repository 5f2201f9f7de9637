"""The native session engine: sessions captured and offered through libssl, without copies.

The standard library copies a session through DER on every ``SSLObject.session`` read and every
``wrap_bio(session=...)`` (hundreds of microseconds each, and each read leaks ~6.7 KB on Python
3.10-3.13.0). This engine keeps its own ``SSL_SESSION`` copies through the ctypes binding in
:mod:`aiotlspool.engines.libssl`, which validates CPython's private struct layout before any OpenSSL
call and refuses (``NativeUnavailable``) rather than guess.
"""

from __future__ import annotations

import logging
import ssl
from typing import cast

from ..sessions.cached import CachedSession
from .base import OfferingContext, SessionEngine
from .libssl import Libssl, NativeSession, NativeUnavailable

logger = logging.getLogger("aiotlspool")


class NativeSessionEngine(SessionEngine):
    """Captures and applies sessions with libssl directly (see :mod:`aiotlspool.engines.libssl`)."""

    name = "native"

    def __init__(self, libssl: Libssl) -> None:
        self.libssl = libssl

    def wrap(
        self,
        offer: OfferingContext,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool,
        server_hostname: str | None,
    ) -> ssl.SSLObject:
        ssl_object = offer.context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname
        )
        session = self.session_to_offer(offer)
        if session is not None:
            try:
                self.libssl.apply(ssl_object, cast(NativeSession, session.handle))
            except (NativeUnavailable, ValueError, TypeError) as exc:
                logger.warning("could not offer a cached session (%s); full handshake", exc)
            else:
                offer.offered = True
        return ssl_object

    def capture(self, ssl_object: ssl.SSLObject) -> CachedSession | None:
        try:
            session = self.libssl.capture(ssl_object)
        except NativeUnavailable as exc:  # pragma: no cover - validated at load time
            logger.warning("could not capture the session (%s)", exc)
            return None
        if session is None:
            return None
        return self.describe(session, ssl_object.version() or "")

    def describe(self, session: NativeSession, tls_version: str) -> CachedSession | None:
        """Wrap a native session for the cache; None if it cannot be resumed."""
        return self.cacheable(
            session,
            tls_version,
            resumable=session.is_resumable(),
            has_ticket=session.has_ticket,
            lifetime_hint=session.ticket_lifetime_hint,
            created_at=session.time,
            session_id=session.session_id,
        )

    def handshake_marker(self, ssl_object: ssl.SSLObject) -> object:
        # After a resumption the session still "has a ticket": the one just used. Remember
        # which session object that is; after a full handshake there is no ticket yet.
        if ssl_object.session_reused:
            return self.libssl.session_identity(ssl_object)
        return None

    def ticket_arrived(self, ssl_object: ssl.SSLObject, marker: object) -> bool | None:
        if marker is None:
            return self.libssl.has_ticket(ssl_object)
        # OpenSSL swaps in a new session object for each ticket it receives.
        return self.libssl.session_identity(ssl_object) != marker
