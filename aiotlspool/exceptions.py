"""Exceptions raised by aiotlspool.

Every error about a connection names its endpoint (``host:port`` and the TLS server name), so a
log line is enough to see which server failed. The original exception is kept as ``__cause__``.
"""

from __future__ import annotations

from .endpoint import Endpoint


class PoolError(Exception):
    """Base class of every exception raised by aiotlspool."""


class PoolClosed(PoolError):
    """The pool is closed (or closing): it hands out no more connections."""


class PoolTimeout(PoolError, TimeoutError):
    """``acquire_timeout`` ran out before a connection could be handed out."""

    def __init__(self, message: str, endpoint: Endpoint) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class ConnectError(PoolError, OSError):
    """A new connection to ``endpoint`` could not be established."""

    def __init__(self, message: str, endpoint: Endpoint) -> None:
        super().__init__(message)
        self.endpoint = endpoint

    def __str__(self) -> str:
        return str(self.args[0])


class ConnectTimeout(ConnectError, TimeoutError):
    """TCP connect and TLS handshake together took longer than ``connect_timeout``."""


class TLSHandshakeError(ConnectError):
    """The peer answered, but the TLS handshake failed (not TLS, protocol mismatch, ...)."""


class CertificateError(TLSHandshakeError):
    """The server's certificate did not verify for the server name; nothing was cached."""


class ResumptionRejected(ConnectError):
    """``require_resumption=True`` and the server refused the cached session it was offered."""
