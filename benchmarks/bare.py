"""The ``bare`` section: client CPU per connect of the pool against the minimal hand-written loop
that does the same TLS work, and against OpenSSL's C client.

The bare workload: TCP + TLS connect, read the 1 byte the server sends first, close with
close_notify (waiting for the server's). Client CPU is this process's ``time.process_time()``
over a batch of sequential connects (the client is single-threaded here: an IP address needs no
resolver thread), divided by the batch size; variants take turns, batch by batch, in an order
rotated every round, and the figure is the median over rounds.

- ``bare``: the least code on the pool's own path - asyncio: the socket transport
  (``open_socket_tls``) with the native engine's ``offer`` and ``watch`` in ``wrap``; uvloop:
  ``loop.create_connection(ssl=)`` with a duck-typed ``ssl=`` whose ``wrap_bio`` does the same;
  streams on top, as the pool's connection has. Resumed: it offers the last session the server
  sent (each TLS 1.3 ticket once, as the pool does); full: nothing offered, nothing watched.
- ``pool``: ``Pool(session_engine="native")``, ``async with pool.connection(...)``, read 1 byte,
  ``await conn.aclose()`` (never reused). Full: ``session_cache=False``.

The server is the bare workload's own: a Python (uvloop) TLS server in a child process pinned to
the server CPU, which writes 1 byte at once and closes after the client's close_notify. nginx
cannot send first (HTTP waits for a request), and the server's own speed does not enter the
client's CPU time. The C limit is ``openssl s_time`` (``-new`` / ``-reuse``) against nginx,
the primary server, pinned to the client CPU: CPU per connect = 1 / "connections per user sec".
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import shutil
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as PipeEnd
from typing import Any, cast

from aiotlspool import Pool
from aiotlspool.engines.select import select_engine
from aiotlspool.sessions.cached import CachedSession
from aiotlspool.transports import open_socket_tls

from .bare_floor import handshake_floor
from .bare_report import console_lines
from .certs import HOST, CertFiles
from .env import LoopFactory, loop_factories, pin_self, run_on, run_until_orphaned
from .server import TLS_VERSIONS

VARIANTS = ("bare", "pool")
MODES = ("full", "resumed")


# -- the server (a child process) -------------------------------------------------------------


def _serve(certs: CertFiles, cpu: int | None, lifetime: float, pipe: PipeEnd) -> None:
    pin_self(cpu)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"x")
            await reader.read()  # until the client's close_notify
        except OSError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        ports = {}
        for tls, version in TLS_VERSIONS.items():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certs.chain), str(certs.key))
            context.minimum_version = context.maximum_version = version
            server = await asyncio.start_server(handler, HOST, 0, ssl=context, backlog=512)
            ports[tls] = server.sockets[0].getsockname()[1]
        pipe.send(ports)
        await run_until_orphaned(lifetime)

    asyncio.run(main())


class ByteServer:
    """The server that sends 1 byte first; stops after ``lifetime`` or when we are gone."""

    def __init__(self, certs: CertFiles, cpu: int | None, lifetime: float) -> None:
        mp = multiprocessing.get_context("spawn")
        ours, theirs = mp.Pipe()
        self.process = mp.Process(target=_serve, args=(certs, cpu, lifetime, theirs), daemon=True)
        self.process.start()
        if not ours.poll(30):
            self.stop()
            raise RuntimeError("the bare workload's server did not start")
        self.ports: dict[str, int] = ours.recv()

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# -- the clients --------------------------------------------------------------------------------


class _Offering:
    """uvloop's ``ssl=``: offers the session and watches in ``wrap_bio``, as the pool does."""

    def __init__(self, ctx: ssl.SSLContext, prepare: Callable[[Any], None]) -> None:
        self.ctx, self.prepare = ctx, prepare

    def wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool = False, **kw: Any) -> Any:
        obj = self.ctx.wrap_bio(incoming, outgoing, server_side=server_side, **kw)
        self.prepare(obj)
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctx, name)


