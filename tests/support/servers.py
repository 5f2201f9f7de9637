"""TLS (and deliberately broken) servers on 127.0.0.1, written in Python, for the test suite.

Each server records what it saw, so tests can check the server's view (how many handshakes
resumed) as well as the client's. Three ways to run one:

- :func:`start_server`: on the test's own event loop (asyncio or uvloop), for the pool tests;
- :class:`ThreadServer`: the same server on an event loop of its own in a daemon thread, for
  code that runs its own loop (the CLI's ``main`` calls ``asyncio.run``);
- :func:`openssl_server`: an ``openssl s_server`` child process (stateful session cache).

Both stop by themselves: the thread with the test process, s_server at the end of its ``with``
block or, if the test process dies first, after ``OPENSSL_DEADLINE`` seconds (timeout(1)).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import trustme

from .helpers import HOST

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
OPENSSL_DEADLINE = 120


# -- contexts -------------------------------------------------------------------------------


def server_context(
    cert: trustme.LeafCert,
    tls_version: str | tuple[str, ...] = tuple(TLS_VERSIONS),
    *,
    num_tickets: int | None = None,
    tickets: bool = True,
) -> ssl.SSLContext:
    """A server context speaking ``tls_version`` (one name of ``TLS_VERSIONS``, or several:
    the range they span), session cache on, tickets unless ``tickets=False``; each call has
    new ticket keys."""
    names = (tls_version,) if isinstance(tls_version, str) else tls_version
    versions = [TLS_VERSIONS[name] for name in names]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ctx.minimum_version, ctx.maximum_version = min(versions), max(versions)
    if num_tickets is not None:
        ctx.num_tickets = num_tickets
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET  # TLS 1.2 falls back to session IDs
    return ctx


def client_context(ca: trustme.CA, tls_version: str | None = None) -> ssl.SSLContext:
    """What a user would build: default verification, trusting the test CA."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if tls_version is not None:
        ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tls_version]
    return ctx


# -- handlers -------------------------------------------------------------------------------


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo everything until the client closes."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def echo_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one request, then close: an idle pooled connection dies under the client."""
    data = await reader.read(65536)
    writer.write(data)
    await writer.drain()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept TCP and say nothing: a TLS handshake with it can only time out."""
    await reader.read()


async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A plain-TCP HTTP server: answers a TLS ClientHello with an HTTP error."""
    await reader.read(65536)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()


async def ssh_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An SSH server speaks first, then waits for the client's banner."""
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    await writer.drain()
    await reader.read(65536)


# -- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """A running server: where it listens and what it observed."""

    port: int
    host: str = HOST
    handshakes: int = 0
    resumed: int = 0
    server: asyncio.base_events.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None


async def start_server(
    ssl_context: ssl.SSLContext | None, handler: Handler = echo, *, port: int = 0, host: str = HOST
) -> Server:
    """Listen on ``host`` (a free port unless ``port``); TLS when ``ssl_context`` is given."""
    state = Server(port=0, host=host)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        state.tasks.add(task)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            state.handshakes += 1
            state.resumed += ssl_object.session_reused
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Server.close() cancels handlers; ending normally keeps asyncio's stream callback
            # from logging the cancellation as an error.
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            state.tasks.discard(task)

    server = await asyncio.start_server(serve, host, port, ssl=ssl_context)
    state.server = server
    state.port = server.sockets[0].getsockname()[1]
    return state


@contextlib.asynccontextmanager
async def running_server(
    ssl_context: ssl.SSLContext | None, handler: Handler = echo
) -> AsyncIterator[Server]:
    """:func:`start_server` for the ``async with`` block; closed at its end."""
    server = await start_server(ssl_context, handler)
    try:
        yield server
    finally:
        await server.close()


class ThreadServer:
    """:func:`start_server` on its own event loop in a daemon thread; a context manager."""

    def __init__(
        self, handler: Handler, ssl_context: ssl.SSLContext | None = None, host: str = HOST
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.host = host
        self._state: Server | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def port(self) -> int:
        return self._state.port if self._state is not None else 0

    @property
    def handshakes(self) -> int:
        return self._state.handshakes if self._state is not None else 0

    @property
    def resumed(self) -> int:
        return self._state.resumed if self._state is not None else 0

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError(f"test server did not start on {self.host}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.set_exception_handler(lambda loop, context: None)  # resets are expected
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._ready.set()  # also when it failed to start: __enter__ then sees port 0
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        state = await start_server(self.ssl_context, self.handler, host=self.host)
        self._state = state
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await state.close()


@contextlib.contextmanager
def openssl_server(pem_file: str, *args: str) -> Iterator[int]:
    """``openssl s_server`` on 127.0.0.1 with extra ``args``; yields its port.

    It serves one connection at a time and keeps a stateful session cache. Its stdin stays an
    open pipe: on EOF it would quit after its next connection.
    """
    command = ["openssl", "s_server", "-accept", f"{HOST}:0", "-cert", pem_file, *args]
    if shutil.which("timeout"):
        command = ["timeout", str(OPENSSL_DEADLINE), *command]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: timeout(1) and s_server stop together
    )
    drain: threading.Thread | None = None
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:  # "ACCEPT 127.0.0.1:PORT" once it listens
            match = re.match(rf"ACCEPT {re.escape(HOST)}:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        if port is None:
            raise RuntimeError(f"openssl s_server {' '.join(args)} did not start")
        # Drain its output (one line per connection) so that it never blocks on a full pipe.
        drain = threading.Thread(target=process.stdout.read, daemon=True)
        drain.start()
        yield port
    finally:
        _stop_group(process)
        if drain is not None:
            drain.join(5)  # EOF now that s_server is gone
        streams = [process.stdin]
        if drain is None or not drain.is_alive():  # closing under a blocked reader deadlocks
            streams.append(process.stdout)
        for stream in streams:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the process group we started (the timeout(1) wrapper and s_server)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


# -- ports and file descriptors ---------------------------------------------------------------


def unused_port() -> int:
    """A port on which nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def fd_baseline() -> int:
    """The open fd count once the loop has made its lazily created descriptors (uvloop opens
    one for its resolver on first use), so only our own sockets are counted after it."""
    loop = asyncio.get_running_loop()
    await loop.getaddrinfo(HOST, 1)
    with contextlib.suppress(OSError):
        await asyncio.open_connection(HOST, unused_port())
    await asyncio.sleep(0.01)
    return open_fds()


async def settle_fds(baseline: int, timeout: float = 3.0) -> int:
    """Wait for sockets being closed in the background; return the final count of open fds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while open_fds() > baseline and loop.time() < end:  # noqa: ASYNC110 - polling the OS
        await asyncio.sleep(0.02)
    return open_fds()
