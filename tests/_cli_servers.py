"""Servers with known behaviour for the CLI tests, on 127.0.0.1.

The CLI runs its own event loop (``main`` calls ``asyncio.run``), so these servers run in a
daemon thread with a loop of their own, or as an ``openssl s_server`` child process. Both stop
by themselves: the thread with the test process, s_server at the end of its ``with`` block or,
if the test process dies first, after ``OPENSSL_DEADLINE`` seconds (through timeout(1)).
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
from collections.abc import Awaitable, Callable, Iterator

import trustme

HOST = "127.0.0.1"
OPENSSL_DEADLINE = 120
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_context(
    cert: trustme.LeafCert,
    versions: tuple[str, ...] = ("1.2", "1.3"),
    *,
    tickets: bool = True,
    num_tickets: int | None = None,
) -> ssl.SSLContext:
    """A Python (OpenSSL) server context: session cache on; tickets unless ``tickets=False``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ctx.minimum_version = TLS_VERSIONS[min(versions)]
    ctx.maximum_version = TLS_VERSIONS[max(versions)]
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    if num_tickets is not None:
        ctx.num_tickets = num_tickets
    return ctx


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What a plain HTTP server answers to a TLS ClientHello."""
    await reader.read(65536)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()


async def ssh_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An SSH server speaks first, then waits for the client's banner."""
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    await writer.drain()
    await reader.read(65536)


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer."""
    while await reader.read(65536):
        pass


class ThreadServer:
    """An asyncio server on its own event loop in a daemon thread."""

    def __init__(
        self, handler: Handler, ssl_context: ssl.SSLContext | None = None, host: str = HOST
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.host = host
        self.port = 0
        self.handshakes = 0
        self.resumed = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

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
        tasks: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.handshakes += 1
                self.resumed += ssl_object.session_reused
            try:
                await self.handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)
                tasks.discard(task)

        server = await asyncio.start_server(serve, self.host, 0, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def unused_port() -> int:
    """A port on which nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


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
