"""Where a reconnect-heavy HTTPS request's client CPU goes: the pool, lean, curl_cffi.

``python -m benchmarks.peers_profile [--tls 1.2|1.3] [--requests 3000] [--out DIR]``

The workload of the ``peers`` section (:mod:`benchmarks.peers`: a new connection per request,
``GET /`` with ``Connection: close``, the whole response read, close), one request at a time,
on asyncio's own loop (its Python code is visible to a sampler; uvloop's C code, idle waits
included, would show as one opaque frame). nginx as the harness starts it, pinned the same way.
For each variant a child process makes ``--requests`` requests under ``py-spy record`` (a
sampling profiler: it slows Python code far less than cProfile) and reports its own CPU per
request (``getrusage``). Each sample is put in one category by its innermost Python frame
(C code is billed to the Python function that called it: ``SSLSocket.do_handshake`` is
OpenSSL's handshake, ``AsyncCurl.socket_action`` is libcurl and BoringSSL); samples blocked in
``epoll`` are idle and left out. A category's µs per request = its share of the busy samples x
the child's CPU per request. Raw stacks are written to ``--out`` (flamegraph input).

Needs py-spy (``pip install py-spy``) and the right to trace a child (root, or
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .certs import CertFiles, make_certs
from .clients import Target
from .env import choose_pinning, pin_self
from .peers import CURL, LEAN, POOL, classes
from .server import NginxServer

WARMUP = 50
CATEGORIES = (  # (category, markers of the innermost frame), the first match wins
    ("OpenSSL: the handshake (SSL_do_handshake)", ("do_handshake (ssl.py",)),
    ("OpenSSL: other calls (SSL_new in wrap_socket, read, write, shutdown)", ("(ssl.py",)),
    ("OpenSSL: other calls (SSL_new in wrap_socket, read, write, shutdown)", ("shutdown_step",)),
    ("socket system calls (socket, connect, close)", ("(socket.py", "_sock_connect ")),
    ("aiotlspool: native engine, settings probe (ctypes)", ("/engines/", "/verification")),
    ("aiotlspool: socket transport (Python)", ("aiotlspool/transports/",)),
    ("aiotlspool: pool, connector, connection (Python)", ("aiotlspool/",)),
    ("asyncio streams", ("asyncio/streams",)),
    ("event loop (asyncio's Python: selectors, handles, futures, timeouts)", ("asyncio/",)),
    ("event loop (asyncio's Python: selectors, handles, futures, timeouts)", ("selectors.py",)),
    ("libcurl + BoringSSL (C, curl_multi_socket_action)", ("socket_action",)),
    ("curl_cffi's Python layer", ("curl_cffi/", "cookiejar", "urllib/")),
    ("benchmark code (request, HTTP parsing; lean: its whole driver)", ("benchmarks/",)),
)
IDLE = ("EpollSelector.select", "select (selectors")


def _child(args: argparse.Namespace) -> None:
    """In the profiled process: warm up, then the measured requests; CPU per request out."""
    pin_self(args.cpu)
    ca = Path(args.ca)
    certs = CertFiles("rsa", ca, ca, ca)  # only the CA is read by a client
    target = Target(args.port, certs, args.tls)

    async def main() -> dict[str, float]:
        client = classes()[args.child](target, 1)
        await client.open()
        try:
            for _ in range(WARMUP):
                await client.request()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu, started = usage.ru_utime + usage.ru_stime, time.perf_counter()
            for _ in range(args.requests):
                await client.request()
            elapsed = time.perf_counter() - started
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime - cpu
        finally:
            await client.aclose()
        return {"cpu_us": 1e6 * cpu / args.requests, "rps": args.requests / elapsed}

    print(json.dumps(asyncio.run(main())))


def categorise(raw: Path, cpu_us: float) -> dict[str, object]:
    """Busy samples per category and per innermost function, as µs per request."""
    categories: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "run_until_complete" not in stack or "importlib" in stack:
            continue  # start-up and imports, not requests
        frame = stack.split(";")[-1]
        if any(marker in frame for marker in IDLE):
            idle += int(count)
            continue
        name = next((c for c, marks in CATEGORIES if any(m in frame for m in marks)), "other")
        categories[name] += int(count)
        functions[re.sub(r":\d+\)", ")", frame)] += int(count)
    busy = sum(categories.values()) or 1

    def share(counter: collections.Counter[str], top: int) -> list[tuple[str, float, float]]:
        return [(k, v / busy, cpu_us * v / busy) for k, v in counter.most_common(top)]

    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "categories": share(categories, 20),
        "functions": share(functions, 15),
    }


def _profile(variant: str, target: Target, cpu: int | None, args: argparse.Namespace) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = args.out / f"peers-{variant}-tls{args.tls}-asyncio.txt"
    command = [py_spy, "record", "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--"]
    command += [sys.executable, "-m", "benchmarks.peers_profile", "--child", variant]
    command += ["--port", str(target.port), "--ca", str(target.certs.ca), "--tls", args.tls]
    command += ["--requests", str(args.requests), "--cpu", str(cpu if cpu is not None else -1)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or not raw.exists():
        print(f"{variant}: profiling failed ({done.returncode}): {done.stderr.strip()[-400:]}")
        return
    measured = json.loads(lines[-1])
    found = categorise(raw, measured["cpu_us"])
    print(
        f"\n{variant}, TLS {args.tls}, asyncio: {measured['rps']:.0f} requests/s under the "
        f"profiler, client CPU {measured['cpu_us']:.0f} µs per request; "
        f"{found['busy_samples']} busy samples ({found['idle_samples']} idle left out); {raw}"
    )
    for title, key in (("category", "categories"), ("innermost function", "functions")):
        print(f"  {'share':>6} {'µs/req':>7}  {title}")
        for name, part, micros in found[key]:  # type: ignore[attr-defined]
            print(f"  {part:6.1%} {micros:7.0f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers_profile", description=__doc__)
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.2")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", choices=(POOL, LEAN, CURL), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.cpu = None if args.cpu < 0 else args.cpu
        _child(args)
        return 0
    nginx = shutil.which("nginx")
    if nginx is None:
        print("nginx is not installed (scripts/install-servers.sh)", file=sys.stderr)
        return 2
    pinning = choose_pinning()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aiotlspool-peers-profile-") as tmp:
        certs = make_certs(Path(tmp), "rsa")
        listeners = [(("rsa", tls), certs) for tls in ("1.2", "1.3")]
        server = NginxServer(nginx, listeners, Path(tmp) / "nginx", pinning.server_cpu, 900)
        try:
            target = Target(server.ports[("rsa", args.tls)], certs, args.tls)
            for variant in (POOL, LEAN, CURL):
                _profile(variant, target, pinning.client_cpu, args)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
