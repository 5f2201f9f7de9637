"""RSS growth over many reconnects, stdlib vs native session engine (issue: native engine).

Each engine runs in a fresh client process against a TLS 1.3 echo server in another process:
connect -> write 4 bytes -> read them -> close, N times, capturing one session per connection
(TLS 1.3 tickets are single-use, so every connection stores a new one). RSS is read from
/proc/self/status after a warm-up and at the end.

    .venv/bin/python -m benchmarks.engine_rss --connections 100000

Bounded: stops after --connections or --max-seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def trimmed_rss_kib() -> int:
    """RSS after asking glibc to return free heap pages: separates a leak (still there) from
    allocator slack (gone). Falls back to plain RSS elsewhere."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_kib()


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def serve(
    cert_file: str, key_file: str, port_out: multiprocessing.Queue[int], lifetime: float
) -> None:
    """TLS 1.3 echo server; exits after ``lifetime`` seconds or when its parent dies."""
    parent = os.getppid()

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_file, key_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx, backlog=512)
        port_out.put(server.sockets[0].getsockname()[1])
        end = time.monotonic() + lifetime
        while time.monotonic() < end and os.getppid() == parent:  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.5)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def client(
    engine: str, port: int, ca_file: str, connections: int, max_seconds: float
) -> dict[str, Any]:
    from aiotlspool import Pool

    async def main() -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=ca_file)
        async with Pool(ctx, session_engine=engine) as pool:

            async def once() -> bool:
                conn = await pool.acquire("127.0.0.1", port, server_hostname="localhost")
                conn.writer.write(b"ping")
                await conn.reader.readexactly(4)
                await conn.aclose()
                return conn.session_reused

            for _ in range(1000):  # warm-up: allocator and caches settle
                await once()
            start_trimmed = trimmed_rss_kib()
            start_rss, start = rss_kib(), time.perf_counter()
            done = resumed = 0
            samples = []
            while done < connections and time.perf_counter() - start < max_seconds:
                resumed += await once()
                done += 1
                if done % 10_000 == 0:
                    samples.append((done, rss_kib() - start_rss))
            elapsed = time.perf_counter() - start
            end_rss = rss_kib()
            stats = pool.stats()
            return {
                "engine": pool.session_engine,
                "connections": done,
                "resumed": resumed,
                "sessions_stored": stats.sessions_stored,
                "rss_start_kib": start_rss,
                "rss_end_kib": end_rss,
                "rss_growth_mib": round((end_rss - start_rss) / 1024, 1),
                "bytes_per_connection": round((end_rss - start_rss) * 1024 / max(done, 1), 1),
                # The same after malloc_trim(0) at both ends: what is really still held.
                "trimmed_growth_mib": round((trimmed_rss_kib() - start_trimmed) / 1024, 1),
                "growth_kib_every_10k": samples,
                # A leak grows with every connection; allocator arenas settle in a step. The
                # growth after the first 10,000 tells the two apart.
                "growth_after_first_10k_mib": (
                    round((end_rss - start_rss - samples[0][1]) / 1024, 1) if samples else None
                ),
                "connects_per_second": round(done / elapsed, 1),
            }

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--engines", default="stdlib,native")
    parser.add_argument("--output", default="benchmarks/results/engine_rss.json")
    args = parser.parse_args()

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    with tempfile.TemporaryDirectory() as tmp:
        ca_file, cert_file, key_file = (Path(tmp) / n for n in ("ca.pem", "cert.pem", "key.pem"))
        ca.cert_pem.write_to_path(str(ca_file))
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        lifetime = args.max_seconds * 3 + 120
        server = multiprocessing.Process(
            target=serve, args=(str(cert_file), str(key_file), ports, lifetime), daemon=True
        )
        server.start()
        port = ports.get(timeout=30)
        results = []
        try:
            # A fresh process per engine (maxtasksperchild=1): RSS figures stay independent.
            with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as workers:
                for engine in args.engines.split(","):
                    result = workers.apply(
                        client, (engine, port, str(ca_file), args.connections, args.max_seconds)
                    )
                    print(json.dumps(result), flush=True)
                    results.append(result)
        finally:
            server.terminate()
            server.join(5)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "tls": "TLSv1.3, RSA-2048 (trustme), server in another process",
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
