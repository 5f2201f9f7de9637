"""The cache key of a TLS session: the one place that decides who may be offered a session.

A resumed handshake skips certificate and host-name verification, and OpenSSL resumes a session
offered under any server name. So a session may only be offered to a connection that would have
passed the same verification: the same SSLContext object (same trust store and settings), the
same server name, and by default the same port. Everything that builds a key goes through
:func:`session_key`.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import weakref
from dataclasses import dataclass

from .endpoint import Endpoint

# id(context) is reused after garbage collection, so each context gets a number that is never
# handed out again; the weak map lets contexts die normally.
_context_numbers: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()
_next_number = itertools.count(1)
_numbers_lock = threading.Lock()


def context_number(context: ssl.SSLContext) -> int:
    """A process-unique number for this SSLContext object, stable for its lifetime."""
    with _numbers_lock:
        number = _context_numbers.get(context)
        if number is None:
            number = next(_next_number)
            _context_numbers[context] = number
        return number


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Identifies the sessions that may be offered to a connection.

    ``port`` is None when sessions are shared across ports (``share_sessions_across_ports``).
    ``unverified_host`` is set only when no server name is sent (``server_hostname=""``): then
    nothing ties the session to a name, so it stays with the exact host it came from and can
    never match a key that carries a verified name.
    """

    context: int
    server_hostname: str
    port: int | None
    unverified_host: str | None = None


def session_key(
    context: ssl.SSLContext, endpoint: Endpoint, *, share_across_ports: bool = False
) -> SessionKey:
    """Build the key under which sessions for ``endpoint`` through ``context`` are stored."""
    return SessionKey(
        context=context_number(context),
        server_hostname=endpoint.server_hostname,
        port=None if share_across_ports else endpoint.port,
        unverified_host=endpoint.host if endpoint.server_hostname == "" else None,
    )
