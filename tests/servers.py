"""Real TLS (and deliberately broken) servers on 127.0.0.1 for the test suite.

Each server runs on the test's own event loop and records what it saw, so tests can check the
server's view (how many handshakes resumed) as well as the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trustme

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def server_context(
    cert: trustme.LeafCert,
    tls_version: str,
    *,
    num_tickets: int | None = None,
    tickets: bool = True,
) -> ssl.SSLContext:
    """A server context speaking exactly ``tls_version``; each call has new ticket keys."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tls_version]
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


@dataclass
class Server:
    """A running server: where it listens and what it observed."""

    port: int
    host: str = "127.0.0.1"
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
    ssl_context: ssl.SSLContext | None, handler: Handler = echo, *, port: int = 0
) -> Server:
    """Listen on 127.0.0.1 (a free port unless ``port``); TLS when ``ssl_context`` is given."""
    state = Server(port=0)

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

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=ssl_context)
    state.server = server
    state.port = server.sockets[0].getsockname()[1]
    return state


def unused_port() -> int:
    """A port on which nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def fd_baseline() -> int:
    """The open fd count once the loop has made its lazily created descriptors (uvloop opens
    one for its resolver on first use), so only our own sockets are counted after it."""
    loop = asyncio.get_running_loop()
    await loop.getaddrinfo("127.0.0.1", 1)
    with contextlib.suppress(OSError):
        await asyncio.open_connection("127.0.0.1", unused_port())
    await asyncio.sleep(0.01)
    return open_fds()


async def settle_fds(baseline: int, timeout: float = 3.0) -> int:
    """Wait for sockets being closed in the background; return the final count of open fds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while open_fds() > baseline and loop.time() < end:  # noqa: ASYNC110 - polling the OS
        await asyncio.sleep(0.02)
    return open_fds()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept TCP and say nothing: a TLS handshake with it can only time out."""
    await reader.read()


async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A plain-TCP HTTP server: answers a TLS ClientHello with an HTTP error."""
    await reader.read(1024)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
