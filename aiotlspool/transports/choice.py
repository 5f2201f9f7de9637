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
import math
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast

from .socket_connect import HANDSHAKE_TIMEOUT, open_socket_tls, socket_tls_supported

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
        return not _is_uvloop(loop) and socket_tls_supported(loop)
    return choice == "socket"


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.partition(".")[0] == "uvloop"


class TransportPlan(NamedTuple):
    """What :func:`open_tls_transport` opens on a loop (:func:`transport_plan`)."""

    socket: bool  # the socket transport (else the loop's own ``create_connection(ssl=)``)
    # The transport ends its own close within ``shutdown_timeout`` (aborting when the peer's
    # close_notify does not come), so the caller needs no timer of its own.
    ends_close: bool


def transport_plan(choice: str, loop: asyncio.AbstractEventLoop) -> TransportPlan:
    """The plan for ``choice`` (:func:`resolve_choice`'s result) on ``loop``. Transports that
    end their own close: the socket transport; asyncio's from Python 3.11 and uvloop's
    (``ssl_shutdown_timeout=``). Another loop's ``create_connection`` may not take that
    argument: it is not given one."""
    known = (choice, type(loop))
    plan = _plans.get(known)
    if plan is None:  # (asked on every connect: answered once per choice and loop class)
        if uses_socket_transport(choice, loop):
            plan = TransportPlan(True, True)
        else:
            plan = TransportPlan(False, _takes_shutdown_timeout(loop))
        _plans[known] = plan
    return plan


def _takes_shutdown_timeout(loop: asyncio.AbstractEventLoop) -> bool:
    # asyncio's own create_connection only: a subclass's override may not take it.
    own = getattr(type(loop), "create_connection", None) is asyncio.BaseEventLoop.create_connection
    return _is_uvloop(loop) or (sys.version_info >= (3, 11) and own)


_plans: dict[tuple[str, type], TransportPlan] = {}


def open_tls_transport(
    loop: asyncio.AbstractEventLoop,
    plan: TransportPlan,
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    server_hostname: str,
    *,
    bio_context: object,
    wrap_socket: Callable[[socket.socket, str], ssl.SSLSocket],
    connect_timeout: float | None,
    shutdown_timeout: float,
    before_close: Callable[[ssl.SSLSocket], object] | None,
) -> Awaitable[tuple[asyncio.Transport, asyncio.Protocol]]:
    """Connect and handshake: the awaitable of (the transport, already connected to
    ``protocol``; ``protocol``). Not a coroutine of its own: a frame less on every resume.

    ``loop`` is the running loop, ``plan`` :func:`transport_plan`'s for it.

    ``bio_context`` is passed to the loop as ``ssl=`` (the loop only calls its ``wrap_bio``);
    ``wrap_socket`` makes the socket transport's ``SSLSocket``; ``connect_timeout`` is the
    caller's deadline around the whole connect; ``shutdown_timeout`` bounds the transport's
    close where :func:`transport_plan` says so; ``before_close`` is called
    with it at the socket transport's close, the last moment its TLS state can be read.
    """
    if plan.socket:
        return open_socket_tls(
            loop,
            lambda: protocol,
            host,
            port,
            wrap=lambda sock: wrap_socket(sock, server_hostname),
            # The caller's deadline ends first: the handshake's own (60 s) would never fire.
            handshake_timeout=(
                math.inf
                if connect_timeout is not None and connect_timeout < HANDSHAKE_TIMEOUT
                else None
            ),
            shutdown_timeout=shutdown_timeout,
            before_close=before_close,
        )
    extra: dict[str, Any] = {}  # (a mapping: typeshed knows ssl_shutdown_timeout from 3.11 only)
    if plan.ends_close:
        extra["ssl_shutdown_timeout"] = shutdown_timeout
    return loop.create_connection(
        lambda: protocol,
        host,
        port,
        ssl=cast(ssl.SSLContext, bio_context),
        server_hostname=server_hostname,
        **extra,
    )