class BareClient:
    """The hand-written loop: one context, the native engine, the last session kept."""

    def __init__(self, certs: CertFiles, tls: str, port: int, resume: bool) -> None:
        self.ctx = certs.client_context()
        self.ctx.minimum_version = self.ctx.maximum_version = TLS_VERSIONS[tls]
        self.port, self.resume = port, resume
        self.engine = select_engine("native")
        self.session: CachedSession | None = None

    def _keep(self, session: CachedSession) -> None:
        self.session = session

    def _prepare(self, obj: Any) -> None:
        if self.resume:
            if self.session is not None:
                self.engine.offer(obj, self.session)
                if self.session.single_use:
                    self.session = None  # a TLS 1.3 ticket is offered once
            self.engine.watch(obj, self._keep)

    def _wrap(self, sock: Any) -> ssl.SSLSocket:
        tls = self.ctx.wrap_socket(sock, server_hostname=HOST, do_handshake_on_connect=False)
        self._prepare(tls)
        return tls

    async def connect(self) -> bool:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport: Any
        if type(loop).__module__.startswith("uvloop"):
            transport, _ = await loop.create_connection(
                lambda: protocol,
                HOST,
                self.port,
                ssl=cast(ssl.SSLContext, _Offering(self.ctx, self._prepare)),
                server_hostname=HOST,
            )
        else:
            transport, _ = await open_socket_tls(
                loop, lambda: protocol, HOST, self.port, wrap=self._wrap
            )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if await reader.readexactly(1) != b"x":
            raise RuntimeError("unexpected byte from the server")
        reused = bool(transport.get_extra_info("ssl_object").session_reused)
        writer.close()
        await writer.wait_closed()
        return reused

    async def aclose(self) -> None:
        pass


class PoolClient:
    """The pool, one new connection per connect."""

    def __init__(self, certs: CertFiles, tls: str, port: int, resume: bool) -> None:
        ctx = certs.client_context()
        ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tls]
        self.port = port
        cache: Any = None if resume else False
        self.pool = Pool(ctx, session_cache=cache, session_engine="native")

    async def connect(self) -> bool:
        async with self.pool.connection(HOST, self.port) as conn:
            if await conn.reader.readexactly(1) != b"x":
                raise RuntimeError("unexpected byte from the server")
            await conn.aclose()
        return conn.session_reused

    async def aclose(self) -> None:
        await self.pool.aclose()


CLIENTS: dict[str, Any] = {"bare": BareClient, "pool": PoolClient}


async def _batch(client: Any, count: int, resume: bool) -> float:
    """CPU seconds per connect over ``count`` connects, after warming up (the first connects
    of a resuming client are full handshakes)."""
    for _ in range(3):
        await client.connect()
    reused = 0
    started = time.process_time()
    for _ in range(count):
        reused += await client.connect()
    cpu = time.process_time() - started
    if reused != (count if resume else 0):
        raise RuntimeError(f"{reused} of {count} connects resumed (resume={resume})")
    return cpu / count


def measure_cell(
    certs: CertFiles,
    factory: LoopFactory,
    tls: str,
    port: int,
    variant: str,
    mode: str,
    count: int,
) -> float:
    """One batch: client CPU µs per connect."""
    resume = mode == "resumed"

    async def main() -> float:
        client = CLIENTS[variant](certs, tls, port, resume)
        try:
            return await _batch(client, count, resume)
        finally:
            await client.aclose()

    return run_on(factory, main()) * 1e6


def measure_with_own_server(
    certs: CertFiles, loop: str, tls: str, variant: str, mode: str, count: int
) -> float:
    """:func:`measure_cell` against a server started (and stopped) for it: what a child process
    run under valgrind or strace measures, its server a process it does not follow."""
    server = ByteServer(certs, None, 600)
    try:
        return measure_cell(
            certs, loop_factories()[loop], tls, server.ports[tls], variant, mode, count
        )
    finally:
        server.stop()


# -- OpenSSL's C client -----------------------------------------------------------------------


