"""The session cache's bound under a million distinct endpoints (issue 13, item 5).

``cache_bound`` runs in a fresh pinned process (``memory.run_in_child``): real native sessions
(``SSL_SESSION_dup`` copies of one captured from a real handshake: what the new-session
callback stores for each ticket) put under ``endpoints`` distinct ``SessionKey``s of one
``MemorySessionCache(max_size=...)``, RSS and glibc's heap sampled along the way. Once
``max_size`` keys are held, each put evicts the least recently used key and frees its
sessions, so RSS must stop growing there.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import time
from typing import Any

from aiotlspool import MemorySessionCache, SessionKey

from .certs import HOST
from .clients import REQUEST, Target, close_writer, read_response
from .memory_long import difference, live, sample


def _real_session(target: Target) -> Any:
    """The native sessions captured from one real handshake with the target."""
    from aiotlspool.engines.select import select_engine

    engine = select_engine("native")
    context = target.certs.client_context()
    captured: list[Any] = []

    async def connect() -> None:
        from aiotlspool.transports.socket_connect import open_socket_tls

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await open_socket_tls(
            loop,
            lambda: protocol,
            HOST,
            target.port,
            wrap=lambda sock: _watched(context, sock, engine, captured),
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        writer.write(REQUEST)
        await read_response(reader)
        await close_writer(writer)

    asyncio.run(connect())
    if not captured:
        raise RuntimeError("no session arrived")
    return engine, captured


def _watched(context: ssl.SSLContext, sock: socket.socket, engine: Any, out: list[Any]) -> Any:
    tls = context.wrap_socket(sock, server_hostname=HOST, do_handshake_on_connect=False)
    engine.watch(tls, out.append)
    return tls


def cache_bound(
    target: Target, endpoints: int, max_size: int, samples: int, max_seconds: float
) -> dict[str, Any]:
    """Child: real native sessions duplicated under ``endpoints`` distinct keys of a
    ``MemorySessionCache(max_size=max_size)`` (per key, what one full handshake leaves);
    RSS sampled ``samples`` times and when ``max_size`` keys are held."""
    from aiotlspool.engines.native_session import NativeSession

    # What one full handshake leaves: OpenSSL servers send 2 TLS 1.3 tickets, 1 TLS 1.2 session
    # (distinct tickets: the cache keeps one copy of the same one).
    engine, captured = _real_session(target)
    fns = engine.libssl._fns
    templates = [session.handle._handle() for session in captured[-2:]]
    cache = MemorySessionCache(max_size=max_size)
    gc.collect()
    points = [sample(0)]
    step = max(1, endpoints // samples)
    started = time.monotonic()
    stop_at = started + max_seconds
    done = 0
    while done < endpoints and time.monotonic() < stop_at:
        key = SessionKey(context=1, server_hostname=f"h{done}.example", port=443)
        for template in templates:
            copy = fns.session_dup(template)
            if not copy:
                raise MemoryError("SSL_SESSION_dup failed")
            cache.put_nowait(key, engine.describe(NativeSession(fns, copy)))
        done += 1
        if done % step == 0 or done == max_size:
            points.append(sample(done))
    at_bound = next((p for p in points if p["done"] >= max_size), points[-1])
    return {
        "tls": target.tls,
        "endpoints": done,
        "seconds": round(time.monotonic() - started, 1),
        "max_size": max_size,
        "sessions_per_endpoint": len(templates),
        "cached_sessions": cache.size(),
        "evicted": cache.evicted,
        "points": points,
        "growth_to_bound_bytes": at_bound["rss"] - points[0]["rss"],
        "growth_after_bound_bytes": points[-1]["rss"] - at_bound["rss"],
        # malloc's bytes in use (heap and mmapped): what the cache holds, placement aside
        "live_after_bound_bytes": difference(live(points[-1]), live(at_bound)),
    }
