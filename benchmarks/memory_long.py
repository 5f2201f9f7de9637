"""Memory over long runs: RSS and glibc's heap over many sequential reconnects, and the
session cache's bound under a million distinct endpoints (issue 13, item 5).

``long_reconnects`` runs in a fresh pinned process (``memory.run_in_child``): ``count``
sequential connect -> request -> response -> close, sampling RSS and ``mallinfo2()`` (glibc's
own account: bytes in use, free bytes kept in the heap, mmapped blocks) along the way, and at
the end RSS again after ``malloc_trim(0)``: what trimming gives back was free heap, not a leak.
Three clients separate ours from the layers under us:

- ``pool-native``: ``Pool(session_engine="native")`` with its default transport (the socket
  transport on the default loop, the loop's own TLS on uvloop);
- ``bare-native``: the same engine and the same transport without the pool (a deque of
  sessions with the pool's ticket policy);
- ``raw``: ``asyncio.open_connection(ssl=context)``, full handshakes, no session kept.

The cache bound under a million endpoints is :mod:`benchmarks.memory_cache`.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import socket
import ssl
import time
from collections import deque
from typing import Any

from .certs import HOST
from .clients import ALL_CLIENTS, REQUEST, Client, Target, close_writer, read_response
from .env import loop_factories, rss_bytes, run_on


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of the brk heap (main arena) + other arenas' heaps
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmapped blocks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use
            "fordblks",  # free bytes kept in the heaps
            "keepcost",  # releasable from the top of the heap
        )
    ]


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def heap_info() -> dict[str, int]:
    """glibc's ``mallinfo2()`` (glibc >= 2.33), {} elsewhere."""
    libc = _libc()
    function = getattr(libc, "mallinfo2", None)
    if function is None:
        return {}
    function.restype = _Mallinfo2
    info = function()
    return {
        "heap": info.arena,
        "mmapped": info.hblkhd,
        "in_use": info.uordblks,
        "free": info.fordblks,
    }


def trim() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def threads() -> int:
    """Threads of this process: glibc gives each thread that allocates an arena of its own
    (up to 8 per core), a classic source of RSS plateaus; 1 means there is only the main one."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def live(point: dict[str, int]) -> int | None:
    """Bytes malloc has handed out and not had back (in its heaps and mmapped) at ``point``."""
    if "in_use" not in point:
        return None
    return point["in_use"] + point["mmapped"]


def sample(done: int) -> dict[str, int]:
    return {"done": done, "rss": rss_bytes(), "threads": threads(), **heap_info()}


class BareNativeClient(Client):
    """The native engine and the pool's transport without the pool: sessions offered and
    watched by the same engine, kept in a deque with the pool's policy (up to 8 TLS 1.3 tickets,
    newest first, each once; one TLS 1.2 session), TLS on a non-blocking ``SSLSocket`` on the
    default loop and through ``create_connection(ssl=)`` on uvloop."""

    name = "bare-native"
    resumes = True

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        from aiotlspool.engines.select import select_engine

        self.engine = select_engine("native")
        self.sessions: deque[Any] = deque(maxlen=8)
        self.tls13 = target.tls == "1.3"
        self.resumed = 0

    def _take(self) -> Any:
        if not self.sessions:
            return None
        return self.sessions.pop() if self.tls13 else self.sessions[-1]

    def _prepare(self, ssl_object: Any, session: Any) -> None:
        if session is not None:
            self.engine.offer(ssl_object, session)
        self.engine.watch(ssl_object, self._arrived)

    def _arrived(self, session: Any) -> None:
        if self.tls13 or not self.sessions:
            self.sessions.append(session)
        else:
            self.sessions[-1] = session

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
        loop = asyncio.get_running_loop()
        session = self._take()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        if type(loop).__module__.partition(".")[0] == "uvloop":
            offer: Any = _NativeOffer(self, session)  # the loop only calls its wrap_bio
            transport, _ = await loop.create_connection(
                lambda: protocol, HOST, self.target.port, ssl=offer, server_hostname=HOST
            )
        else:
            from aiotlspool.transports.socket_connect import open_socket_tls

            def wrap(sock: socket.socket) -> ssl.SSLSocket:
                tls = self.context.wrap_socket(
                    sock, server_hostname=HOST, do_handshake_on_connect=False
                )
                self._prepare(tls, session)
                return tls

            transport, _ = await open_socket_tls(
                loop, lambda: protocol, HOST, self.target.port, wrap=wrap
            )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer, transport.get_extra_info("ssl_object")

    async def request(self) -> bool:
        reader, writer, ssl_object = await self._open()
        try:
            writer.write(REQUEST)
            await read_response(reader)
            return bool(ssl_object.session_reused)  # (an SSLSocket forgets it once closed)
        finally:
            await close_writer(writer)


class _NativeOffer:
    """``ssl=`` for uvloop: its ``wrap_bio`` offers and watches like the pool's."""

    def __init__(self, client: BareNativeClient, session: Any) -> None:
        self.client = client
        self.session = session

    def wrap_bio(self, incoming: Any, outgoing: Any, **kwargs: Any) -> ssl.SSLObject:
        ssl_object = self.client.context.wrap_bio(incoming, outgoing, **kwargs)
        self.client._prepare(ssl_object, self.session)
        return ssl_object

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client.context, name)


