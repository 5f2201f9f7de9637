"""What runs inside the ``fleet`` section's worker processes (spawned, pinned to the client CPU).

A worker waits for commands on its pipe; each command is one run: a fresh ``SSLContext``, a
fresh store (a ``MemorySessionCache`` of its own, or a ``RedisSessionCache`` on a new Redis
client, or a ``FileSessionCache``) and a fresh ``Pool(session_engine="native")`` - everything
a newly started process would have - then, at an agreed moment (``time.monotonic()`` is one
clock for every process on Linux), ``count`` sequential connections: connect, ``GET /``, read
the response, close. It answers with what each connection did and what the store counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from aiotlspool import FileSessionCache, MemorySessionCache, Pool

from .certs import HOST, CertFiles
from .clients import REQUEST, read_response
from .env import loop_factories, pin_self, run_on


def make_store(spec: dict[str, Any]) -> Any:
    """``spec["kind"]``: ``memory``, ``redis`` (``url``, ``secret``, ``namespace``, ``local``)
    or ``file`` (``directory``, ``secret``)."""
    kind = spec["kind"]
    if kind == "memory":
        return MemorySessionCache()
    if kind == "file":
        return FileSessionCache(spec["directory"], secret=bytes.fromhex(spec["secret"]))
    from aiotlspool import RedisSessionCache

    return RedisSessionCache.from_url(
        spec["url"],
        secret=bytes.fromhex(spec["secret"]),
        namespace=spec["namespace"],
        local=spec.get("local", True),
    )


async def close_store(store: Any) -> dict[str, Any]:
    """Write what is queued, then what the store counted (and its own view of its size)."""
    out: dict[str, Any] = {"size": store.size()}
    if hasattr(store, "flush"):  # RedisSessionCache
        out["flushed"] = await store.flush()
        out["size"] = store.size()
        out["counters"] = store.counters()
        await store.client.aclose()
    elif hasattr(store, "rejected_entries"):  # FileSessionCache
        out["rejected"] = store.rejected_entries
        out["failed"] = store.failed_operations
    return out


async def connect_once(pool: Pool, port: int) -> tuple[float, float, float, bool]:
    """One connection: (started, connected, closed) on the monotonic clock, and whether the
    handshake resumed."""
    started = time.monotonic()
    conn = await pool.acquire(HOST, port)
    connected = time.monotonic()
    try:
        conn.writer.write(REQUEST)
        await read_response(conn.reader)
        reused = conn.session_reused
    finally:
        await conn.aclose()
    return started, connected, time.monotonic(), reused


async def run_case(command: dict[str, Any]) -> dict[str, Any]:
    """One process's part of a run (see the module docstring)."""
    certs: CertFiles = command["certs"]
    store = make_store(command["store"])
    pool = Pool(certs.client_context(), session_engine="native", session_cache=store)
    records = []
    late = False
    try:
        delay = command["start_at"] - time.monotonic()
        late = delay < 0
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(command["count"]):
            records.append(await connect_once(pool, command["port"]))
    finally:
        await pool.aclose()
        stored = await close_store(store)
    stats = pool.stats()
    return {
        "pid": os.getpid(),
        "late": late,
        "records": records,
        "full": stats.full_handshakes,
        "resumed": stats.resumed_handshakes,
        "store_errors": stats.store_errors + stats.store_timeouts,
        "store": stored,
    }


def serve(pipe: PipeEnd, cpu: int | None, loop_name: str) -> None:
    """Worker process: run each command received; stop on None or when the parent is gone."""
    pin_self(cpu)
    factory = loop_factories()[loop_name]
    with contextlib.suppress(ImportError):
        import redis.asyncio  # noqa: F401 - imported now, not during the first run
    pipe.send(("ready", os.getpid()))
    while True:
        try:
            command = pipe.recv()
        except (EOFError, OSError):
            return
        if command is None:
            return
        try:
            pipe.send(("ok", run_on(factory, run_case(command))))
        except Exception as exc:
            pipe.send(("error", repr(exc)))


def restarted_process(
    certs: CertFiles, ports: dict[str, int], store: dict[str, Any], loop_name: str
) -> dict[str, Any]:
    """A fresh process (``memory.run_in_child``) with a ``FileSessionCache``: its first
    connection to each TLS version's port, then it exits."""

    async def main() -> dict[str, Any]:
        cache = make_store(store)
        out: dict[str, Any] = {}
        for tls, port in ports.items():
            async with Pool(
                certs.client_context(), session_engine="native", session_cache=cache
            ) as pool:
                out[tls] = (await connect_once(pool, port))[3]
        out["store"] = await close_store(cache)
        return out

    return run_on(loop_factories()[loop_name], main())
