"""Which transport one connection is opened with (``Pool(tls_transport=...)``), and opening it.

- ``"socket"``: TLS on a non-blocking ``SSLSocket`` (:mod:`.socket_connect`);
- ``"asyncio"``: the loop's own ``create_connection(ssl=)`` (asyncio's ``sslproto``, or uvloop's);
- ``"auto"``: the socket transport on selector loops (the default asyncio loop), where it costs
  0.77-0.89x the client CPU of asyncio's ``sslproto`` per resumed connect, and the loop's own on
  uvloop, whose Cython TLS the socket transport does not beat (1.1-1.3x;
  scripts/socket_transport_cost.py). The environment variable
  ``AIOTLSPOOL_TLS_TRANSPORT=socket|asyncio`` overrides ``"auto"`` (CI runs the pool's tests on
  both with it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from typing import cast

from .socket_connect import open_socket_tls, socket_tls_supported

TRANSPORT_ENV = "AIOTLSPOOL_TLS_TRANSPORT"


def resolve_choice(choice: str) -> str:
    """``choice`` with the environment's override of ``"auto"`` applied; read once, when a
    pool is made (ValueError for a value the variable may not have)."""
    if choice != "auto":
        return choice
    override = os.environ.get(TRANSPORT_ENV, "").strip() or "auto"
    if override not in ("auto", "socket", "asyncio"):
        raise ValueError(
            f"the environment variable {TRANSPORT_ENV} must be 'socket' or 'asyncio', "
            f"got {override!r}"
        )
    return override


def uses_socket_transport(choice: str, loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``choice`` (resolved: ``"auto"``, ``"socket"`` or ``"asyncio"``) means the
    socket transport on ``loop``."""
    if choice == "auto":
        uvloop = type(loop).__module__.partition(".")[0] == "uvloop"
        return not uvloop and socket_tls_supported(loop)
    return choice == "socket"


async def open_tls_transport(
    choice: str,
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    server_hostname: str,
    *,
    bio_context: object,
    wrap_socket: Callable[[socket.socket, str], ssl.SSLSocket],
    shutdown_timeout: float,
    before_close: Callable[[ssl.SSLSocket], object],
) -> asyncio.Transport:
    """Connect and handshake; return the transport, already connected to ``protocol``.

    ``choice`` is :func:`resolve_choice`'s result.

    ``bio_context`` is passed to the loop as ``ssl=`` (the loop only calls its ``wrap_bio``);
    ``wrap_socket`` makes the socket transport's ``SSLSocket``; ``before_close`` is called
    with it at the socket transport's close, the last moment its TLS state can be read.
    """
    loop = asyncio.get_running_loop()
    if uses_socket_transport(choice, loop):
        socket_transport, _ = await open_socket_tls(
            loop,
            lambda: protocol,
            host,
            port,
            wrap=lambda sock: wrap_socket(sock, server_hostname),
            shutdown_timeout=shutdown_timeout,
            before_close=before_close,
        )
        return socket_transport
    transport, _ = await loop.create_connection(
        lambda: protocol,
        host,
        port,
        ssl=cast(ssl.SSLContext, bio_context),
        server_hostname=server_hostname,
    )
    return transport
