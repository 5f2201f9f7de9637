"""The standard-library session engine: ``SSLObject.session``, read and assigned.

Works wherever ``ssl`` does, at the price of a DER copy per offer and per capture (and, on
Python 3.10-3.13.0, a leak of ~6.7 KB per read of ``SSLObject.session``). It cannot watch a
connection: Python exposes only the latest session, so the caller captures at a chosen moment.
"""

from __future__ import annotations

import logging
import ssl

from ..sessions.cached import CachedSession
from .base import SessionEngine

logger = logging.getLogger("aiotlspool")


class StdlibSessionEngine(SessionEngine):
    """Uses only the standard library."""

    name = "stdlib"

    def offer(self, ssl_object: ssl.SSLObject, session: CachedSession) -> bool:
        try:
            ssl_object.session = session.handle  # type: ignore[assignment]
        except (ValueError, TypeError) as exc:
            # "Session refers to a different SSLContext": the key should make this impossible;
            # fall back to a full handshake rather than fail the connection.
            logger.warning("could not offer a cached session (%s); full handshake", exc)
            return False
        return True

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
