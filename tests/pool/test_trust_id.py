"""set_trust_id: a name for what a context trusts, in its sessions' keys, for trust stores whose
contents cannot be read (a CA directory is loaded lazily, during verification)."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

import pytest
import trustme

from aiotlspool import FileSessionCache, Pool, set_trust_id
from aiotlspool.sessions.verification import verification_of

from ..support.helpers import connect_once
from ..support.servers import Server, client_context

SESSION_ENGINES = ["native"]


def test_a_ca_directory_is_not_in_the_fingerprint_until_used(tmp_path: Path) -> None:
    # Why the name is needed: two contexts trusting different directories look the same.
    one = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    one.load_verify_locations(capath=str(tmp_path))
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    (tmp_path / "elsewhere").mkdir()
    other.load_verify_locations(capath=str(tmp_path / "elsewhere"))
    assert one.get_ca_certs() == other.get_ca_certs() == []
    assert verification_of(one).fingerprint == verification_of(other).fingerprint
    set_trust_id(one, "corp-ca-2026")
    set_trust_id(other, "partner-ca")
    assert verification_of(one).fingerprint != verification_of(other).fingerprint
    set_trust_id(other, "corp-ca-2026")
    assert verification_of(one).fingerprint == verification_of(other).fingerprint
    set_trust_id(other, None)
    assert verification_of(one).fingerprint != verification_of(other).fingerprint


def test_bad_trust_ids_are_refused() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for bad in ["", "a\nb", 7]:
        with pytest.raises((TypeError, ValueError)):
            set_trust_id(ctx, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        set_trust_id(object(), "x")  # type: ignore[arg-type]


async def test_a_shared_store_serves_only_contexts_with_the_same_trust_id(
    ca: trustme.CA, server: Server, tls_version: str, tmp_path: Path
) -> None:
    secret = secrets.token_bytes(32)

    def store() -> FileSessionCache:
        return FileSessionCache(tmp_path / "sessions", secret=secret)

    first = client_context(ca, tls_version)
    set_trust_id(first, "corp-ca-2026")
    async with Pool(first, session_cache=store()) as pool:
        assert await connect_once(pool, server.port) is False
    same = client_context(ca, tls_version)
    set_trust_id(same, "corp-ca-2026")
    async with Pool(same, session_cache=store()) as pool:
        assert await connect_once(pool, server.port) is True
    other = client_context(ca, tls_version)
    set_trust_id(other, "partner-ca")
    async with Pool(other, session_cache=store()) as pool:
        assert await connect_once(pool, server.port) is False


async def test_changing_the_trust_id_drops_the_old_sessions(
    ca: trustme.CA, server: Server, tls_version: str
) -> None:
    ctx = client_context(ca, tls_version)
    async with Pool(ctx) as pool:
        assert await connect_once(pool, server.port) is False
        set_trust_id(ctx, "rotated")
        assert await connect_once(pool, server.port) is False
        assert pool.stats().stale_sessions_dropped >= 1
        assert await connect_once(pool, server.port) is True


def test_settings_seen_before_are_handed_back_only_while_unchanged() -> None:
    # The connect path passes the settings it took a session under: returned as they are
    # while the probe matches, never once the context changed (a trust id, a CA, a flag).
    ctx = ssl.create_default_context()
    seen = verification_of(ctx)
    assert verification_of(ctx, seen) is seen
    set_trust_id(ctx, "corp-ca-2026")
    named = verification_of(ctx, seen)
    assert named is not seen and named.fingerprint != seen.fingerprint
    trustme.CA().configure_trust(ctx)
    assert verification_of(ctx, named).fingerprint != named.fingerprint
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    changed = verification_of(ctx, seen)
    assert changed is not seen and verification_of(ctx, changed) is changed


def test_settings_of_another_context_are_never_handed_back() -> None:
    # Two contexts with equal probes (same flags, as many trusted certificates) but different
    # CAs: the settings of one must not stand for the other's, whatever the caller passes.
    one, other = ssl.create_default_context(), ssl.create_default_context()
    trustme.CA().configure_trust(one)
    trustme.CA().configure_trust(other)
    seen = verification_of(one)
    assert seen.probe == verification_of(other).probe  # the probe alone cannot tell them apart
    assert verification_of(other, seen) is not seen
    assert verification_of(other, seen).fingerprint != seen.fingerprint
