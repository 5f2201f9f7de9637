"""A TLS session as the pool stores it."""

from __future__ import annotations

from dataclasses import dataclass

TLS13 = "TLSv1.3"


@dataclass(frozen=True, eq=False, slots=True)
class CachedSession:
    """One resumable TLS session, captured from a finished handshake.

    ``handle`` is opaque: it belongs to the session engine that captured it (an
    :class:`ssl.SSLSession` for the standard-library engine) and only works with the SSLContext
    object that made it. Sessions compare by identity.
    """

    handle: object
    engine: str
    tls_version: str
    has_ticket: bool
    # Seconds the server allows the session to live (TLS ticket lifetime hint); None when the
    # server gave none (TLS 1.2 session IDs, or a hint of 0, which TLS 1.2 calls "unspecified").
    lifetime: float | None
    # When the session was created, in seconds since the epoch (as OpenSSL records it).
    created_at: float
    # OpenSSL's session id; for a ticket, the SHA-256 of the ticket, so two captures of the same
    # ticket have equal ids (how a reused TLS 1.3 ticket is told from a new one).
    session_id: bytes = b""

    @property
    def single_use(self) -> bool:
        """TLS 1.3 tickets should be used once (RFC 8446 C.4); TLS 1.2 sessions may be reused."""
        return self.tls_version == TLS13
