"""The entries of :class:`~aiotlspool.FileSessionCache`: their file names and sealed contents.

One key's sessions live in a directory named by :func:`key_dir_name` (SHA-256 of the key's
:meth:`~aiotlspool.SessionKey.store_id`), one file per session::

    <stored ns, 20 digits>-<server deadline, 11 digits>-<12|13>-<session tag>-<writer>.entry

The name is a hint for ordering and sweeping without reading files; what decides whether an
entry is offered is its contents. They are the export envelope of
:mod:`~aiotlspool.sessions.transfer` (server name, port, host, TLS version, verification
fingerprint, creation time, lifetime, DER) plus ``stored_at``, ``writer`` (a per-process token),
``context`` and ``client_certificate``, as JSON, sealed by
:class:`~aiotlspool.sessions.sealing.EntrySealer` with the key directory's name as associated
data: an entry moved under another key fails its MAC.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..engines.libssl import Libssl, NativeSession
from . import transfer
from .cached import TLS13, CachedSession
from .key import SessionKey
from .memory import MAX_SESSION_LIFETIME
from .sealing import EntrySealer, SealError

__all__ = [
    "EntryName",
    "EntryRefused",
    "deadline",
    "key_dir_name",
    "key_of",
    "open_entry",
    "parse_name",
    "seal_entry",
    "server_lifetime_left",
    "session_of",
    "session_tag",
]

KEY_DIR = re.compile(r"[0-9a-f]{64}")
_ENTRY = re.compile(r"(\d{20})-(\d{11})-(12|13)-([0-9a-f]{16})-([0-9a-f]{16})\.entry")
_MAX_DEADLINE = 10**11 - 1


class EntryRefused(ValueError):
    """An entry that must not be offered; ``reason`` names why (see :class:`SealError` for
    ``corrupt``/``foreign``/``tampered``; ``binding``: bound to other settings or server;
    ``unusable``: OpenSSL would not resume it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EntryExpired(ValueError):
    """An authentic entry whose lifetime has run out."""


@dataclass(frozen=True, slots=True)
class EntryName:
    stored_ns: int
    deadline: int  # when the server's lifetime (capped at 7 days) runs out, epoch seconds
    tls13: bool
    tag: str  # of the session id: the same session or ticket stored twice has the same tag
    writer: str

    @property
    def file_name(self) -> str:
        version = 13 if self.tls13 else 12
        return (
            f"{self.stored_ns:020d}-{self.deadline:011d}-{version}-{self.tag}-{self.writer}.entry"
        )

    def expired(self, now: float, ttl: float) -> bool:
        return self.deadline <= now or self.stored_ns / 1e9 + ttl <= now


def parse_name(name: str) -> EntryName | None:
    match = _ENTRY.fullmatch(name)
    if match is None:
        return None
    stored, deadline, version, tag, writer = match.groups()
    return EntryName(int(stored), int(deadline), version == "13", tag, writer)


def session_tag(session_id: bytes) -> str:
    # Without an id, no two sessions are taken for the same one.
    return hashlib.sha256(session_id).hexdigest()[:16] if session_id else secrets.token_hex(8)


def key_dir_name(store_id: str) -> str:
    """The directory (and the sealed entries' associated data) of one key's sessions."""
    return hashlib.sha256(b"aiotlspool store id\0" + store_id.encode()).hexdigest()


def server_lifetime_left(session: CachedSession) -> float:
    """Seconds left of the server's lifetime for ``session``, capped at 7 days (counted as the
    memory cache does: OpenSSL records creation in whole seconds, hence a second of slack)."""
    lifetime = MAX_SESSION_LIFETIME
    if session.lifetime is not None:
        lifetime = min(lifetime, session.lifetime)
    return lifetime - max(0.0, time.time() - session.created_at - 1.0)


def deadline(stored_at: float, created_at: float, lifetime: float | None, ttl: float) -> float:
    """When an entry stops being offered: ``ttl`` after it was stored, or when the server's
    lifetime (capped at 7 days; a second of slack for OpenSSL's whole seconds) runs out."""
    limit = MAX_SESSION_LIFETIME if lifetime is None else min(lifetime, MAX_SESSION_LIFETIME)
    return min(stored_at + ttl, created_at + 1.0 + limit)


def seal_entry(
    sealer: EntrySealer, session: CachedSession, key: SessionKey, stored_ns: int, writer: str
) -> tuple[EntryName, bytes]:
    """The file name and sealed contents of a native ``session`` stored under ``key``."""
    envelope = transfer.envelope_of(session, key)
    envelope.update(
        stored_at=stored_ns / 1e9,
        writer=writer,
        context=key.context,
        client_certificate=key.client_certificate,
    )
    payload = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    sealed = sealer.seal(payload, key_dir_name(key.store_id()).encode())
    deadline = min(math.ceil(time.time() + server_lifetime_left(session)), _MAX_DEADLINE)
    tls13 = session.tls_version == TLS13
    return EntryName(stored_ns, deadline, tls13, session_tag(session.session_id), writer), sealed


def open_entry(sealer: EntrySealer, data: bytes, dir_name: str) -> dict[str, Any]:
    """The authenticated payload of an entry read from key directory ``dir_name``."""
    try:
        payload = json.loads(sealer.open(data, dir_name.encode()))
    except SealError as exc:
        raise EntryRefused(exc.reason) from None
    except ValueError:  # signed with our key, yet not JSON: refused all the same
        raise EntryRefused("corrupt") from None
    if not isinstance(payload, dict):
        raise EntryRefused("corrupt")
    return payload


def session_of(
    payload: dict[str, Any], key: SessionKey, name: EntryName, libssl: Libssl, ttl: float
) -> CachedSession:
    """The session an authenticated payload holds for ``key``, checked again in full:
    EntryExpired when its lifetime - min(``ttl`` from storing, the server's hint, 7 days) -
    has run out, EntryRefused when it may not be offered."""
    stored_at, created_at, lifetime = (payload.get(f) for f in _TIMES)
    if (
        not isinstance(stored_at, (int, float))
        or not isinstance(created_at, (int, float))
        or not (lifetime is None or isinstance(lifetime, (int, float)))
        or not all(map(math.isfinite, (stored_at, created_at, lifetime or 0)))
        or payload.get("tls_version") != ("TLSv1.3" if name.tls13 else "TLSv1.2")
    ):
        raise EntryRefused("corrupt")
    if time.time() >= deadline(stored_at, created_at, lifetime, ttl):
        raise EntryExpired("expired")
    try:
        native: NativeSession = transfer.session_from_envelope(payload, key, libssl)
    except transfer.SessionExpired:
        raise EntryExpired("expired") from None
    except ValueError:
        raise EntryRefused("binding") from None
    if not native.is_resumable() or (name.tls13 and not native.has_ticket):
        raise EntryRefused("unusable")
    return CachedSession(
        handle=native,
        engine="native",
        tls_version=payload["tls_version"],
        has_ticket=native.has_ticket,
        lifetime=None if lifetime is None else float(lifetime),
        created_at=float(created_at),
        session_id=native.session_id,
    )


def key_of(payload: dict[str, Any], dir_name: str, writer: str) -> SessionKey:
    """The key an authenticated payload was stored under, as this process sees it: the
    ``context`` number means something only in the process that wrote it (``writer``), so an
    entry of another process gets context 0, which no key of this process has."""
    fields: dict[str, type | tuple[type, ...]] = {
        "server_hostname": str,
        "port": (int, type(None)),
        "unverified_host": (str, type(None)),
        "verification": str,
        "context": int,
        "client_certificate": bool,
    }
    for field, kind in fields.items():
        if not isinstance(payload.get(field), kind):
            raise EntryRefused("corrupt")
    key = SessionKey(
        context=payload["context"] if payload.get("writer") == writer else 0,
        server_hostname=payload["server_hostname"],
        port=payload["port"],
        unverified_host=payload["unverified_host"],
        verification=payload["verification"],
        client_certificate=payload["client_certificate"],
    )
    if key_dir_name(key.store_id()) != dir_name:
        raise EntryRefused("corrupt")
    return key


_TIMES = ("stored_at", "created_at", "lifetime")
