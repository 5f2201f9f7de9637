"""``aiotlspool demo``: a local TLS echo server and a reconnect workload through the pool.

The server runs in a child process (``python -m aiotlspool.cli.demo``) so that its handshake work
does not share the client's CPU time slice in one interpreter. It listens on 127.0.0.1 only
and stops by itself: when its stdin reaches EOF (the parent closed the pipe or died) or after a
deadline.

The workload opens ``connections`` connections through each of two pools, one without and one
with the session cache, taking turns in batches; each connection: connect, write a small
request, read the echo, ``await conn.aclose()``. The results are printed side by side.
trustme and rich are imported only when the demo runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, TypeVar

from ..exceptions import PoolError
from ..pool import Pool

HOST = "127.0.0.1"
REQUEST = b"ping\n"
# The server exits on its own after this long even if its parent never closes the pipe
# (demo_server adds time for long runs).
SERVER_DEADLINE = 600.0
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

LoopName = Literal["asyncio", "uvloop"]
T = TypeVar("T")


class DemoError(Exception):
    """The demo could not run (its server did not start, a connection failed, ...)."""


# -- the server (child process) -------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass  # the client went away: nothing to report in a demo
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _serve(context: ssl.SSLContext, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    # Resets by clients are normal here; keep the parent's terminal clean.
    loop.set_exception_handler(lambda loop, ctx: None)
    stop = asyncio.Event()
    server = await asyncio.start_server(_echo, HOST, 0, ssl=context, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)

    def wait_for_parent() -> None:
        # EOF on stdin: the parent closed the pipe or died.
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_parent, daemon=True).start()
    loop.call_later(deadline, stop.set)
    await stop.wait()
    # No wait_closed(): on 3.12+ it waits for every client; exiting closes the sockets anyway.
    server.close()


def serve_main(argv: list[str] | None = None) -> None:
    """Entry point of the server process: print the port, echo until told to stop."""
    parser = argparse.ArgumentParser(prog="python -m aiotlspool.cli.demo")
    parser.add_argument("--cert", required=True, help="PEM file: private key and chain")
    parser.add_argument("--deadline", type=float, default=SERVER_DEADLINE)
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):
        import uvloop  # the server's speed limits the client's: use the fastest loop

        loop_factory = uvloop.new_event_loop
    run(_serve(context, args.deadline), loop_factory)


# -- running the server from the parent -----------------------------------------------------


@dataclass(frozen=True)
class DemoServer:
    """A running demo server: where it listens and the CA file that verifies it."""

    port: int
    ca_file: str
    pid: int


@contextlib.contextmanager
def demo_server(
    *, deadline: float = SERVER_DEADLINE, startup_timeout: float = 30.0
) -> Iterator[DemoServer]:
    """Start the echo server in a child process with fresh trustme certificates; stop it after.

    The certificate is RSA-2048, the key type of most public servers.
    """
    import trustme

    with tempfile.TemporaryDirectory(prefix="aiotlspool-demo-") as tmp:
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
        cert = ca.issue_cert(HOST, "localhost", key_type=trustme.KeyType.RSA)
        ca_file = os.path.join(tmp, "ca.pem")
        cert_file = os.path.join(tmp, "server.pem")
        ca.cert_pem.write_to_path(ca_file)
        cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
        with open(os.path.join(tmp, "server.log"), "w+b") as log:
            command = [sys.executable, "-m", "aiotlspool.cli.demo", "--cert", cert_file]
            process = subprocess.Popen(
                [*command, "--deadline", str(deadline)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            try:
                port = _read_port(process, log, startup_timeout)
                yield DemoServer(port=port, ca_file=ca_file, pid=process.pid)
            finally:
                _stop(process)


def _read_port(process: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> int:
    stdout = process.stdout
    assert stdout is not None
    # A thread, because a blocking readline cannot time out and select() is not portable.
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if line and line[0].strip().isdigit():
        return int(line[0])
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    detail = lines[-1] if lines else f"no port within {timeout:.0f}s"
    raise DemoError(f"the demo server did not start: {detail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        assert process.stdin is not None
        process.stdin.close()  # the server's signal to exit
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


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


# Batches alternate between the two pools, so that a change in the machine's load during the
# demo affects both sides alike.
BATCH = 50


async def run_workloads(
    server: DemoServer, options: DemoOptions, progress_factory: Callable[[str], Callable[[], None]]
) -> tuple[PhaseResult, PhaseResult]:
    """Warm up, then run the workload without and with the session cache, in turns."""
    context = client_context(server.ca_file, options.tls)

    def pool(use_cache: bool) -> Pool:
        return Pool(
            context,
            session_cache=None if use_cache else False,
            max_connections=options.concurrency,
            session_engine=options.engine,
        )

    # First-use costs (imports, loading the CA) are paid outside the measurement.
    async with pool(False) as warm_up:
        await run_batch(warm_up, server.port, PhaseResult("warm-up"), connections=5, concurrency=1)
    results = (PhaseResult("without cache"), PhaseResult("with cache"))
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
    return results


# -- the command ----------------------------------------------------------------------------


def loop_factory(name: LoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop factory for ``--loop`` (ImportError if uvloop is not installed)."""
    if name == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(coro: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop]) -> T:
    """``asyncio.run`` with a loop factory, on Python 3.10 too."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    loop = factory()  # pragma: no cover - Python 3.10
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def run_demo(options: DemoOptions) -> None:
    """Run the demo and print the comparison (rich and trustme must be importable)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    console = Console()
    factory = loop_factory(options.loop)  # before starting a server: fail fast without uvloop
    # Two pools; even at 10 connects/s the server outlives the run.
    with demo_server(deadline=SERVER_DEADLINE + options.connections * 0.2) as server:
        console.print(
            f"[bold]aiotlspool demo[/]: TLS echo server on 127.0.0.1:{server.port} "
            f"(pid {server.pid}, RSA-2048)\n"
            f"{options.connections} connections per pool, TLS {options.tls}, {options.loop} loop, "
            f"concurrency {options.concurrency}\n"
            "each: connect, write 5 bytes, read the echo, close; the two pools take turns"
        )
        with Progress(
            "{task.description:<14}",
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
        ) as progress:

            def progress_factory(label: str) -> Callable[[], None]:
                task = progress.add_task(label, total=options.connections)
                return lambda: progress.advance(task)

            try:
                without, with_ = run(run_workloads(server, options, progress_factory), factory)
            except (PoolError, OSError, asyncio.IncompleteReadError) as exc:
                # The server died or was killed: say so in one line.
                message = str(exc) or type(exc).__name__
                raise DemoError(f"a connection to the demo server failed: {message}") from exc
    console.print(render(without, with_))
    console.print(f"Session engine: {with_.engine}.")
    console.print(NOTES[options.tls])
    if with_.engine == "stdlib":
        console.print(STDLIB_NOTE)


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

    table = Table(title="TLS session resumption: without vs with the session cache")
    table.add_column("")
    table.add_column("without cache", justify="right")
    table.add_column("with cache", justify="right")
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


if __name__ == "__main__":
    serve_main()
