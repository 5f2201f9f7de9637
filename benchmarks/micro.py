"""Micro-benchmarks: idle checkout (acquire + release of a pooled connection) against a bare
``asyncio.Queue`` floor, and the cost of the standard library's session seam (the DER copies
that dominate a stdlib-resumed handshake)."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from dataclasses import dataclass
from typing import Any

from aiotlspool import Pool

from .certs import HOST
from .clients import REQUEST, Target, _Offer, close_writer, read_response
from .env import LoopFactory, run_on


@dataclass
class IdleResult:
    loop: str
    cycles: int
    pool_us: list[float]  # acquire() + release(), per rep
    context_us: list[float]  # async with pool.connection(): the same through the context manager
    queue_us: list[float]  # asyncio.Queue put_nowait() + await get(): the floor
    engine: str = "?"

    def summary(self) -> dict[str, Any]:
        return {
            "loop": self.loop,
            "engine": self.engine,
            "cycles": self.cycles,
            "pool_us": statistics.median(self.pool_us),
            "context_us": statistics.median(self.context_us),
            "queue_us": statistics.median(self.queue_us),
            "raw": {"pool_us": self.pool_us, "context_us": self.context_us, "queue": self.queue_us},
        }


async def _idle_cycles(pool: Pool, port: int, cycles: int) -> float:
    acquire, release = pool.acquire, pool.release
    started = time.perf_counter()
    for _ in range(cycles):
        conn = await acquire(HOST, port)
        await release(conn)
    return (time.perf_counter() - started) / cycles * 1e6


async def _context_cycles(pool: Pool, port: int, cycles: int) -> float:
    started = time.perf_counter()
    for _ in range(cycles):
        async with pool.connection(HOST, port):
            pass
    return (time.perf_counter() - started) / cycles * 1e6


async def _queue_cycles(cycles: int) -> float:
    queue: asyncio.Queue[object] = asyncio.Queue()
    item = object()
    started = time.perf_counter()
    for _ in range(cycles):
        queue.put_nowait(item)
        await queue.get()
    return (time.perf_counter() - started) / cycles * 1e6


def run_idle(
    target: Target, loop_name: str, loop_factory: LoopFactory, *, cycles: int, reps: int
) -> IdleResult:
    """One idle connection in the pool, checked out and back ``cycles`` times, ``reps`` times."""

    async def main() -> IdleResult:
        result = IdleResult(loop_name, cycles, [], [], [])
        async with Pool(target.certs.client_context()) as pool:
            result.engine = str(getattr(pool, "session_engine", "stdlib"))
            conn = await pool.acquire(HOST, target.port)
            conn.writer.write(REQUEST)
            await read_response(conn.reader)  # data received: a TLS 1.3 ticket is captured now
            await pool.release(conn)
            await _idle_cycles(pool, target.port, min(cycles, 1000))  # warm caches
            for _ in range(reps):
                result.pool_us.append(await _idle_cycles(pool, target.port, cycles))
                result.context_us.append(await _context_cycles(pool, target.port, cycles))
                result.queue_us.append(await _queue_cycles(cycles))
            assert pool.stats().connections_opened == 1, "the idle connection was not reused"
        return result

    return run_on(loop_factory, main())


def run_seam_costs(target: Target, loop_factory: LoopFactory, *, reps: int) -> dict[str, Any]:
    """µs per ``SSLObject.session`` read, and ``wrap_bio`` with and without ``session=``."""

    async def connected() -> tuple[ssl.SSLContext, ssl.SSLObject]:
        context = target.certs.client_context()
        offer = _Offer(context, None)
        reader, writer = await asyncio.open_connection(
            HOST,
            target.port,
            ssl=offer,
        )
        writer.write(REQUEST)
        await read_response(reader)  # the TLS 1.3 ticket has arrived
        await close_writer(writer)
        assert offer.ssl_object is not None
        return context, offer.ssl_object

    context, ssl_object = run_on(loop_factory, connected())
    session = ssl_object.session
    assert session is not None

    def per_call(function: Any) -> float:
        started = time.perf_counter()
        for _ in range(reps):
            function()
        return (time.perf_counter() - started) / reps * 1e6

    def wrap(with_session: bool) -> None:
        context.wrap_bio(
            ssl.MemoryBIO(),
            ssl.MemoryBIO(),
            server_hostname=HOST,
            session=session if with_session else None,
        )

    return {
        "tls": target.tls,
        "reps": reps,
        # Each read is a DER round trip (and leaks ~6 KB on 3.10-3.13.0, CPython gh-116810).
        "session_read_us": per_call(lambda: ssl_object.session),
        "wrap_bio_us": per_call(lambda: wrap(False)),
        "wrap_bio_session_us": per_call(lambda: wrap(True)),
    }
