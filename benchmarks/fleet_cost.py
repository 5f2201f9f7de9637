"""What the Redis tier adds to a resumed connect (part of the ``fleet`` section).

One process (the harness, on the client CPU), one event loop, three pools
(``session_engine="native"``) against the same nginx port, each with its own context and store:

- ``memory``: a ``MemorySessionCache`` - the baseline;
- ``redis``: a ``RedisSessionCache`` with its defaults: the in-process tier on, written behind
  (the hot path: a TLS 1.2 session is reused from the tier without a round trip; the newest
  TLS 1.3 ticket is held in the process for its next connect, older ones published);
- ``redis-cold``: the same with ``local=False``: every session read from Redis and parsed
  (what a process pays for a session another process wrote).

After a warm-up, the pools take turns in blocks of ``fleet_cost_block`` sequential connections
(connect, ``GET /``, response, close), the order rotating each round. Per block: client CPU
(``getrusage``, so the store's background writes count too; inside the block a Redis store
writes what it queued - ``flush(publish_held=False)``: the ticket it holds for its next
connect stays held, as in a process that goes on connecting) and, per connection, the CPU
and wall time of ``pool.acquire()`` - the connect with its resumed handshake.
"""

from __future__ import annotations

import math
import secrets
import statistics
import time
import uuid
from typing import Any

from aiotlspool import MemorySessionCache, Pool, RedisSessionCache

from .certs import HOST
from .clients import REQUEST, read_response
from .env import process_cpu, run_on

VARIANTS = ("memory", "redis", "redis-cold")
WARMUP = 10


def _store(variant: str, url: str, secret: bytes) -> Any:
    if variant == "memory":
        return MemorySessionCache()
    namespace = f"cost-{uuid.uuid4().hex[:12]}"
    return RedisSessionCache.from_url(
        url, secret=secret, namespace=namespace, local=variant == "redis"
    )


async def _block(pool: Pool, store: Any, port: int, count: int) -> dict[str, Any]:
    acquire_cpu, acquire_wall = [], []
    resumed = 0
    cpu, started = process_cpu(), time.perf_counter()
    for _ in range(count):
        thread, wall = time.thread_time(), time.perf_counter()
        conn = await pool.acquire(HOST, port)
        acquire_cpu.append(time.thread_time() - thread)
        acquire_wall.append(time.perf_counter() - wall)
        try:
            conn.writer.write(REQUEST)
            await read_response(conn.reader)
            resumed += conn.session_reused
        finally:
            await conn.aclose()
    if isinstance(store, RedisSessionCache):
        # The writes this block queued are part of its cost; its newest TLS 1.3 ticket stays
        # held, as in a process that goes on connecting (its next block resumes with it).
        await store.flush(publish_held=False)
    return {
        "cpu": process_cpu() - cpu,
        "seconds": time.perf_counter() - started,
        "count": count,
        "resumed": resumed,
        "acquire_cpu": acquire_cpu,
        "acquire_wall": acquire_wall,
    }


async def _ping_cpu(client: Any, count: int) -> float:
    """Client CPU of one redis-py round trip (PING), µs: the floor of any Redis call."""
    await client.ping()
    cpu = process_cpu()
    for _ in range(count):
        await client.ping()
    return 1e6 * (process_cpu() - cpu) / count


def measure(
    bench: Any, url: str, tls: str, rounds: int, block: int, seconds: float
) -> dict[str, Any]:
    """The blocks of every variant for one TLS version, on the preferred loop."""
    target = bench.target("primary", "rsa", tls)
    secret = secrets.token_bytes(32)
    _, factory = bench.preferred_loop()

    async def main() -> dict[str, Any]:
        stores = {v: _store(v, url, secret) for v in VARIANTS}
        pools = {
            v: Pool(target.certs.client_context(), session_engine="native", session_cache=s)
            for v, s in stores.items()
        }
        blocks: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        ping = math.nan
        try:
            for v in VARIANTS:
                await _block(pools[v], stores[v], target.port, WARMUP)
            stop_at = time.monotonic() + seconds
            for rnd in range(rounds):
                if time.monotonic() > stop_at:
                    break
                order = VARIANTS[rnd % 3 :] + VARIANTS[: rnd % 3]
                for v in order:
                    blocks[v].append(await _block(pools[v], stores[v], target.port, block))
                bench.step(f"fleet: Redis tier cost, TLS {tls} ({rnd + 1}/{rounds})")
            ping = await _ping_cpu(stores["redis"].client, 300)
        finally:
            counters = {}
            for v, pool in pools.items():
                await pool.aclose()
                store = stores[v]
                if isinstance(store, RedisSessionCache):
                    await store.flush()
                    counters[v] = store.counters()
                    await store.clear()
                    await store.client.aclose()
        return {"blocks": blocks, "counters": counters, "ping_cpu_us": ping}

    return run_on(factory, main())


def summarise(tls: str, measured: dict[str, Any]) -> dict[str, Any]:
    """Medians per variant, and the Redis variants' added CPU per connect (round by round)."""
    blocks = measured["blocks"]
    rows: dict[str, Any] = {}
    for v, runs in blocks.items():
        if not runs:
            continue
        rows[v] = {
            "blocks": len(runs),
            "connections": sum(b["count"] for b in runs),
            "resumed": sum(b["resumed"] for b in runs),
            "cpu_us": statistics.median(1e6 * b["cpu"] / b["count"] for b in runs),
            "acquire_cpu_us": 1e6 * statistics.median(x for b in runs for x in b["acquire_cpu"]),
            "acquire_wall_us": 1e6 * statistics.median(x for b in runs for x in b["acquire_wall"]),
            "counters": measured["counters"].get(v),
        }
    base = rows.get("memory")
    for v in ("redis", "redis-cold"):
        if base is None or v not in rows:
            continue
        # Round by round: the blocks of one round ran one after the other.
        added = [
            1e6 * (r["cpu"] / r["count"] - m["cpu"] / m["count"])
            for m, r in zip(blocks["memory"], blocks[v], strict=False)
        ]
        rows[v]["added_cpu_us"] = statistics.median(added)
        rows[v]["added_cpu_us_p25"], _, rows[v]["added_cpu_us_p75"] = (
            statistics.quantiles(added, n=4) if len(added) > 1 else [added[0]] * 3
        )
        rows[v]["added_of_acquire"] = rows[v]["added_cpu_us"] / base["acquire_cpu_us"]
        rows[v]["added_of_connection"] = rows[v]["added_cpu_us"] / base["cpu_us"]
        rows[v]["added_wall_us"] = rows[v]["acquire_wall_us"] - base["acquire_wall_us"]
    return {"tls": tls, "variants": rows, "ping_cpu_us": measured.get("ping_cpu_us")}


def run(bench: Any, url: str) -> list[dict[str, Any]]:
    """Both TLS versions (called from :func:`benchmarks.fleet.run_section`)."""
    s = bench.settings
    out = []
    for tls in ("1.2", "1.3"):
        measured = measure(
            bench, url, tls, s.fleet_cost_rounds, s.fleet_cost_block, s.fleet_cost_seconds
        )
        row = summarise(tls, measured)
        out.append(row)
        parts = [
            f"{v} {r['cpu_us']:.0f} µs/conn"
            + (
                f" ({r['added_cpu_us']:+.0f} µs, {r['added_of_acquire']:+.0%} of a resumed connect)"
                if "added_cpu_us" in r
                else ""
            )
            for v, r in row["variants"].items()
        ]
        bench.console.print(f"fleet: Redis tier cost TLS {tls}: " + ", ".join(parts))
    return out
