"""Connect latency through the delay proxy: full vs resumed handshakes, TLS 1.2 and 1.3.

Two pools side by side on one event loop - one resuming, one with ``session_cache=False`` -
take turns, so both see the same noise. Latency is the time ``pool.acquire()`` takes (TCP
connect to the proxy + TLS handshake + the pool's own work). The request that follows measures
the RTT actually injected.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from aiotlspool import Pool

from .certs import HOST
from .clients import REQUEST, Target, read_response
from .env import LoopFactory, run_on


@dataclass
class LatencyResult:
    tls: str
    loop: str
    rtt_ms: float
    samples: int
    full_ms: list[float]
    resumed_ms: list[float]
    request_ms: list[float]  # one request/response on an open connection: about one RTT
    not_resumed: int  # offered a session but got a full handshake (should be 0)

    def summary(self) -> dict[str, Any]:
        full = statistics.median(self.full_ms) if self.full_ms else float("nan")
        resumed = statistics.median(self.resumed_ms) if self.resumed_ms else float("nan")
        request = statistics.median(self.request_ms) if self.request_ms else float("nan")
        return {
            "tls": self.tls,
            "loop": self.loop,
            "rtt_ms": self.rtt_ms,
            "samples": self.samples,
            "full_ms": full,
            "resumed_ms": resumed,
            "request_ms": request,
            "saved_ms": full - resumed,
            "saved_rtt": (full - resumed) / self.rtt_ms,
            "not_resumed": self.not_resumed,
            "raw": {"full_ms": self.full_ms, "resumed_ms": self.resumed_ms},
        }


async def _one(pool: Pool, port: int) -> tuple[float, float, bool]:
    started = time.perf_counter()
    conn = await pool.acquire(HOST, port)
    connected = time.perf_counter()
    try:
        conn.writer.write(REQUEST)
        await read_response(conn.reader)
        answered = time.perf_counter()
    finally:
        await conn.aclose()
    return connected - started, answered - connected, conn.session_reused


def run_latency(
    target: Target,
    proxy_port: int,
    loop_name: str,
    loop_factory: LoopFactory,
    *,
    rtt: float,
    samples: int,
) -> LatencyResult:
    """``samples`` connects per pool, alternating, after one warm-up connect each."""

    async def main() -> LatencyResult:
        resuming = Pool(target.certs.client_context())
        full = Pool(target.certs.client_context(), session_cache=False)
        result = LatencyResult(target.tls, loop_name, rtt * 1000, samples, [], [], [], 0)
        try:
            await _one(resuming, proxy_port)  # leaves a session (or ticket) in the cache
            await _one(full, proxy_port)
            for _ in range(samples):
                seconds, request, _ = await _one(full, proxy_port)
                result.full_ms.append(seconds * 1000)
                result.request_ms.append(request * 1000)
                seconds, request, reused = await _one(resuming, proxy_port)
                if reused:
                    result.resumed_ms.append(seconds * 1000)
                else:
                    result.not_resumed += 1
                result.request_ms.append(request * 1000)
        finally:
            await resuming.aclose()
            await full.aclose()
        return result

    return run_on(loop_factory, main())