LONG_CLIENTS: dict[str, type[Client]] = {
    "pool-native": ALL_CLIENTS["pool-native"],
    "bare-native": BareNativeClient,
    "raw": ALL_CLIENTS["raw"],
}


def long_reconnects(
    target: Target,
    client_name: str,
    loop_name: str,
    count: int,
    samples: int,
    max_seconds: float,
    trace_python: bool = False,
) -> dict[str, Any]:
    """Child: up to ``count`` sequential reconnects (stops after ``max_seconds``), RSS and the
    heap sampled ``samples`` times; ``trace_python`` adds tracemalloc (slower: diagnosis)."""
    import tracemalloc

    async def main() -> dict[str, Any]:
        client = LONG_CLIENTS[client_name](target)
        await client.open()
        gc.collect()
        if trace_python:
            tracemalloc.start()
        points = [sample(0)]
        step = max(1, count // samples)
        resumed = done = 0
        stop_at = time.monotonic() + max_seconds
        try:
            while done < count and time.monotonic() < stop_at:
                resumed += bool(await client.request())
                done += 1
                if done % step == 0:
                    points.append(sample(done))
                    if trace_python:
                        points[-1]["python"] = tracemalloc.get_traced_memory()[0]
        finally:
            await client.aclose()
        if done % step:
            points.append(sample(done))
        top: list[str] = []
        if trace_python:
            snapshot = tracemalloc.take_snapshot()
            top = [str(stat) for stat in snapshot.statistics("lineno")[:15]]
            tracemalloc.stop()
        gc.collect()
        before_trim = rss_bytes()
        trim()
        return {
            "done": done,
            "resumed": resumed,
            "points": points,
            "rss_before_trim": before_trim,
            "rss_trimmed": rss_bytes(),
            "python_top": top,
        }

    started = time.monotonic()
    result = run_on(loop_factories()[loop_name], main())
    points = result["points"]
    first_10k = next((p for p in points if p["done"] >= min(10_000, result["done"])), points[-1])
    return {
        "client": client_name,
        "tls": target.tls,
        "loop": loop_name,
        "count": result["done"],
        "resumed": result["resumed"],
        "seconds": round(time.monotonic() - started, 1),
        "points": points,
        "growth_bytes": points[-1]["rss"] - points[0]["rss"],
        "growth_first_10k_bytes": first_10k["rss"] - points[0]["rss"],
        "growth_after_10k_bytes": points[-1]["rss"] - first_10k["rss"],
        # Free heap glibc keeps (fragmentation / high-water mark), and what malloc_trim returns.
        "heap_free_end_bytes": points[-1].get("free"),
        "live_growth_bytes": difference(live(points[-1]), live(points[0])),
        "trimmed_growth_bytes": result["rss_trimmed"] - points[0]["rss"],
        "python_top": result["python_top"],
        "threads": max(p.get("threads", 0) for p in points),
    }


def difference(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


# -- the benchmark section -------------------------------------------------------------------

LONG_TLS = "1.2"  # resumed TLS 1.2 connects are the fastest: the most reconnects in the time


def steps(bench: Any) -> int:
    return 2


def run_section(bench: Any) -> dict[str, Any]:
    """Called by the ``memory`` section of :class:`benchmarks.runner.Bench`: one long run of
    ``memory_long_count`` pool reconnects, then the cache bound under ``cache_endpoints``."""
    from . import memory_cache
    from .memory import run_in_child

    s = bench.settings
    loop_name, _ = bench.preferred_loop()
    cpu = bench.pinning.client_cpu
    target = bench.target("primary", "rsa", LONG_TLS)
    long_rows, bound_rows = [], []
    row = bench.guarded(
        f"memory long run TLS {LONG_TLS}",
        run_in_child,
        long_reconnects,
        target,
        "pool-native",
        loop_name,
        s.memory_long_count,
        20,
        s.memory_long_seconds,
        cpu=cpu,
        timeout=s.memory_long_seconds + 60,
    )
    bench.step(f"memory, {s.memory_long_count} reconnects")
    if row is not None:
        long_rows.append(row)
        bench.console.print(
            f"memory long run: {row['count']} pool-native reconnects (TLS {LONG_TLS}, "
            f"{loop_name}), RSS {row['growth_bytes'] / 2**20:+.2f} MiB"
        )
    row = bench.guarded(
        "memory cache bound",
        run_in_child,
        memory_cache.cache_bound,
        target,
        s.cache_endpoints,
        1024,  # MemorySessionCache's default max_size
        20,
        s.cache_seconds,
        cpu=cpu,
        timeout=s.cache_seconds + 60,
    )
    bench.step(f"memory, cache bound over {s.cache_endpoints} endpoints")
    if row is not None:
        bound_rows.append(row)
        bench.console.print(
            f"memory cache bound: {row['endpoints']} endpoints, RSS after the bound "
            f"{row['growth_after_bound_bytes'] / 2**20:+.2f} MiB"
        )
    return {"long": long_rows, "cache_bound": bound_rows}


def main() -> None:
    """``python -m benchmarks.memory_long``: the long run per client, TLS version and loop,
    against nginx (the Python server when nginx is missing), each cell in a fresh process."""
    import argparse
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from .certs import make_certs
    from .env import choose_pinning
    from .memory import run_in_child
    from .server import NginxServer, PythonServer, Server

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--clients", default=",".join(LONG_CLIENTS))
    parser.add_argument("--tls", default="1.2,1.3")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="per cell")
    parser.add_argument("--output", type=Path, default=Path("memory_long.json"))
    args = parser.parse_args()
    pinning, rows = choose_pinning(), []
    cells = [
        (c, t, lp)
        for t in args.tls.split(",")
        for lp in args.loops.split(",")
        if lp in loop_factories()
        for c in args.clients.split(",")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp), "rsa")
        listeners = [(("rsa", tls), certs) for tls in args.tls.split(",")]
        lifetime = len(cells) * (args.max_seconds + 90) + 60
        nginx = shutil.which("nginx")
        server: Server = (
            NginxServer(nginx, listeners, Path(tmp) / "nginx", pinning.server_cpu, lifetime)
            if nginx
            else PythonServer(listeners, pinning.server_cpu, lifetime)
        )
        try:
            for client, tls, loop_name in cells:
                target = Target(server.ports[("rsa", tls)], certs, tls)
                row = run_in_child(
                    long_reconnects, target, client, loop_name, args.count, 20, args.max_seconds,
                    cpu=pinning.client_cpu, timeout=args.max_seconds + 90,
                )  # fmt: skip
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "points"}), flush=True)
        finally:
            server.stop()
    args.output.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
