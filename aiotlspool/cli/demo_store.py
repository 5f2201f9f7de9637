"""``aiotlspool demo --store``: the demo's cached pool keeps its sessions in a persistent store
(``file:DIR``: a :class:`~aiotlspool.FileSessionCache`; ``redis://...`` or ``rediss://...``: a
:class:`~aiotlspool.RedisSessionCache`), and afterwards a new process connects once through the
same store (``python -m aiotlspool.cli.demo_store``): its first connection resumes with a
session the demo's process stored.

The secret that seals the entries never lives next to them: it comes from the environment
(``AIOTLSPOOL_STORE_SECRET``, hex), or a throwaway one is made for the run (and handed to the
new process in its environment). Every mistake - a bad ``--store``, a bad secret, an unsafe
directory, redis-py missing, Redis unreachable - is a :class:`StoreError`: one line, and the
exit code of a usage error or of a failed connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import ssl
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..pool import Pool
from ..sessions.file import FileSessionCache
from ..sessions.redis_store import RedisSessionCache
from ..sessions.store import SessionCache

SECRET_ENV = "AIOTLSPOOL_STORE_SECRET"
STORE_ENV = "AIOTLSPOOL_DEMO_STORE"  # the new process's --store
NAMESPACE = "aiotlspool-demo"
SCHEMES = ("redis", "rediss")
CHECK_TIMEOUT = 5.0
REQUEST = b"ping\n"


class StoreError(Exception):
    """``--store`` cannot be used: ``unreachable`` for Redis not answering (exit code 3), a
    usage error otherwise (2)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class StoreSpec:
    """What ``--store`` names, with the secret and (Redis) namespace to use."""

    kind: str  # "file" or "redis"
    location: str  # the directory, or the URL
    secret: bytes
    throwaway: bool  # a secret made for this run (not from the environment)
    namespace: str

    @property
    def label(self) -> str:
        """``file:DIR``, or the URL without its password."""
        if self.kind == "file":
            return f"file:{self.location}"
        return redact(self.location)


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse_store(
    text: str, environ: Mapping[str, str] = os.environ, namespace: str | None = None
) -> StoreSpec:
    """The store ``text`` names (``file:DIR``, ``redis://...``, ``rediss://...``) and its
    secret; StoreError (a usage error) for anything malformed. No I/O."""
    if text.startswith("file:"):
        location = os.path.expanduser(text[len("file:") :])
        if not location:
            raise StoreError("--store file:DIR needs a directory, e.g. file:/tmp/tls-sessions")
        secret, throwaway = _secret(environ)
        return StoreSpec("file", location, secret, throwaway, "")
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in SCHEMES:
        raise StoreError(
            f"--store {text!r}: expected file:DIR, redis://HOST[:PORT][/DB] or rediss://..."
        )
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise StoreError(f"--store {redact(text)}: invalid URL ({exc})") from None
    if not parts.hostname:
        raise StoreError(f"--store {redact(text)}: the URL names no host")
    secret, throwaway = _secret(environ)
    if namespace is None:
        namespace = f"{NAMESPACE}-{secrets.token_hex(4)}" if throwaway else NAMESPACE
    return StoreSpec("redis", text, secret, throwaway, namespace)


def _secret(environ: Mapping[str, str]) -> tuple[bytes, bool]:
    """The secret from the environment, or a throwaway one (and True)."""
    secret_hex = environ.get(SECRET_ENV)
    if secret_hex is None:
        return secrets.token_bytes(32), True
    try:
        secret = bytes.fromhex(secret_hex.strip())
    except ValueError:
        raise StoreError(
            f"${SECRET_ENV} must be hex digits (make one with: python -c "
            "'import secrets; print(secrets.token_hex(32))')"
        ) from None
    if len(secret) < 32:
        raise StoreError(
            f"${SECRET_ENV} must be at least 32 bytes (64 hex digits), got {len(secret)}"
        )
    return secret, False


