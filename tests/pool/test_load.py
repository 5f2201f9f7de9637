"""Load: 5,000 concurrent tasks through ``max_connections=20`` against a local TLS server.

What must hold under load far above the limit:

- the limit is never exceeded: sampled on every loop iteration, by every task when it gets its
  connection, and on the server side (connections open at once);
- waiters are served in arrival order: among the tasks that had to wait for a connection (not
  the 20 that opened one, not those that found one idle with nobody queued: the idle fast
  path), the order in which they got it is the order in which they called ``acquire``;
- every task completes within a bound, and the whole run within 60 s;
- no file descriptor is leaked.

Skip it with ``--ignore=tests/pool/test_load.py``. Set ``AIOTLSPOOL_LOAD_REPORT=path`` to append
the figures of each run as one JSON line (docs/reliability.md quotes them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import trustme

from aiotlspool import Pool

from ..support.helpers import HOST, NAME, roundtrip
from ..support.servers import (
    client_context,
    echo,
    fd_baseline,
    open_fds,
    running_server,
    server_context,
    settle_fds,
)

# Only 20 handshakes in 5,000 checkouts: the session engine plays no part here.
SESSION_ENGINES = ["native"]

TASKS = 5000
LIMIT = 20
# Arrivals: a burst of 4,000 calls at once (a queue thousands deep), then 10 waves of 100, one
# every 0.25 s: the early waves queue behind the burst, the late ones find idle connections
# and nobody waiting (the idle fast path).
BURST = 4000
WAVE = 100
WAVE_GAP = 0.25
TASK_BOUND = 30.0  # seconds from acquire to release, for every task
RUN_BOUND = 60.0
REPORT = os.environ.get("AIOTLSPOOL_LOAD_REPORT")


@pytest.fixture(autouse=True)
def _use_session_engine(session_engine: str) -> str:
    # tests/conftest.py parametrizes every async test by engine, but on pytest 9 the engine
    # fixture only runs when a test asks for it: ask here, so "-stdlib" really is stdlib.
    return session_engine


@dataclass(slots=True)
class Record:
    arrival: int  # the order in which tasks called acquire
    served: int = -1  # the order in which acquire returned
    fast_path: bool = False  # an idle connection and nobody waiting at arrival
    new_connection: bool = False
    latency: float = 0.0  # acquire called -> connection released


async def test_5000_tasks_through_20_connections(ca: trustme.CA, cert: trustme.LeafCert) -> None:
    server_live = 0
    server_peak = 0

    async def counting_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal server_live, server_peak
        server_live += 1
        server_peak = max(server_peak, server_live)
        try:
            await echo(reader, writer)
        finally:
            server_live -= 1

    async with running_server(server_context(cert, "TLSv1.3"), counting_echo) as srv:
        baseline = await fd_baseline()
        loop = asyncio.get_running_loop()
        arrivals = itertools.count()
        services = itertools.count()
        records: list[Record] = []
        holders = 0
        peak = {"sampled": 0, "holders": 0, "fds": 0, "waiting": 0}
        started = time.perf_counter()
        pool = Pool(client_context(ca, "TLSv1.3"), max_connections=LIMIT, acquire_timeout=None)
        done = asyncio.Event()

        async def sampler() -> None:
            # On every loop iteration: the pool's own view of its slots.
            samples = 0
            while not done.is_set():
                stats = pool.stats()
                busy = stats.in_use + stats.connecting
                assert busy <= LIMIT, stats
                peak["sampled"] = max(peak["sampled"], busy)
                peak["waiting"] = max(peak["waiting"], stats.waiting)
                samples += 1
                if samples % 64 == 0:
                    peak["fds"] = max(peak["fds"], open_fds() - baseline)
                await asyncio.sleep(0)

        async def client(i: int) -> Record:
            nonlocal holders
            if i >= BURST:
                await asyncio.sleep((i - BURST) // WAVE * WAVE_GAP)
            stats = pool.stats()
            record = Record(next(arrivals), fast_path=stats.idle > 0 and stats.waiting == 0)
            t0 = loop.time()
            conn = await pool.acquire(HOST, srv.port, server_hostname=NAME)
            record.served = next(services)
            record.new_connection = conn.checkouts == 1
            holders += 1
            try:
                stats = pool.stats()
                assert holders <= LIMIT and stats.in_use + stats.connecting <= LIMIT, stats
                assert server_live <= LIMIT
                peak["holders"] = max(peak["holders"], holders)
                await roundtrip(conn)
            finally:
                holders -= 1
                await pool.release(conn)
            record.latency = loop.time() - t0
            records.append(record)
            return record

        async with pool:
            watcher = asyncio.create_task(sampler())
            # asyncio.timeout() needs Python 3.11; wait_for bounds the run on 3.10 too.
            results = await asyncio.wait_for(
                asyncio.gather(*(client(i) for i in range(TASKS))), RUN_BOUND
            )
            done.set()
            await watcher
            stats = pool.stats()
        elapsed = time.perf_counter() - started
        fds_after = await settle_fds(baseline)

    assert len(results) == TASKS
    assert peak["sampled"] == peak["holders"] == LIMIT
    assert server_peak <= LIMIT
    assert stats.connections_opened == LIMIT  # every other checkout reused one of them
    assert (stats.in_use, stats.connecting, stats.waiting, stats.connect_errors) == (0, 0, 0, 0)

    # Arrival order among the tasks that waited in the queue.
    waited = sorted(
        (r for r in records if not r.fast_path and not r.new_connection), key=lambda r: r.served
    )
    out_of_order = [
        (a.arrival, b.arrival) for a, b in itertools.pairwise(waited) if a.arrival > b.arrival
    ]
    assert not out_of_order, out_of_order[:10]
    assert sum(r.new_connection for r in records) == LIMIT
    assert peak["waiting"] >= BURST - LIMIT  # the burst really queued

    latencies = sorted(r.latency for r in records)
    assert latencies[-1] < TASK_BOUND
    assert elapsed < RUN_BOUND
    assert fds_after <= baseline

    if REPORT:
        figures = {
            "loop": "uvloop" if "uvloop" in type(loop).__module__ else "asyncio",
            "tasks": TASKS,
            "limit": LIMIT,
            "elapsed_s": round(elapsed, 2),
            "peak_in_use_sampled": peak["sampled"],
            "peak_holders": peak["holders"],
            "server_peak_connections": server_peak,
            "connections_opened": stats.connections_opened,
            "peak_waiting": peak["waiting"],
            "waited_in_queue": len(waited),
            "fast_path": sum(r.fast_path for r in records),
            "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "latency_max_ms": round(latencies[-1] * 1000, 1),
            "fds_baseline": baseline,
            "fds_peak_above_baseline": peak["fds"],
            "fds_after": fds_after,
        }
        write_report(REPORT, figures)


def write_report(path: str, figures: Mapping[str, object]) -> None:
    with open(path, "a") as out:
        out.write(json.dumps(figures) + "\n")
