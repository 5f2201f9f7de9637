"""Sequential reconnects, paired: all clients share one event loop and take turns connection by
connection, each connection timed on its own (wall clock and this thread's CPU clock).

Noise on a shared machine comes in bursts of tens to hundreds of milliseconds; taking turns at
the scale of one connection (~2 ms) spreads every burst over all clients alike, and medians of
per-connection times ignore the bursts. This is the most precise comparison the harness makes,
so the pool-overhead target is judged on it. Only for one task at a time: with concurrent tasks
a connection's CPU time cannot be told apart from its neighbours'.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from .clients import ALL_CLIENTS, Client, Target
from .env import LoopFactory, run_on
from .server import Server
from .workloads import drive


async def _timed(client: Client) -> tuple[float, float, bool | None]:
    wall, cpu = time.perf_counter(), time.thread_time()
    reused = await client.request()
    return time.perf_counter() - wall, time.thread_time() - cpu, reused


def run_paired(
    server: Server,
    target: Target,
    names: list[str],
    loop_name: str,
    loop_factory: LoopFactory,
    *,
    count: int,
) -> dict[str, Any]:
    """``count`` rounds; in each, every client makes one connection (order rotates)."""

    async def main() -> dict[str, Any]:
        clients = [ALL_CLIENTS[name](target) for name in names]
        for client in clients:
            await client.open()
        walls: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        resumed: dict[str, int] = dict.fromkeys(names, 0)
        try:
            for client in clients:
                await drive(client, 8, 1, 30)  # warm-up: caches primed, imports done
            before = server.counts(target.port)
            for i in range(count):
                shift = i % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    wall, cpu, reused = await _timed(client)
                    walls[client.name].append(wall)
                    cpus[client.name].append(cpu)
                    resumed[client.name] += bool(reused)
        finally:
            for client in clients:
                await client.aclose()
        tls_clients = sum(1 for client in clients if client.tls)
        after = server.wait_counted(target.port, sum(before) + count * tls_clients)
        expected = sum(count for c in clients if c.resumes)
        rows = {}
        for name in names:
            wall_us = statistics.median(walls[name]) * 1e6
            rows[name] = {
                "wall_us": wall_us,
                "cpu_us": statistics.median(cpus[name]) * 1e6,
                "cps": 1e6 / wall_us,
                "resumed_client": resumed[name],
            }
        return {
            "server": server.kind,
            "key": target.certs.key_type,
            "tls": target.tls,
            "loop": loop_name,
            "count": count,
            "clients": rows,
            "resumed_server": after[1] - before[1],
            "expected_resumed": expected,
            # Every connection of a resuming client should resume, and no other.
            "flagged": after[1] - before[1] != expected,
        }

    return run_on(loop_factory, main())
