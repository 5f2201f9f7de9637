"""What a RedisSessionCache operation costs, against a redis-server on this host.

Each figure is the median over 3 runs of ROUNDS operations on 8 keys, in microseconds, with
real native sessions (file_store_cost.py's, one memory-BIO handshake per TLS version):

- put, behind: ``put`` returns once the entry is sealed and queued (the default; a task writes
  it in batches); put, waited: ``write_behind=False``, one EVALSHA round trip;
- TLS 1.2 get, local: a session this process holds, no round trip (the common case);
- TLS 1.2 get, Redis: ``local=False``: EVALSHA, verify and parse the DER;
- TLS 1.3 get, own: a ticket this process wrote, won in Redis (EVALSHA, no parse);
- TLS 1.3 get, other process: a second store takes and parses the tickets the first wrote;
- TLS 1.3 get, queued: the ticket has not left the write queue yet (no round trip).

Usage: ``.venv/bin/python scripts/redis_store_cost.py [redis://host:port/db]``; without a URL it
starts ``redis-server`` on a free port of 127.0.0.1 (no persistence) and stops it at the end.
The whole run is bounded (TIMEOUT seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from file_store_cost import KEYS, records

from aiotlspool import CachedSession, EntrySealer, RedisSessionCache

ROUNDS = 300
TIMEOUT = 180.0


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (scripts/install-servers.sh), or pass a URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir]
        argv += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit("redis-server did not start")
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def timed(
    operation: Callable[[int, CachedSession], Awaitable[object]], sessions: list[CachedSession]
) -> float:
    started = time.perf_counter()
    for i, session in enumerate(sessions):
        await operation(i, session)
    return (time.perf_counter() - started) / len(sessions) * 1e6


def puts(store: RedisSessionCache) -> Callable[[int, CachedSession], Awaitable[object]]:
    return lambda i, session: store.put(KEYS[i % len(KEYS)], session)


def gets(store: RedisSessionCache) -> Callable[[int, CachedSession], Awaitable[object]]:
    return lambda i, session: store.get(KEYS[i % len(KEYS)])


async def round_trip(url: str) -> float:
    """A PING through redis-py, for scale (this host's load shows in every figure)."""
    client = RedisSessionCache.from_url(url, secret=bytes(32)).client
    await client.ping()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        await client.ping()
    await client.aclose()
    return (time.perf_counter() - started) / ROUNDS * 1e6


async def run(url: str) -> None:
    secret = secrets.token_bytes(32)
    encrypting = EntrySealer(secret, encryption_key=secrets.token_bytes(32))
    stores: list[RedisSessionCache] = []

    def store(namespace: str, **options: Any) -> RedisSessionCache:
        options.setdefault("secret", secret)
        made = RedisSessionCache.from_url(url, namespace=namespace, **options)
        stores.append(made)
        return made

    results: dict[str, list[float]] = {}

    def note(label: str, value: float) -> None:
        results.setdefault(label, []).append(value)

    for _ in range(3):
        note("PING (redis-py), for scale", await round_trip(url))
    for run_number in range(3):
        for version in ("TLSv1.3", "TLSv1.2"):
            sealer: Any = secret
            for encrypted in (False, True):
                if encrypted:
                    sealer = encrypting
                suffix = f"{version}{', encrypted' if encrypted else ''}"
                ns = f"cost-{run_number}-{version}-{encrypted}"
                sessions = records(version, ROUNDS)
                behind = store(ns + "-b", secret=sealer)
                note(f"put, behind           {suffix}", await timed(puts(behind), sessions))
                await behind.flush()
                waited = store(ns + "-w", secret=sealer, write_behind=False)
                note(f"put, waited           {suffix}", await timed(puts(waited), sessions))
                if version == "TLSv1.2":
                    note(f"get, local            {suffix}", await timed(gets(waited), sessions))
                    cold = store(ns + "-w", secret=sealer, local=False)
                    note(f"get, Redis (parse)    {suffix}", await timed(gets(cold), sessions))
                    continue
                # TLS 1.3: put one ticket per key, then take it back, ROUNDS times.
                own = store(ns + "-o", secret=sealer, write_behind=False)
                other = store(ns + "-o", secret=sealer, local=False)
                queued = store(ns + "-q", secret=sealer)
                takes: dict[str, float] = {"own": 0.0, "other": 0.0, "queued": 0.0}
                for i, session in enumerate(records(version, ROUNDS)):
                    key = KEYS[i % 8]
                    for label, writer, reader in [
                        ("own", own, own),
                        ("other", own, other),
                        ("queued", queued, queued),
                    ]:
                        await writer.put(key, session)
                        started = time.perf_counter()
                        got = await reader.get(key)
                        takes[label] += time.perf_counter() - started
                        assert got is not None
                        assert got.session_id == session.session_id
                for label, total in takes.items():
                    name = {"own": "own", "other": "other process", "queued": "queued"}[label]
                    note(f"get, {name:<17}{suffix}", total / ROUNDS * 1e6)
    for label, values in results.items():
        print(f"{label:<44} {statistics.median(values):8.1f} us")
    for made in stores:
        await made.clear()
        await made.client.aclose()


def main() -> None:
    with contextlib.ExitStack() as stack:
        url = sys.argv[1] if len(sys.argv) > 1 else stack.enter_context(local_redis())
        asyncio.run(asyncio.wait_for(run(url), TIMEOUT))


if __name__ == "__main__":
    main()