def open_store(spec: StoreSpec, ttl: float) -> SessionCache:
    """The store itself (no connection made yet to Redis); StoreError if it cannot be."""
    try:
        if spec.kind == "file":
            return FileSessionCache(spec.location, secret=spec.secret, ttl=ttl)
        return RedisSessionCache.from_url(
            spec.location, secret=spec.secret, namespace=spec.namespace, ttl=ttl
        )
    except ImportError:  # (only Redis needs a package: redis-py)
        raise StoreError(
            f"--store {spec.label} needs redis-py: pip install 'aiotlspool[redis]'"
        ) from None
    except PermissionError as exc:  # an unsafe directory: FileSessionCache says which
        raise StoreError(f"--store {spec.label}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"--store {spec.label}: cannot use it: {exc.strerror or exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise StoreError(f"--store {spec.label}: {exc}") from None


def check_reachable(spec: StoreSpec) -> None:
    """For Redis: one PING through a client of its own (on a loop of its own), so that an
    unreachable server is one line before the demo starts."""
    if spec.kind != "redis":
        return
    from redis.asyncio import Redis

    async def ping() -> None:
        client = Redis.from_url(
            spec.location, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT
        )
        try:
            await asyncio.wait_for(client.ping(), CHECK_TIMEOUT)
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except Exception as exc:  # redis-py's errors, OSError, TimeoutError
        message = str(exc) or type(exc).__name__
        raise StoreError(
            f"--store {spec.label}: cannot reach Redis: {message}", unreachable=True
        ) from None


def describe(spec: StoreSpec) -> str:
    """The line that says which store the cached pool uses, and where its secret is from."""
    secret = (
        f"a throwaway secret for this run; set ${SECRET_ENV} (64+ hex digits) to keep one"
        if spec.throwaway
        else f"the secret from ${SECRET_ENV}"
    )
    if spec.kind == "file":
        return f"session store: FileSessionCache in {spec.location} ({secret})"
    return (
        f"session store: RedisSessionCache at {spec.label}, namespace {spec.namespace!r} ({secret})"
    )


async def finish(spec: StoreSpec, store: SessionCache) -> str:
    """On the demo's loop, once its pools are closed: write what is queued, then say what the
    store holds; the Redis client is closed."""
    if not isinstance(store, RedisSessionCache):
        return f"{store.size()} session(s) in {spec.location} after the run"
    try:
        await store.flush()
        keys = entries = 0
        prefix = "{" + store.namespace + "}:"
        async for name in store.client.scan_iter(match=prefix + "*"):
            if name.decode() != prefix + "lru":
                keys += 1
                entries += await store.client.llen(name)
        hits = store.counters()
    finally:
        await store.client.aclose()
    return (
        f"{entries} session(s) under {keys} key(s) in Redis after the run "
        f"(redis-cli --scan --pattern '{{{store.namespace}}}:*'); this process took "
        f"{hits['local_hits']} from its in-process tier, {hits['remote_hits']} from Redis"
    )


def in_new_process(spec: StoreSpec, port: int, ca_file: str, tls: str, timeout: float) -> str:
    """Run :func:`child_main` in a new process: its first connection, through a new store on
    the same directory or Redis; the line that says whether it resumed."""
    # The secret and the URL (which may hold a password) go through the environment.
    env = dict(os.environ, **{SECRET_ENV: spec.secret.hex()})
    env[STORE_ENV] = f"file:{spec.location}" if spec.kind == "file" else spec.location
    command = [sys.executable, "-m", "aiotlspool.cli.demo_store", "--namespace", spec.namespace]
    command += ["--port", str(port), "--ca", ca_file, "--tls", tls]
    try:
        done = subprocess.run(command, env=env, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"a new process could not be run: {exc}"
    try:
        answer: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return f"a new process failed (exit code {done.returncode}): {lines[-1] if lines else ''}"
    if "error" in answer:
        return f"a new process could not connect through the store: {answer['error']}"
    what = "a new FileSessionCache" if spec.kind == "file" else "a Redis client of its own"
    outcome = "resumed" if answer["resumed"] else "did not resume (a full handshake)"
    return (
        f"a new process (pid {answer['pid']}) with {what}: its first connection {outcome} "
        f"(handshake {answer['handshake_ms']:.2f} ms)"
    )


async def _connect_once(spec: StoreSpec, port: int, ca_file: str, tls: str) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca_file)
    version = ssl.TLSVersion.TLSv1_2 if tls == "1.2" else ssl.TLSVersion.TLSv1_3
    context.minimum_version = context.maximum_version = version
    store = open_store(spec, ttl=3600.0)
    try:
        async with Pool(context, session_engine="native", session_cache=store) as pool:
            conn = await pool.acquire("127.0.0.1", port)
            try:
                conn.writer.write(REQUEST)
                await conn.reader.readexactly(len(REQUEST))
                answer: dict[str, Any] = {"resumed": conn.session_reused}
                answer["handshake_ms"] = conn.handshake_seconds * 1000
            finally:
                await conn.aclose()
    finally:
        if isinstance(store, RedisSessionCache):
            await store.flush()
            await store.client.aclose()
    return {"pid": os.getpid(), **answer}


def child_main(argv: list[str] | None = None) -> None:
    """``python -m aiotlspool.cli.demo_store``: one connection, a JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m aiotlspool.cli.demo_store")
    for option in ("--namespace", "--port", "--ca", "--tls"):
        parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    try:
        spec = parse_store(os.environ[STORE_ENV], namespace=args.namespace)
        answer = asyncio.run(_connect_once(spec, int(args.port), args.ca, args.tls))
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)


__all__ = ["SECRET_ENV", "StoreError", "StoreSpec", "describe", "finish", "parse_store"]

if __name__ == "__main__":
    child_main()
