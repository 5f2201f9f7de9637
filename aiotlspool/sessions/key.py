"""The cache key of a TLS session: the one place that decides who may be offered a session.

A resumed handshake skips certificate and host-name verification, and OpenSSL resumes a session
offered under any server name. So a session may only be offered to a connection that would have
passed the same verification: the same verification settings (:mod:`aiotlspool.verification`,
read again at every connect, so a context changed after first use gets new keys), the same
SSLContext object (a standard-library session only works with the context that made it), the
same server name, and by default the same port. Everything that builds a key goes through
:func:`session_key`.
"""

from __future__ import annotations

import itertools
import json
import os
import ssl
import threading
import weakref
from dataclasses import dataclass, field

from ..endpoint import Endpoint
from .verification import Verification, verification_of

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

    ``context`` is process-local: a number for the SSLContext object, meaningless in another
    process. Everything else is process-independent: ``verification`` is the SHA-256
    fingerprint of the context's verification settings, so keys from two processes (or two
    contexts) with other settings never match. A store shared between processes must key by
    :meth:`store_id`, which leaves the context number out.

    ``port`` is None when sessions are shared across ports (``share_sessions_across_ports``).
    ``unverified_host`` is set only when no server name is sent (``server_hostname=""``): then
    nothing ties the session to a name, so it stays with the exact host it came from and can
    never match a key that carries a verified name.

    ``client_certificate`` says whether the context had a client certificate loaded (already
    part of ``verification``; spelled out so that a persistent store can decline such
    sessions, which it keeps only when asked).
    """

    context: int
    server_hostname: str
    port: int | None
    unverified_host: str | None = None
    verification: str = ""
    client_certificate: bool = False
    # Keys index the store several times per connect: hash once (equality is unchanged).
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.context, self.server_hostname, self.port, self.unverified_host)
        object.__setattr__(self, "_hash", hash((*fields, self.verification)))

    def __hash__(self) -> int:
        return self._hash

    def store_id(self) -> str:
        """A process-independent id of this key: verification settings, name, port, host.

        Two processes get the same id only for the same settings and server; use it to key a
        store shared between processes (sessions are then usable through the native engine,
        which does not tie them to a context object).
        """
        parts = [self.verification, self.server_hostname, self.port, self.unverified_host]
        return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


def session_key(
    context: ssl.SSLContext,
    endpoint: Endpoint,
    *,
    share_across_ports: bool = False,
    verification: Verification | None = None,
) -> SessionKey:
    """Build the key under which sessions for ``endpoint`` through ``context`` are stored.

    ``verification`` is the context's current settings (read now when not given).
    """
    if verification is None:
        verification = verification_of(context)
    return SessionKey(
        context=context_number(context),
        server_hostname=endpoint.server_hostname,
        port=None if share_across_ports else endpoint.port,
        unverified_host=endpoint.host if endpoint.server_hostname == "" else None,
        verification=verification.fingerprint,
        client_certificate=verification.client_certificate,
    )


def _reinit_after_fork() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child.
    global _numbers_lock
    _numbers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
