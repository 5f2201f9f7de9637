"""Exporting and importing sessions, bound to what they may be used for.

An exported session holds the session's master secret, and a resumed handshake skips certificate
verification. So the envelope records the server name, port (or host, when no server name was
sent), TLS version and the fingerprint of the verification settings under which the session was
obtained (:mod:`aiotlspool.verification`: verify mode and flags, host-name checks, protocol
range, options, security level, every certificate and CRL in the trust store, the client
certificate), and an import refuses - never offers - a session whose binding differs from the
importing pool's context and endpoint. (Shown here: a session obtained with ``CERT_NONE`` from an
untrusted server resumes under a verifying context if nothing stops it.) Treat exported bytes
like a private key.

Format (version 2): UTF-8 JSON ``{"format": "aiotlspool-session", "version": 2, "server_hostname",
"port", "unverified_host", "tls_version", "verification", "created_at", "lifetime", "der"}`` with
the DER session in base64. ``port`` is null for sessions shared across ports; ``unverified_host``
is the host for sessions obtained without a server name (null otherwise). The same envelope,
with a few fields of the store's own, is what :class:`~aiotlspool.FileSessionCache` seals into
each entry (:mod:`~aiotlspool.sessions.file_entries`).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from ..engines.libssl import Libssl, NativeSession
from .cached import CachedSession
from .key import SessionKey

FORMAT = "aiotlspool-session"
VERSION = 2
MAX_EXPORT_SIZE = 128 * 1024
_TLS_VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


class SessionExpired(ValueError):
    """The session in an envelope has outlived the lifetime OpenSSL recorded for it."""


def encode(session: CachedSession, key: SessionKey) -> bytes:
    """The envelope for a native session stored under ``key`` (whose fingerprint names the
    settings the session was obtained under)."""
    return json.dumps(envelope_of(session, key), sort_keys=True).encode()


def envelope_of(session: CachedSession, key: SessionKey) -> dict[str, Any]:
    """The envelope's fields for a native session stored under ``key`` (:func:`encode`
    serializes them; a store may add fields of its own, which :func:`session_from_envelope`
    ignores)."""
    handle = session.handle
    if not isinstance(handle, NativeSession):
        raise RuntimeError("only sessions of the native engine can be exported")
    return {
        "format": FORMAT,
        "version": VERSION,
        "server_hostname": key.server_hostname,
        "port": key.port,
        "unverified_host": key.unverified_host,
        "tls_version": session.tls_version,
        "verification": key.verification,
        "created_at": session.created_at,
        "lifetime": session.lifetime,
        "der": base64.b64encode(handle.to_der()).decode("ascii"),
    }


def decode(data: bytes, key: SessionKey, libssl: Libssl) -> NativeSession:
    """Parse an envelope and check its binding against ``key`` (made under the importing
    context's current settings).

    Raises ValueError, naming the first mismatch, for anything that is not a well-formed
    envelope bound to exactly this server name, port (or host) and verification settings.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    # The size in bytes: len() of a multi-dimensional memoryview counts its first dimension.
    size = memoryview(data).nbytes
    if size > MAX_EXPORT_SIZE:
        raise ValueError(f"exported session larger than {MAX_EXPORT_SIZE} bytes ({size} bytes)")
    try:
        envelope: Any = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("not an exported aiotlspool session (invalid JSON)") from None
    return session_from_envelope(envelope, key, libssl)


def session_from_envelope(envelope: object, key: SessionKey, libssl: Libssl) -> NativeSession:
    """The session of a parsed envelope, after checking its binding against ``key`` (see
    :func:`decode`; :class:`SessionExpired` when it has expired)."""
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise ValueError("not an exported aiotlspool session")
    if envelope.get("version") != VERSION:
        raise ValueError(f"unsupported export version {envelope.get('version')!r}")
    _expect(envelope, "server_hostname", key.server_hostname)
    _expect(envelope, "port", key.port)
    _expect(envelope, "unverified_host", key.unverified_host)
    _expect(envelope, "verification", key.verification, what="verification settings")
    tls_version = envelope.get("tls_version")
    if tls_version not in _TLS_VERSIONS.values():
        raise ValueError(f"unsupported tls_version {tls_version!r}")
    der_text = envelope.get("der")
    if not isinstance(der_text, str):
        raise ValueError("the exported session has no DER data")
    try:
        der = base64.b64decode(der_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the exported session's DER data is not valid base64") from None
    session = libssl.session_from_der(der)
    # The DER must agree with the envelope where it can be checked. (OpenSSL does not record
    # the server name in client sessions, so the envelope is the only record of it.)
    if _TLS_VERSIONS.get(session.protocol_version) != tls_version:
        raise ValueError("the session's protocol does not match its tls_version")
    if session.time + session.timeout <= time.time():
        raise SessionExpired("the exported session has expired")
    return session


def _expect(envelope: dict[str, Any], field: str, wanted: object, what: str = "") -> None:
    got = envelope.get(field)
    if got != wanted or type(got) is not type(wanted):
        label = what or field
        raise ValueError(
            f"refusing a session bound to other {label}: {field}={got!r}, expected {wanted!r}"
            if not what
            else f"refusing a session obtained under other {label} than this pool's context"
        )
