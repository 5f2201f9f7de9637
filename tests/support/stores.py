"""The session stores under the store contract, and session records each one can hold.

The memory cache holds any handle, so its records wrap placeholders. The file store holds
native sessions only (it serializes them): its records wrap real ``SSL_SESSION`` objects, parsed
from the DER of one real handshake per TLS version (memory BIOs, no socket) with a fresh random
session id each, so that every record is a distinct session, as two handshakes would give.
"""

from __future__ import annotations

import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from aiotlspool import CachedSession, FileSessionCache, MemorySessionCache, SessionKey
from aiotlspool.engines.libssl import Libssl, NativeUnavailable
from aiotlspool.engines.libssl_load import load_libssl

from .helpers import make_session
from .memory_tls import Conn

# "file-cold": a file store that remembers nothing it wrote or read, so that every get reads,
# verifies and parses the entry, as another process would.
STORE_KINDS = ["memory", "file", "file-cold"]
SECRET = secrets.token_bytes(32)

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_base_ders: dict[str, tuple[bytes, bytes]] = {}  # version -> (DER, its session id)


def libssl_or_skip() -> Libssl:
    try:
        return load_libssl()
    except NativeUnavailable as exc:
        pytest.skip(f"the file store needs the native binding: {exc}")


def _base_der(version: str) -> tuple[bytes, bytes]:
    if version not in _base_ders:
        lib = libssl_or_skip()
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", key_type=trustme.KeyType.ECDSA).configure_cert(server_ctx)
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(client_ctx)
        for ctx in (server_ctx, client_ctx):
            ctx.minimum_version = ctx.maximum_version = _VERSIONS[version]
        bios = [ssl.MemoryBIO() for _ in range(4)]
        client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="localhost")
        server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
        conn = Conn(client, server, *bios)
        conn.handshake()
        conn.client_read()  # (the TLS 1.3 ticket)
        session = lib.capture(client)
        assert session is not None and len(session.session_id) == 32
        _base_ders[version] = (session.to_der(), session.session_id)
    return _base_ders[version]


def native_record(
    version: str = "TLSv1.3", lifetime: float | None = 7200.0, *, created_at: float | None = None
) -> CachedSession:
    """A record around a real native session, distinct from every other one made here."""
    der, session_id = _base_der(version)
    new_id = secrets.token_bytes(32)
    handle = libssl_or_skip().session_from_der(der.replace(session_id, new_id))
    assert handle.session_id == new_id
    return CachedSession(
        handle=handle,
        engine="native",
        tls_version=version,
        has_ticket=True,
        lifetime=lifetime,
        created_at=time.time() if created_at is None else created_at,
        session_id=new_id,
    )


@dataclass
class StoreKind:
    """One kind of store under the contract: how to make one, and its session records."""

    name: str
    base: Path

    def cache(self, **options: Any) -> Any:
        """A new, empty store; ``max_size`` means the memory cache's keys or the file store's
        sessions (``max_entries``), the same number when each key holds one session."""
        if self.name == "memory":
            return MemorySessionCache(**options)
        if "max_size" in options:
            options["max_entries"] = options.pop("max_size")
        options.setdefault("secret", SECRET)
        cache = FileSessionCache(tempfile.mkdtemp(dir=self.base), **options)
        if self.name == "file-cold":
            cache._known_max = 0
        return cache

    def session(self, version: str = "TLSv1.3", lifetime: float | None = 7200.0) -> CachedSession:
        if self.name == "memory":
            return make_session(version, lifetime)
        return native_record(version, lifetime)

    def ident(self, session: CachedSession | None) -> object:
        """What identifies a session across a store: the object itself in memory, the session
        id once it went through a file (a get parses a new object)."""
        if session is None or self.name == "memory":
            return session
        return session.session_id

    def same(self, got: CachedSession | None, stored: CachedSession) -> bool:
        if self.name != "memory" and got is not None:
            assert got.engine == "native" and got.tls_version == stored.tls_version
            assert got.lifetime == stored.lifetime and got.created_at == stored.created_at
        return got is not None and self.ident(got) == self.ident(stored)

    def same_key(self, a: SessionKey, b: SessionKey) -> bool:
        """Keys a store must not mix: a shared store keys by ``store_id()`` (process-local
        context numbers mean nothing there)."""
        return a == b if self.name == "memory" else a.store_id() == b.store_id()


def store_kind(name: str, tmp_path: Path) -> StoreKind:
    if name != "memory":
        libssl_or_skip()
    base = tmp_path / "stores"
    base.mkdir(mode=0o700, exist_ok=True)
    return StoreKind(name, base)