def s_time(port: int, tls: str, mode: str, seconds: float, cpu: int | None) -> dict[str, Any]:
    """``openssl s_time -new|-reuse`` for ``seconds``: its own rate (connections per *user*
    second) and, comparable with the Python clients' ``process_time``, its user + system CPU
    per connection from the child's resource usage (``wait4``)."""
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl not installed")
    command = [binary, "s_time", "-connect", f"{HOST}:{port}", f"-{mode}"]
    command += ["-time", str(max(1, round(seconds))), "-tls1_2" if tls == "1.2" else "-tls1_3"]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=(lambda: pin_self(cpu)) if cpu is not None else None,
    )
    timer = threading.Timer(seconds + 30, child.kill)  # (bounded even if the server stalls)
    timer.start()
    try:
        assert child.stdout is not None
        output = child.stdout.read()
        _, _, usage = os.wait4(child.pid, 0)
        child.returncode = 0  # (reaped above: Popen must not wait for it again)
    finally:
        timer.cancel()
    found = re.search(r"(\d+) connections in ([\d.]+)s; ([\d.]+) connections/user sec", output)
    if found is None:
        raise RuntimeError(f"s_time printed no rate: {output[-300:]!r}")
    rate = float(found.group(3))
    connections = int(found.group(1))
    return {
        "tls": tls,
        "mode": mode,
        "connections": connections,
        "per_user_sec": rate,
        "cpu_us": 1e6 / rate if rate else float("nan"),  # user CPU only, as s_time counts
        # s_time's connections plus its last, unreported one: close enough at thousands
        "total_cpu_us": (usage.ru_utime + usage.ru_stime) * 1e6 / max(1, connections),
        "command": " ".join(["openssl", *command[1:]]),
    }


# -- the section --------------------------------------------------------------------------------


def steps(bench: Any) -> int:
    s = bench.settings
    loops = len(bench.loops(("asyncio", "uvloop")))
    return int(s.bare_rounds * loops * 2 + (4 if "primary" in bench.servers else 0))


def run_section(bench: Any) -> dict[str, Any]:
    s = bench.settings
    certs = bench.certs["rsa"]
    loops = bench.loops(("asyncio", "uvloop"))
    cells = [
        (loop, tls, mode, variant)
        for loop, _ in loops
        for tls in TLS_VERSIONS
        for mode in MODES
        for variant in VARIANTS
    ]
    runs: dict[tuple[str, str, str, str], list[float]] = {cell: [] for cell in cells}
    factories = dict(loops)
    server = ByteServer(certs, bench.pinning.server_cpu, s.lifetime)
    try:
        for round_ in range(s.bare_rounds):
            for loop_name, _ in loops:
                for tls in TLS_VERSIONS:
                    group = [c for c in cells if c[0] == loop_name and c[1] == tls]
                    shift = round_ % len(group)
                    for cell in group[shift:] + group[:shift]:
                        _, _, mode, variant = cell
                        cpu = bench.guarded(
                            f"bare {' '.join(cell)}",
                            measure_cell,
                            certs,
                            factories[loop_name],
                            tls,
                            server.ports[tls],
                            variant,
                            mode,
                            s.bare_connects,
                        )
                        if cpu is not None:
                            runs[cell].append(cpu)
                    bench.step(f"bare workload, {loop_name}, TLS {tls} ({round_ + 1})")
    finally:
        server.stop()
    rows = []
    for cell, values in runs.items():
        if values:
            loop_name, tls, mode, variant = cell
            rows.append(
                {
                    "loop": loop_name,
                    "tls": tls,
                    "mode": mode,
                    "variant": variant,
                    "cpu_us": statistics.median(values),
                    "runs": values,
                    "connects": s.bare_connects,
                }
            )
    limits = []
    primary = bench.servers.get("primary")
    if primary is not None and primary.kind == "nginx":
        for tls in TLS_VERSIONS:
            for mode in ("new", "reuse"):
                row = bench.guarded(
                    f"s_time -{mode} TLS {tls}",
                    s_time,
                    primary.ports[("rsa", tls)],
                    tls,
                    mode,
                    s.s_time_seconds,
                    bench.pinning.client_cpu,
                )
                bench.step(f"openssl s_time -{mode}, TLS {tls}")
                if row is not None:
                    limits.append(row)
    # OpenSSL's own share, with the pool's engine watching (benchmarks/bare_floor.py).
    floor = {
        tls: bench.guarded(
            f"handshake floor TLS {tls}", handshake_floor, certs, tls, s.bare_connects, True
        )
        for tls in TLS_VERSIONS
    }
    section = {"rows": rows, "s_time": limits, "floor": {t: f for t, f in floor.items() if f}}
    for line in console_lines(section):
        bench.console.print(line)
    return section
