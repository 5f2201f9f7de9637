"""What a FileSessionCache operation costs, next to the memory cache.

A put seals one entry (HMAC, optionally AES-GCM) and writes it (temporary file, optional fsync,
rename). A get of a TLS 1.3 ticket claims it (rename), then reads, verifies and parses it unless
this instance wrote it ("own"); a TLS 1.2 get reads in place, or uses the session this instance
already verified. "other process" reads through a second instance, as another process would:
every get then parses the DER (~250 us in OpenSSL 3.0, mostly the server's certificate).

Steady state of the pool: 8 keys, each put followed by a get. Sessions are real native
sessions (one memory-BIO handshake per TLS version, fresh session ids). Usage:
``.venv/bin/python scripts/file_store_cost.py`` (writes under ``$TMPDIR``).
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

import trustme

from aiotlspool import CachedSession, EntrySealer, FileSessionCache, MemorySessionCache, SessionKey
from aiotlspool.engines.libssl_load import load_libssl

LIB = load_libssl()
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
KEYS = [SessionKey(1, f"db{i}.internal", 443, verification="f" * 64) for i in range(8)]
ROUNDS = 400


def base_der(version: str) -> tuple[bytes, bytes]:
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", key_type=trustme.KeyType.ECDSA).configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out, into in ((client, c_out, s_in), (server, s_out, c_in)):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
            into.write(out.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read(1)  # the TLS 1.3 ticket
    session = LIB.capture(client)
    assert session is not None
    return session.to_der(), session.session_id


def records(version: str, count: int) -> list[CachedSession]:
    der, session_id = base_der(version)
    made = []
    for _ in range(count):
        new_id = secrets.token_bytes(32)
        made.append(
            CachedSession(
                handle=LIB.session_from_der(der.replace(session_id, new_id)),
                engine="native",
                tls_version=version,
                has_ticket=True,
                lifetime=7200.0,
                created_at=time.time(),
                session_id=new_id,
            )
        )
    return made


def now(coro: Coroutine[Any, Any, object]) -> object:
    """Run a store coroutine that never suspends (both stores' never do) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the store suspended")


def measure(label: str, make: Callable[[], tuple[Any, Any]], version: str) -> None:
    """Median over 3 runs of ROUNDS put+get pairs (through ``make()``'s writer and reader)."""
    puts, gets = [], []
    for _ in range(3):
        writer, reader = make()
        sessions = records(version, ROUNDS)
        put_time = get_time = 0.0
        for i, session in enumerate(sessions):
            key = KEYS[i % len(KEYS)]
            started = time.perf_counter()
            now(writer.put(key, session))
            middle = time.perf_counter()
            got = now(reader.get(key))
            put_time += middle - started
            get_time += time.perf_counter() - middle
            assert got is not None
        puts.append(put_time / ROUNDS * 1e6)
        gets.append(get_time / ROUNDS * 1e6)
    print(
        f"{label:<46} {version}  put {statistics.median(puts):7.1f} us"
        f"   get {statistics.median(gets):6.1f} us"
    )


def main() -> None:
    secret, encryption = secrets.token_bytes(32), secrets.token_bytes(32)
    encrypting = EntrySealer(secret, encryption_key=encryption)
    with tempfile.TemporaryDirectory() as base:
        counter = iter(range(1_000_000))

        def files(other_process: bool = False, **options: Any) -> Callable[[], tuple[Any, Any]]:
            def make() -> tuple[Any, Any]:
                options.setdefault("secret", secret)
                directory = f"{base}/{next(counter)}"
                writer = FileSessionCache(directory, **options)
                return writer, FileSessionCache(directory, **options) if other_process else writer

            return make

        def memory() -> tuple[Any, Any]:
            cache = MemorySessionCache()
            return cache, cache

        variants: list[tuple[str, Callable[[], tuple[Any, Any]]]] = [
            ("MemorySessionCache", memory),
            ("FileSessionCache, fsync", files()),
            ("FileSessionCache, no fsync", files(fsync=False)),
            ("FileSessionCache, no fsync, encrypted", files(fsync=False, secret=encrypting)),
            ("FileSessionCache, fsync, other process", files(True)),
            ("FileSessionCache, no fsync, other process", files(True, fsync=False)),
            (
                "FileSessionCache, no fsync, encr., other proc.",
                files(True, fsync=False, secret=encrypting),
            ),
        ]
        for version in ("TLSv1.3", "TLSv1.2"):
            for label, make in variants:
                measure(label, make, version)


if __name__ == "__main__":
    main()
