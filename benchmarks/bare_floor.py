"""OpenSSL's own share of a connect: full and resumed handshakes over memory BIOs in one thread,
the client's calls timed alone (``time.thread_time``) - no sockets, no event loop, no pool.

What the client's TLS costs when nothing else does: the ceiling of any resumed ÷ full ratio
measured on the bare workload, where the same fixed costs (TCP, the event loop, close_notify)
are added to both.
"""

from __future__ import annotations

import contextlib
import ssl
import statistics
import time
from typing import Any

from aiotlspool.engines.select import select_engine

from .certs import HOST
from .server import TLS_VERSIONS


def handshake_floor(certs: Any, tls: str, count: int, watch: bool) -> dict[str, float]:
    """Client CPU µs of a full and a resumed handshake, no sockets and no event loop: the
    client's ``do_handshake`` calls (``handshake``), then its read of what the server sent
    after the handshake (``tickets``: TLS 1.3 NewSessionTicket processing, with the native
    engine's new-session callback when ``watch``) and the 1-byte record."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(certs.chain), str(certs.key))
    client_ctx = certs.client_context()
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tls]
    engine = select_engine("native")
    latest: list[Any] = []

    def one(session: Any) -> tuple[float, float, bool]:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOST)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        if session is not None:
            engine.offer(client, session)
        if watch or not latest:
            engine.watch(client, latest.append)
        spent = 0.0
        done = False
        while not done:
            started = time.thread_time()
            try:
                client.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass
            spent += time.thread_time() - started
            s_in.write(c_out.read())
            with contextlib.suppress(ssl.SSLWantReadError):
                server.do_handshake()
            c_in.write(s_out.read())
        server.write(b"x")
        c_in.write(s_out.read())
        started = time.thread_time()
        assert client.read(1) == b"x"
        after = time.thread_time() - started
        return spent, after, client.session_reused

    one(None)  # a warm-up: its session resumes the first resumed handshake (unwatched: all)
    out: dict[str, float] = {}
    for mode in ("full", "resumed"):
        hand, tick = [], []
        for _ in range(count):
            session = latest[-1] if mode == "resumed" and latest else None
            h, t, reused = one(session)
            if reused != (mode == "resumed"):
                raise RuntimeError(f"{mode} handshake: reused={reused}")
            hand.append(h)
            tick.append(t)
        out[f"{mode}_handshake_us"] = statistics.median(hand) * 1e6
        out[f"{mode}_after_us"] = statistics.median(tick) * 1e6
    return out
