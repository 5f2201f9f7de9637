"""The standard-library session engine: ``wrap_bio(session=...)`` and ``SSLObject.session``.

Works everywhere, at the price of a DER copy per offer and per capture (and, on Python
3.10-3.13.0, a leak of ~6.7 KB per ``SSLObject.session`` read).
"""

from __future__ import annotations

import logging
import ssl

from ..sessions.cached import CachedSession
from .base import OfferingContext, SessionEngine

logger = logging.getLogger("aiotlspool")


class StdlibSessionEngine(SessionEngine):
    """Uses only the standard library: ``wrap_bio(session=...)`` and ``SSLObject.session``."""

    name = "stdlib"

    def wrap(
        self,
        offer: OfferingContext,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool,
        server_hostname: str | None,
    ) -> ssl.SSLObject:
        session = self.session_to_offer(offer)
        if session is not None:
            try:
                ssl_object = offer.context.wrap_bio(
                    incoming,
                    outgoing,
                    server_side=server_side,
                    server_hostname=server_hostname,
                    session=session.handle,  # type: ignore[arg-type]
                )
            except ValueError as exc:
                # "Session refers to a different SSLContext": the key should make this
                # impossible; fall back to a full handshake rather than fail the connection.
                logger.warning("could not offer a cached session (%s); full handshake", exc)
            else:
                offer.offered = True
                return ssl_object
        return offer.context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname
        )

    def capture(self, ssl_object: ssl.SSLObject) -> CachedSession | None:
        session = ssl_object.session  # the one read: a DER copy
        if session is None:
            return None
        return self.cacheable(
            session,
            ssl_object.version() or "",
            # TLS 1.2 from a server with neither a session cache nor tickets: nothing to resume.
            resumable=session.has_ticket or bool(session.id),
            has_ticket=session.has_ticket,
            lifetime_hint=session.ticket_lifetime_hint,
            created_at=session.time,
            session_id=session.id,
        )
