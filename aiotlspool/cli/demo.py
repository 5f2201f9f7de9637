"""``aiotlspool demo``: a reconnect workload through the pool against the demo server.

The workload opens ``connections`` connections through each of two pools, one without and one
with the session cache, taking turns in batches, against the local TLS echo server of
:mod:`aiotlspool.cli.demo_server`; each connection: connect, write a small request, read the
echo, ``await conn.aclose()``. The results are printed side by side. trustme and rich are
imported only when the demo runs.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..exceptions import PoolError
from ..pool import Pool
from ..sessions.store import SessionCache
from .demo_server import HOST, SERVER_DEADLINE, DemoError, DemoServer, demo_server
from .demo_store import (
    StoreError,
    StoreSpec,
    check_reachable,
    describe,
    finish,
    in_new_process,
    open_store,
    parse_store,
)
from .loops import LoopName, loop_factory, run

REQUEST = b"ping\n"
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


# -- the workload ---------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """What the workload measured through one pool."""

    label: str
    connections: int = 0
    full: int = 0
    resumed: int = 0
    elapsed: float = 0.0
    engine: str = ""
    handshake_seconds: list[float] = field(default_factory=list)
    store_note: str = ""  # with --store: what the store holds after the run

    @property
    def median_handshake_ms(self) -> float:
        return statistics.median(self.handshake_seconds) * 1000 if self.handshake_seconds else 0.0

    @property
    def connects_per_second(self) -> float:
        return self.connections / self.elapsed if self.elapsed > 0 else 0.0


def client_context(ca_file: str, tls: str) -> ssl.SSLContext:
    """A verifying client context that trusts the demo CA and speaks only ``tls``."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = context.maximum_version = TLS_VERSIONS[tls]
    return context


async def run_batch(
    pool: Pool,
    port: int,
    result: PhaseResult,
    *,
    connections: int,
    concurrency: int,
    advance: Callable[[], None] = lambda: None,
) -> None:
    """Open ``connections`` connections through ``pool``, ``concurrency`` at a time, adding
    what was measured to ``result``."""
    todo = iter(range(connections))  # shared by the workers: each takes the next number

    async def worker() -> None:
        for _ in todo:
            async with pool.connection(HOST, port) as conn:
                conn.writer.write(REQUEST)
                await conn.reader.readexactly(len(REQUEST))
                result.handshake_seconds.append(conn.handshake_seconds)
                await conn.aclose()
            advance()

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, connections))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.elapsed += time.perf_counter() - started
    result.connections += connections
    stats = pool.stats()
    result.full, result.resumed = stats.full_handshakes, stats.resumed_handshakes
    result.engine = pool.session_engine


@dataclass(frozen=True)
class DemoOptions:
    connections: int = 300
    tls: str = "1.3"
    loop: LoopName = "asyncio"
    concurrency: int = 1
    engine: str = "auto"
    store: str | None = None  # --store: file:DIR, redis://..., rediss://...


# Batches alternate between the two pools, so that a change in the machine's load during the
# demo affects both sides alike.
BATCH = 50


async def run_workloads(
    server: DemoServer,
    options: DemoOptions,
    progress_factory: Callable[[str], Callable[[], None]],
    store: tuple[StoreSpec, SessionCache] | None = None,
) -> tuple[PhaseResult, PhaseResult]:
    """Warm up, then run the workload without and with the session cache (or ``store``), in
    turns."""
    context = client_context(server.ca_file, options.tls)

    def pool(use_cache: bool) -> Pool:
        cache: SessionCache | Literal[False] | None = False
        if use_cache:
            cache = store[1] if store else None
        return Pool(
            context,
            session_cache=cache,
            max_connections=options.concurrency,
            session_engine=options.engine,
        )

    # First-use costs (imports, loading the CA) are paid outside the measurement.
    async with pool(False) as warm_up:
        await run_batch(warm_up, server.port, PhaseResult("warm-up"), connections=5, concurrency=1)
    label = "with cache" if store is None else f"with {STORE_NAMES[store[0].kind]}"
    results = (PhaseResult("without cache"), PhaseResult(label))
    advances = [progress_factory(result.label) for result in results]
    async with pool(False) as without, pool(True) as with_:
        left = options.connections
        while left > 0:
            batch = min(BATCH, left)
            for each, result, advance in zip((without, with_), results, advances, strict=True):
                await run_batch(
                    each,
                    server.port,
                    result,
                    connections=batch,
                    concurrency=options.concurrency,
                    advance=advance,
                )
            left -= batch
    if store is not None:
        results[1].store_note = await finish(*store)
    return results


# -- the command ----------------------------------------------------------------------------


