"""The session stores under the store contract, and session records each one can hold.

The memory cache holds any handle, so its records wrap placeholders. The file and Redis stores
hold native sessions only (they serialize them): their records wrap real ``SSL_SESSION``
objects, parsed from the DER of one real handshake per TLS version (memory BIOs, no socket) with
a fresh random session id each, so that every record is a distinct session, as two handshakes
would give.

The Redis stores run against a real ``redis-server`` (:func:`redis_for_stores`, started once per
module), each store in a namespace of its own. A redis-py client belongs to one event loop, so
a Redis kind runs the store's coroutines on a loop of its own (:meth:`StoreKind.run`) where the
others use ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from aiotlspool import CachedSession, FileSessionCache, MemorySessionCache, SessionKey
from aiotlspool.engines.libssl import Libssl, NativeUnavailable
from aiotlspool.engines.libssl_load import load_libssl

from .helpers import make_session, require_module, skip_or_fail
from .memory_tls import Conn
from .realservers import Certs, ServerUnavailable
from .redisserver import RedisServer, redis_binary, run_redis

# "file-cold": a file store that remembers nothing it wrote or read, so that every get reads,
# verifies and parses the entry, as another process would. "redis": the in-process tier in
# front of Redis; "redis-cold": none (every get reads and parses from Redis). Both write each
# put before it returns (write_behind=False): writing behind has tests of its own.
STORE_KINDS = ["memory", "file", "file-cold", "redis", "redis-cold"]
SECRET = secrets.token_bytes(32)
T = TypeVar("T")

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


@contextlib.contextmanager
def redis_for_stores(
    certs: Certs | None = None, *, extra_args: Sequence[str] = ()
) -> Iterator[RedisServer]:
    """A redis-server for store tests, plain TCP or TLS with ``certs`` (skips locally
    without redis-py or the binary; fails in CI)."""
    require_module("redis")
    try:
        redis_binary()
    except ServerUnavailable as exc:
        skip_or_fail(str(exc))
    with run_redis(certs, extra_args=extra_args) as server:
        yield server


@dataclass
class StoreKind:
    """One kind of store under the contract: how to make one, and its session records."""

    name: str
    base: Path
    redis: RedisServer | None = None
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    @property
    def counts_keys(self) -> bool:
        """Whether ``max_size`` bounds keys (memory, Redis) rather than sessions (file)."""
        return not self.name.startswith("file")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the store's coroutines to completion (on the Redis kinds' own loop)."""
        if self._loop is None:
            return asyncio.run(coro)
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()
            self._loop = None

    def cache(self, **options: Any) -> Any:
        """A new, empty store; ``max_size`` means the memory cache's and the Redis store's
        keys or the file store's sessions (``max_entries``), the same number when each key
        holds one session."""
        if self.name == "memory":
            return MemorySessionCache(**options)
        if self.name.startswith("redis"):
            return self._redis_cache(**options)
        if "max_size" in options:
            options["max_entries"] = options.pop("max_size")
        options.setdefault("secret", SECRET)
        cache = FileSessionCache(tempfile.mkdtemp(dir=self.base), **options)
        if self.name == "file-cold":
            cache._known_max = 0
        return cache

    def _redis_cache(self, **options: Any) -> Any:
        from aiotlspool.sessions.redis_store import RedisSessionCache

        assert self.redis is not None, "store_kind(..., redis=server)"
        if self._loop is None:
            import redis.asyncio

            self._loop = asyncio.new_event_loop()
            self._client = redis.asyncio.Redis(host=self.redis.host, port=self.redis.port)
        if "max_size" in options:
            options["max_keys"] = options.pop("max_size")
        options.pop("fsync", None)
        options.setdefault("secret", SECRET)
        return RedisSessionCache(
            self._client,
            namespace=f"contract-{secrets.token_hex(6)}",
            local=self.name == "redis",
            write_behind=False,
            **options,
        )

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


def store_kind(name: str, tmp_path: Path, redis: RedisServer | None = None) -> StoreKind:
    if name != "memory":
        libssl_or_skip()
    base = tmp_path / "stores"
    base.mkdir(mode=0o700, exist_ok=True)
    return StoreKind(name, base, redis)
