"""cProfile summaries for the figures that miss their target: where a connection's (or an idle
checkout's) time goes, per connection, grouped into a few categories.

cProfile slows Python-level code down more than C code, so these are for attribution, not
timing; the timed figures come from the unprofiled runs. Profiles run on asyncio's own loop,
whose Python code is visible to the profiler (uvloop's C code would be billed to whichever
Python function awaited it), with the wall-clock timer; time spent blocked in epoll waiting for
the server is shown apart and left out of the total.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from typing import Any

from aiotlspool import Pool

from .certs import HOST
from .clients import ALL_CLIENTS, REQUEST, Target, read_response
from .env import LoopFactory, run_on
from .workloads import drive

Key = tuple[str, int, str]  # pstats' (file, line, function)


WAITING = "waiting for the network (epoll)"


def _category(key: Key) -> str:
    filename, _, function = key
    if "poll" in function and "select." in function:
        return WAITING  # idle time, not work: left out of the total
    if "do_handshake" in function and "_ssl." in function:
        return "TLS handshake (OpenSSL)"
    if filename.endswith("ssl.py") and function == "session":
        return "SSLObject.session read (DER copy)"
    if "_wrap_bio" in function:
        return "wrap_bio (+ session= DER copy)"
    if "_ssl." in function:
        return "other OpenSSL calls"
    native = ("/aiotlspool/_native.py", "/engines/libssl", "/engines/session_callback")
    if any(part in filename for part in native) or "CFuncPtr" in function or "ctypes" in filename:
        return "native engine (ctypes -> libssl)"
    if "/aiotlspool/" in filename:
        return "aiotlspool (Python)"
    if "/asyncio/" in filename:
        return "asyncio (Python)"
    if "/benchmarks/" in filename:
        return "harness"
    return "other"


def _label(key: Key) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    parts = filename.rsplit("/", 2)
    return f"{'/'.join(parts[-2:])}:{line}({function})"


def summarise(profile: cProfile.Profile, units: int, unit: str) -> dict[str, Any]:
    """Per-``unit`` µs by category, the top functions by own time, and the pstats text."""
    stats = pstats.Stats(profile)
    raw: dict[Key, tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    categories: dict[str, float] = {}
    calls = 0
    for key, (_, ncalls, tottime, _, _) in raw.items():
        categories[_category(key)] = categories.get(_category(key), 0.0) + tottime
        calls += ncalls
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:12]
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
    return {
        "unit": unit,
        "units": units,
        "calls_per_unit": calls / units,
        "profiled_us_per_unit": 1e6
        * sum(seconds for name, seconds in categories.items() if name != WAITING)
        / units,
        "categories_us": {
            name: 1e6 * seconds / units
            for name, seconds in sorted(categories.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {
                "function": _label(key),
                "calls": value[1] / units,
                "own_us": 1e6 * value[2] / units,
                "cumulative_us": 1e6 * value[3] / units,
            }
            for key, value in top
        ],
        "text": text.getvalue(),
    }


def profile_reconnect(
    target: Target, client_name: str, loop_factory: LoopFactory, count: int
) -> dict[str, Any]:
    """Sequential reconnects of one client under cProfile, after a warm-up."""

    async def main() -> dict[str, Any]:
        client = ALL_CLIENTS[client_name](target)
        await client.open()
        try:
            await drive(client, 10, 1, 30)
            profile = cProfile.Profile()
            profile.enable()
            done = await drive(client, count, 1, 60)
            profile.disable()
        finally:
            await client.aclose()
        summary = summarise(profile, done.done, "connection")
        summary.update(client=client_name, tls=target.tls, resumed=done.resumed)
        return summary

    return run_on(loop_factory, main())


def profile_idle(target: Target, loop_factory: LoopFactory, cycles: int) -> dict[str, Any]:
    """Idle checkout (acquire + release of one pooled connection) under cProfile."""

    async def main() -> dict[str, Any]:
        async with Pool(target.certs.client_context()) as pool:
            conn = await pool.acquire(HOST, target.port)
            conn.writer.write(REQUEST)
            await read_response(conn.reader)
            await pool.release(conn)
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(cycles):
                conn = await pool.acquire(HOST, target.port)
                await pool.release(conn)
            profile.disable()
        summary = summarise(profile, cycles, "cycle")
        summary.update(client="idle checkout", tls=target.tls)
        return summary

    return run_on(loop_factory, main())
