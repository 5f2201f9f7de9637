"""Memory: RSS over many reconnects per client, and bytes per cached session.

Each measurement runs in a fresh process (pinned to the client CPU) so that nothing else the
harness allocated blurs it. RSS, not tracemalloc, because OpenSSL's allocations (the sessions
themselves) are invisible to tracemalloc; tracemalloc measures the Python-side part.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import tracemalloc
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from aiotlspool import MemorySessionCache, SessionKey

from .certs import HOST
from .clients import ALL_CLIENTS, REQUEST, Target, _Offer, close_writer, read_response
from .env import loop_factories, pin_self, rss_bytes, run_on


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares bytes per connection over the second half (after start-up allocations)."""
    tail = points[len(points) // 2 :]
    if len(tail) < 2:
        return 0.0
    n = len(tail)
    mean_x = sum(x for x, _ in tail) / n
    mean_y = sum(y for _, y in tail) / n
    var = sum((x - mean_x) ** 2 for x, _ in tail)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in tail)
    return cov / var if var else 0.0


def rss_over_reconnects(
    target: Target, client_name: str, loop_name: str, count: int, samples: int
) -> dict[str, Any]:
    """Child: ``count`` sequential reconnects, RSS sampled ``samples`` times."""

    async def main() -> list[tuple[int, int]]:
        client = ALL_CLIENTS[client_name](target)
        await client.open()
        points = [(0, rss_bytes())]
        step = max(1, count // samples)
        try:
            for done in range(1, count + 1):
                await client.request()
                if done % step == 0:
                    points.append((done, rss_bytes()))
        finally:
            await client.aclose()
        return points

    points = run_on(loop_factories()[loop_name], main())
    return {
        "client": client_name,
        "tls": target.tls,
        "loop": loop_name,
        "count": count,
        "points": points,
        "growth_bytes": points[-1][1] - points[0][1],
        "bytes_per_conn": _slope(points),
    }


def _engine(name: str) -> Any:
    """The pool's own session engine object, so that what is measured is what the pool stores."""
    if name == "stdlib":
        from aiotlspool.engines.stdlib import StdlibSessionEngine

        return StdlibSessionEngine()
    from aiotlspool.engines.select import select_engine  # absent before the native engine

    return select_engine(name)


def session_size(target: Target, engine_name: str, captures: int) -> dict[str, Any]:
    """Child: what one cached session costs with one session engine.

    ``engine.capture()`` is what the pool calls once per connection to store its session.
    Phase 1 captures ``captures`` times and drops each copy at once: RSS growth is what leaks
    per capture. Phase 2 keeps them: growth per copy is the memory a cached session holds
    (OpenSSL's allocations included - invisible to tracemalloc). Phase 3 stores the kept copies
    in a MemorySessionCache under distinct keys, under tracemalloc: the cache's Python side.
    """
    engine = _engine(engine_name)

    async def connected() -> Any:
        offer = _Offer(target.certs.client_context(), None)
        reader, writer = await asyncio.open_connection(HOST, target.port, ssl=offer)
        writer.write(REQUEST)
        await read_response(reader)  # the TLS 1.3 ticket has arrived
        await close_writer(writer)
        return offer.ssl_object

    ssl_object = asyncio.run(connected())
    engine.capture(ssl_object)  # first-use allocations out of the way
    gc.collect()
    before = rss_bytes()
    for _ in range(captures):
        engine.capture(ssl_object)
    leaked = (rss_bytes() - before) / captures
    before = rss_bytes()
    kept = [engine.capture(ssl_object) for _ in range(captures)]
    held = (rss_bytes() - before) / captures

    tracemalloc.start()
    cache = MemorySessionCache(max_size=captures)

    async def fill() -> None:
        for i, session in enumerate(kept):
            await cache.put(SessionKey(context=1, server_hostname=f"h{i}", port=443), session)

    baseline = tracemalloc.get_traced_memory()[0]
    asyncio.run(fill())
    python_side = (tracemalloc.get_traced_memory()[0] - baseline) / captures
    tracemalloc.stop()
    return {
        "tls": target.tls,
        "engine": engine_name,
        "captures": captures,
        "cached": cache.size(),
        "held_bytes_per_session": held,
        "leaked_bytes_per_capture": leaked,
        "cache_entry_python_bytes": python_side,
    }


def _child(pipe: PipeEnd, cpu: int | None, function: Any, args: tuple[Any, ...]) -> None:
    pin_self(cpu)
    try:
        pipe.send(("ok", function(*args)))
    except BaseException as exc:
        pipe.send(("error", repr(exc)))


def run_in_child(function: Any, *args: Any, cpu: int | None, timeout: float = 120) -> Any:
    """Run ``function(*args)`` in a fresh spawned process; kill it after ``timeout`` seconds."""
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe(duplex=False)
    process = spawn.Process(target=_child, args=(theirs, cpu, function, args), daemon=True)
    process.start()
    theirs.close()
    try:
        if not ours.poll(timeout):
            raise TimeoutError(f"{function.__name__} took longer than {timeout} s")
        status, value = ours.recv()
    except EOFError:
        raise RuntimeError(f"{function.__name__} died (exit code {process.exitcode})") from None
    finally:
        if process.is_alive():
            process.join(2)
        if process.is_alive():
            process.kill()
            process.join(2)
    if status != "ok":
        raise RuntimeError(f"{function.__name__} failed: {value}")
    return value
