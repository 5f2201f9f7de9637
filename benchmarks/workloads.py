"""Reconnect-heavy and burst workloads. Every timed batch is bounded in connections and time.

Client CPU is ``getrusage(RUSAGE_SELF)``: this process is the client and nothing else runs in it
during a timed run (progress bars are redrawn between runs, never from a thread).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .clients import ALL_CLIENTS, TICKETS_PER_ENDPOINT, Client, PoolClient, Target
from .env import LoopFactory, process_cpu, run_on
from .server import Server

MAX_ERRORS = 5


@dataclass
class Drive:
    """What one batch of connections did."""

    done: int = 0
    resumed: int = 0  # as the client saw it
    unknown: int = 0  # connections whose client could not tell
    errors: int = 0
    last_error: str = ""


async def drive(client: Client, count: int, concurrency: int, seconds: float) -> Drive:
    """``count`` connections from ``concurrency`` tasks, stopping early after ``seconds``."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    result = Drive()
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and loop.time() < stop_at:
            remaining -= 1
            try:
                reused = await client.request()
            except Exception as exc:
                result.errors += 1
                result.last_error = repr(exc)
                if result.errors >= MAX_ERRORS:
                    raise
                continue
            result.done += 1
            if reused is None:
                result.unknown += 1
            elif reused:
                result.resumed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def expected_resumed(resumes: bool, tls: str, count: int, concurrency: int) -> tuple[int, int]:
    """The range of resumed handshakes a timed batch should show, once warmed up.

    A resuming client on TLS 1.2 resumes every time (one reusable session). On TLS 1.3 each
    connection consumes a single-use ticket and yields one, and the cache keeps at most 8 per
    endpoint. With up to 8 tasks every connection finds a ticket. With more, the tasks move in
    waves: a wave's connections all close (each storing a ticket, the cache keeping the last 8)
    before the next wave connects, so only 8 connections per wave are sure to resume.
    """
    if not resumes:
        return 0, 0
    if tls == "1.2" or concurrency <= TICKETS_PER_ENDPOINT:
        return count, count
    waves = -(-count // concurrency)
    return min(count, waves * TICKETS_PER_ENDPOINT), count


def is_flagged(run: dict[str, Any]) -> bool:
    """The server's resumed count is outside what the mode should give, or the client saw a
    different count than the server."""
    return not run["expected_min"] <= run["resumed_server"] <= run["expected_max"] or (
        run["resumed_client"] is not None and run["resumed_client"] != run["resumed_server"]
    )


@dataclass
class ReconnectRun:
    count: int
    seconds: float
    client_cpu: float
    server_cpu: float
    resumed_client: int | None
    full_server: int
    resumed_server: int
    expected_min: int
    expected_max: int
    errors: int
    last_error: str

    @property
    def flagged(self) -> bool:
        return is_flagged(asdict(self))

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["cps"] = self.count / self.seconds if self.seconds else 0.0
        data["cpu_us_per_conn"] = 1e6 * self.client_cpu / self.count if self.count else 0.0
        data["server_busy"] = self.server_cpu / self.seconds if self.seconds else 0.0
        data["flagged"] = self.flagged
        return data


async def _timed_batch(
    server: Server, client: Client, tls: str, count: int, concurrency: int, seconds: float
) -> ReconnectRun:
    port = client.target.port
    before = server.counts(port)
    server_cpu = server.cpu_seconds()
    cpu = process_cpu()
    started = time.perf_counter()
    timed = await drive(client, count, concurrency, seconds)
    elapsed = time.perf_counter() - started
    cpu = process_cpu() - cpu
    server_cpu = server.cpu_seconds() - server_cpu
    after = server.wait_counted(port, sum(before) + timed.done)
    low, high = expected_resumed(client.resumes, tls, timed.done, concurrency)
    return ReconnectRun(
        count=timed.done,
        seconds=elapsed,
        client_cpu=cpu,
        server_cpu=server_cpu,
        resumed_client=None if timed.unknown else timed.resumed,
        full_server=after[0] - before[0],
        resumed_server=after[1] - before[1],
        expected_min=low,
        expected_max=high,
        errors=timed.errors,
        last_error=timed.last_error,
    )


def run_cell(
    server: Server,
    target: Target,
    names: list[str],
    loop_factory: LoopFactory,
    *,
    count: int,
    concurrency: int,
    reps: int,
    seconds: float,
    after_batch: Callable[[str, int], None],
) -> dict[str, list[ReconnectRun]]:
    """All clients on one fresh event loop: each warms up (2 x concurrency connections, at
    least 8), then ``reps`` rounds in which every client, in rotated order, runs one timed batch
    of ``count`` connections from ``concurrency`` tasks. Alternating batch by batch spreads the
    machine's noise over all clients alike. ``after_batch(name, rep)`` runs between batches."""

    async def main() -> dict[str, list[ReconnectRun]]:
        clients = [ALL_CLIENTS[name](target) for name in names]
        runs: dict[str, list[ReconnectRun]] = {name: [] for name in names}
        try:
            for client in clients:
                await client.open()
                warm = max(2 * concurrency, TICKETS_PER_ENDPOINT)
                await drive(client, warm, concurrency, seconds)
            for rep in range(reps):
                shift = rep % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    batch = await _timed_batch(
                        server, client, target.tls, count, concurrency, seconds
                    )
                    runs[client.name].append(batch)
                    after_batch(client.name, rep)
        finally:
            for client in clients:
                await client.aclose()
        return runs

    return run_on(loop_factory, main())


@dataclass
class BurstRun:
    burst: int
    warmup: int
    resumed_client: int
    resumed_server: int
    expected: int
    cache_size_before: int


def run_burst(
    server: Server,
    target: Target,
    client_cls: type[Client],
    loop_factory: LoopFactory,
    *,
    burst: int,
    warmup: int,
) -> BurstRun:
    """``warmup`` connections open at the same time (so that each leaves a ticket), then
    ``burst`` new connections at once: how many resumed."""

    async def wave(client: PoolClient, size: int) -> int:
        # Each request() starts its connect (taking a cached session) before any finishes.
        return sum(await asyncio.gather(*(client.request() for _ in range(size))))

    async def main() -> BurstRun:
        client = client_cls(target)
        assert isinstance(client, PoolClient)
        await client.open()
        try:
            start = server.counts(target.port)
            await wave(client, warmup)
            before = server.wait_counted(target.port, sum(start) + warmup)
            cache = client.pool.stats().cache_size
            resumed = await wave(client, burst)
            after = server.wait_counted(target.port, sum(before) + burst)
        finally:
            await client.aclose()
        return BurstRun(
            burst=burst,
            warmup=warmup,
            resumed_client=resumed,
            resumed_server=after[1] - before[1],
            expected=burst if target.tls == "1.2" else min(burst, TICKETS_PER_ENDPOINT),
            cache_size_before=cache,
        )

    return run_on(loop_factory, main())
