"""Exceptions raised by aiotlspool, and the one place socket and TLS errors are translated.

Every error about a connection names its endpoint (``host:port`` and the TLS server name), so a
log line is enough to see which server failed. The original exception is kept as ``__cause__``.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

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


# Failures worth another attempt: the server may be restarting or briefly overloaded.
TRANSIENT_ERRORS = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)


def is_transient(exc: OSError) -> bool:
    """Whether a failed connect is worth another attempt (the server may be restarting)."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    return False


def translate(exc: OSError, endpoint: Endpoint) -> ConnectError:
    """One clear exception per failure, naming the endpoint."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(
            f"certificate of {endpoint} did not verify for "
            f"{endpoint.server_hostname!r}: {exc.verify_message or exc.reason}",
            endpoint,
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        hint = " (is it a TLS server?)" if "WRONG_VERSION" in reason.upper() else ""
        return TLSHandshakeError(f"TLS handshake with {endpoint} failed: {reason}{hint}", endpoint)
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve host {endpoint.host!r}: {exc.strerror}", endpoint)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection to {endpoint} refused", endpoint)
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError)) or _is_eof(exc):
        return TLSHandshakeError(
            f"{endpoint} closed the connection during the TLS handshake (is it a TLS server?)",
            endpoint,
        )
    return ConnectError(f"cannot connect to {endpoint}: {exc}", endpoint)


def _is_eof(exc: Any) -> bool:
    return isinstance(exc, ssl.SSLEOFError)