def run_demo(options: DemoOptions) -> None:
    """Run the demo and print the comparison (rich and trustme must be importable)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    console = Console()
    factory = loop_factory(options.loop)  # before starting a server: fail fast without uvloop
    # Two pools; even at 10 connects/s the server outlives the run.
    deadline = SERVER_DEADLINE + options.connections * 0.2
    # Sessions are of no use once the server has stopped: the store keeps them no longer.
    store = prepare_store(options, ttl=deadline)
    with demo_server(deadline=deadline) as server:
        console.print(
            f"[bold]aiotlspool demo[/]: TLS echo server on 127.0.0.1:{server.port} "
            f"(pid {server.pid}, RSA-2048)\n"
            f"{options.connections} connections per pool, TLS {options.tls}, {options.loop} loop, "
            f"concurrency {options.concurrency}\n"
            "each: connect, write 5 bytes, read the echo, close; the two pools take turns"
            + (f"\n{describe(store[0])}" if store else "")
        )
        with Progress(
            "{task.description:<16}",
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
        ) as progress:

            def progress_factory(label: str) -> Callable[[], None]:
                task = progress.add_task(label, total=options.connections)
                return lambda: progress.advance(task)

            try:
                workloads = run_workloads(server, options, progress_factory, store)
                without, with_ = run(workloads, factory)
            except (PoolError, OSError, asyncio.IncompleteReadError) as exc:
                # The server died or was killed: say so in one line.
                message = str(exc) or type(exc).__name__
                raise DemoError(f"a connection to the demo server failed: {message}") from exc
        if store is not None:  # while the server that issued the sessions still runs
            restart = in_new_process(store[0], server.port, server.ca_file, options.tls, 60)
    console.print(render(without, with_))
    console.print(f"Session engine: {with_.engine}.")
    if store is not None:
        console.print(f"Store: {with_.store_note}.\nThen {restart}.\n{STORE_NOTE}")
    console.print(NOTES[options.tls])
    if with_.engine == "stdlib":
        console.print(STDLIB_NOTE)


def prepare_store(options: DemoOptions, ttl: float) -> tuple[StoreSpec, SessionCache] | None:
    """``--store``: what it names and the store, checked before the server starts (a Redis
    server is pinged); StoreError if it cannot be used."""
    if options.store is None:
        return None
    spec = parse_store(options.store)
    if Pool(session_engine=options.engine).session_engine != "native":
        raise StoreError(
            "--store keeps sessions of the native session engine; this run uses the stdlib "
            "engine (use --engine native or auto)"
        )
    store = open_store(spec, ttl)
    check_reachable(spec)
    return spec, store


STORE_NAMES = {"file": "file store", "redis": "Redis store"}
STORE_NOTE = (
    "A session resumes only with the server that issued it: this demo's server stops with "
    "the demo, so a later run cannot resume these sessions - the new process above is the "
    "restart."
)
NOTES = {
    "1.2": "A resumed TLS 1.2 handshake skips the certificate, its verification and the key "
    "exchange.",
    "1.3": "A resumed TLS 1.3 handshake skips the certificate and its verification but still "
    "does a key exchange, so it saves less than a TLS 1.2 one.",
}
STDLIB_NOTE = (
    "The stdlib engine makes two DER copies of the session per resumption: under CPU-bound "
    "load (--concurrency 8) a TLS 1.3 client can lose more than it saves."
)


def render(without: PhaseResult, with_: PhaseResult) -> object:
    """The side-by-side table (a rich renderable)."""
    from rich.table import Table

    def ratio(new: float, old: float) -> str:
        return f"{new / old:.2f}x" if old > 0 and new > 0 else "-"

    cache = "the session cache" if with_.label == "with cache" else "a session store"
    table = Table(title=f"TLS session resumption: without vs with {cache}")
    table.add_column("")
    table.add_column(without.label, justify="right")
    table.add_column(with_.label, justify="right")
    table.add_column("speedup", justify="right", style="bold green")
    table.add_row("connections", str(without.connections), str(with_.connections), "")
    table.add_row("full handshakes", str(without.full), str(with_.full), "")
    table.add_row("resumed handshakes", str(without.resumed), str(with_.resumed), "")
    table.add_row(
        "median handshake",
        f"{without.median_handshake_ms:.2f} ms",
        f"{with_.median_handshake_ms:.2f} ms",
        ratio(without.median_handshake_ms, with_.median_handshake_ms),
    )
    table.add_row(
        "connects/s",
        f"{without.connects_per_second:.0f}",
        f"{with_.connects_per_second:.0f}",
        ratio(with_.connects_per_second, without.connects_per_second),
    )
    return table


def demo_dependencies_missing() -> str | None:
    """The name of a missing demo dependency, or None when the demo can run."""
    for module in ("trustme", "rich"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None
