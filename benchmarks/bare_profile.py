"""Where the bare workload's client CPU goes: cProfile (CPU-time clock) over connects of the
hand-written loop and of the pool (``benchmarks/bare.py``), side by side, and OpenSSL's own
share (``benchmarks/bare_floor.py``).

    .venv/bin/python -m benchmarks.bare_profile [--loops asyncio,uvloop] [--connects 400]
        [--out benchmarks/results/bare-profile.txt]

For each case: Python function calls per connect, then the functions only the pool runs (its
extra work) with their own time per connect, then the pool's top functions by own time.
cProfile charges its overhead to every Python call, so the pool (more calls) looks costlier
under it than it is: read where the time goes, not the totals. On uvloop, time spent in its C
code is charged to the Python frame that awaits it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from .bare import CLIENTS, ByteServer
from .bare_floor import handshake_floor
from .certs import make_certs
from .env import loop_factories, pin_self, run_on

RESULTS = Path(__file__).parent / "results"
Stats = dict[str, tuple[float, float]]  # function -> (calls, own seconds)


def profile_variant(
    certs: Any, factory: Any, tls: str, port: int, variant: str, mode: str, n: int
) -> tuple[Stats, float]:
    """Own time and calls per function over ``n`` connects, and CPU µs per connect (profiled)."""
    profiler = cProfile.Profile(time.thread_time)  # CPU time, not waiting

    async def main() -> float:
        client = CLIENTS[variant](certs, tls, port, mode == "resumed")
        try:
            for _ in range(3):
                await client.connect()
            started = time.thread_time()
            profiler.enable()
            for _ in range(n):
                await client.connect()
            profiler.disable()
            return (time.thread_time() - started) / n
        finally:
            await client.aclose()

    cpu = run_on(factory, main())
    raw: Any = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    stats = {
        f"{os.path.basename(path)}:{line}({name})": (value[1] / n, value[2] / n)
        for (path, line, name), value in raw.items()
    }
    return stats, cpu * 1e6


def compare(bare: Stats, pool: Stats, top: int) -> list[str]:
    calls_bare = sum(c for c, _ in bare.values())
    calls_pool = sum(c for c, _ in pool.values())
    own_bare = sum(t for _, t in bare.values()) * 1e6
    own_pool = sum(t for _, t in pool.values()) * 1e6
    lines = [
        f"Python function calls per connect: bare {calls_bare:.0f}, pool {calls_pool:.0f}; "
        f"profiled own time per connect: bare {own_bare:.0f} µs, pool {own_pool:.0f} µs",
        "",
        "Only in the pool (own time per connect, profiled µs; calls per connect):",
    ]
    only = sorted(((t, k, c) for k, (c, t) in pool.items() if k not in bare), reverse=True)
    total = sum(t for t, _, _ in only) * 1e6
    for t, name, calls in only[:top]:
        lines.append(f"  {t * 1e6:7.1f}  {calls:5.2f}  {name}")
    lines += [f"  {total:7.1f}         total of {len(only)} functions", ""]
    by_module: dict[str, float] = {}
    for t, name, _ in only:
        module = name.split(":")[0]
        by_module[module] = by_module.get(module, 0.0) + t * 1e6
    lines.append(
        "  by module: "
        + ", ".join(
            f"{m} {t:.0f}" for m, t in sorted(by_module.items(), key=lambda kv: -kv[1])[:12]
        )
    )
    lines += ["", "Pool, top own time (profiled µs per connect; calls per connect):"]
    for name, (calls, t) in sorted(pool.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {t * 1e6:7.1f}  {calls:5.2f}  {name}")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--connects", type=int, default=400)
    parser.add_argument("--tls", default="1.2,1.3")
    parser.add_argument("--modes", default="resumed")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "bare-profile.txt")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    parts = [
        f"# bare workload profile ({args.connects} connects per variant, cProfile CPU clock)\n"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp), "rsa")
        server = ByteServer(certs, server_cpu, 600)
        pin_self(client_cpu)
        try:
            for loop in args.loops.split(","):
                factory = loop_factories()[loop]
                for tls in args.tls.split(","):
                    for mode in args.modes.split(","):
                        port = server.ports[tls]
                        bare, bare_cpu = profile_variant(
                            certs, factory, tls, port, "bare", mode, args.connects
                        )
                        pool, pool_cpu = profile_variant(
                            certs, factory, tls, port, "pool", mode, args.connects
                        )
                        parts.append(
                            f"## {loop}, TLS {tls}, {mode}: CPU per connect under the profiler: "
                            f"bare {bare_cpu:.0f} µs, pool {pool_cpu:.0f} µs\n"
                        )
                        parts += compare(bare, pool, args.top)
            parts.append("## OpenSSL alone (benchmarks/bare_floor.py), client CPU µs, medians\n")
            for tls in args.tls.split(","):
                for watch in (False, True):
                    floor = handshake_floor(certs, tls, 300, watch)
                    figures = ", ".join(f"{k} {v:.0f}" for k, v in floor.items())
                    parts.append(
                        f"TLS {tls}, new-session callback {'on' if watch else 'off'}: {figures}"
                    )
        finally:
            server.stop()
    args.out.write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
