"""Opening a TLS connection on a non-blocking ``ssl.SSLSocket``: TCP connect, the caller's
``wrap``, the handshake, then a :class:`~.socket_tls.SocketTLSTransport`.

What ``loop.create_connection(..., ssl=...)`` does, and what stays the same for a caller:

- addresses: ``getaddrinfo`` (an IP address is used as it is, like asyncio, without the
  resolver thread), each address tried in turn, the errors combined like asyncio's;
  ``TCP_NODELAY`` on TCP sockets;
- the handshake: bounded by ``handshake_timeout`` (asyncio's 60 s when None), past which
  ``ConnectionAbortedError``, as asyncio raises; certificate and host name failures are
  OpenSSL's own (``ssl.SSLCertVerificationError``), a peer that is no TLS server gives the
  same ``ssl.SSLError``, and a peer closing during the handshake ``ConnectionResetError``;
- ``protocol_factory()`` is called after the TCP connect, ``connection_made`` after the
  handshake; a cancellation or failure at any point closes the socket.

Only for loops with ``add_reader``/``add_writer`` (asyncio's selector loops, uvloop): check
:func:`socket_tls_supported` first, or catch :class:`SocketTLSUnsupported`.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
from asyncio.trsock import TransportSocket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._timeout import deadline
from .socket_tls import SocketTLSTransport

HANDSHAKE_TIMEOUT = 60.0  # asyncio's default ssl_handshake_timeout

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_AddrInfo = tuple[int, int, int, str, Any]


class SocketTLSUnsupported(RuntimeError):
    """The event loop cannot watch sockets (no ``add_reader``; e.g. the ProactorEventLoop):
    use ``loop.create_connection(ssl=...)`` instead."""


def socket_tls_supported(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether :func:`open_socket_tls` can run on ``loop``."""
    add_reader = getattr(type(loop), "add_reader", None)
    return callable(add_reader) and add_reader is not asyncio.AbstractEventLoop.add_reader


async def open_socket_tls(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], _P],
    host: str,
    port: int,
    *,
    wrap: Callable[[socket.socket], ssl.SSLSocket],
    handshake_timeout: float | None = None,
    shutdown_timeout: float | None = None,
    before_close: Callable[[ssl.SSLSocket], object] | None = None,
) -> tuple[SocketTLSTransport, _P]:
    """Connect to ``host:port``, make TLS with ``wrap`` and hand the protocol a transport.

    ``wrap`` receives the connected non-blocking socket and returns an ``ssl.SSLSocket``
    whose handshake has not started, typically
    ``context.wrap_socket(sock, server_hostname=..., do_handshake_on_connect=False)``
    with a session offered (``session=`` or a session engine's ``offer``/``watch``); if it
    fails after making the ``SSLSocket`` (which took the descriptor), it must close it.
    ``handshake_timeout=math.inf`` sets no deadline of its own (for a caller whose deadline
    around the whole connect ends first: a timer less per connect).
    ``shutdown_timeout`` bounds ``transport.close()`` (asyncio's 30 s when None).
    ``before_close(ssl_socket)`` runs once, after ``connection_lost`` and before the socket
    closes: the last moment its TLS state (``session``, ...) can be read, the close_notify
    exchange done if there was one (where an ``SSLObject`` is read after ``close()``).

    Raises :class:`SocketTLSUnsupported` (before any I/O) on a loop without ``add_reader``,
    and whatever ``create_connection(ssl=...)`` would raise for the same failure.
    """
    if not socket_tls_supported(loop):
        raise SocketTLSUnsupported(
            f"{type(loop).__name__} has no add_reader(): TLS on a socket needs a selector "
            "event loop (or uvloop); use loop.create_connection(ssl=...) instead"
        )
    for name, value in (
        ("handshake_timeout", handshake_timeout),
        ("shutdown_timeout", shutdown_timeout),
    ):
        if value is not None and not value > 0:
            raise ValueError(f"{name} should be a positive number, got {value!r}")
    timeout = HANDSHAKE_TIMEOUT if handshake_timeout is None else handshake_timeout
    sock = await _connect_tcp(loop, host, port)
    try:
        tls = wrap(sock)
        if not isinstance(tls, ssl.SSLSocket):
            raise TypeError(f"wrap() must return an ssl.SSLSocket, not {type(tls).__name__}")
    except BaseException:
        sock.close()  # (nothing to close if wrap_socket took the descriptor and failed after)
        raise
    try:
        if tls.gettimeout() != 0.0:  # (it has the socket's, non-blocking: spare the syscall)
            tls.setblocking(False)
        # SSLEOFError must reach the transport: it tells a TCP end without close_notify.
        tls.suppress_ragged_eofs = False  # type: ignore[attr-defined]
        protocol = protocol_factory()
        try:
            if timeout == math.inf:
                await _handshake(loop, tls)
            else:
                async with deadline(timeout):
                    await _handshake(loop, tls)
        except TimeoutError:
            raise ConnectionAbortedError(
                f"SSL handshake is taking longer than {timeout} seconds: aborting the connection"
            ) from None
        transport = SocketTLSTransport(
            loop,
            tls,
            protocol,
            extra=extra_info(tls),
            shutdown_timeout=shutdown_timeout,
            before_close=before_close,
        )
    except BaseException:
        tls.close()
        raise
    try:
        protocol.connection_made(transport)
    except BaseException:
        transport.abort()
        raise
    transport.start()
    return transport, protocol


def extra_info(sock: ssl.SSLSocket) -> dict[str, Any]:
    """``get_extra_info`` of a handshaken socket: what sslproto's transport and the socket
    transport under it answer (``ssl_object`` is the ``SSLSocket``; ``peercert`` is decoded
    by the transport when first asked for)."""
    try:
        peername = sock.getpeername()
    except OSError:
        peername = None
    return {
        "sslcontext": sock.context,
        "ssl_object": sock,
        "cipher": sock.cipher(),
        "compression": sock.compression(),
        "socket": TransportSocket(sock),
        "sockname": sock.getsockname(),
        "peername": peername,
    }


async def _handshake(loop: asyncio.AbstractEventLoop, tls: ssl.SSLSocket) -> None:
    fd = tls.fileno()
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            await _ready(loop, fd, write=False)
        except ssl.SSLWantWriteError:
            await _ready(loop, fd, write=True)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            # asyncio reports the TCP end it sees during a handshake as ConnectionResetError.
            raise ConnectionResetError(
                "the peer closed the connection during the TLS handshake"
            ) from exc


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Wait until ``fd`` is readable (or writable)."""
    waiter: asyncio.Future[None] = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, waiter)
    else:
        loop.add_reader(fd, _wake, waiter)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


# -- TCP ----------------------------------------------------------------------------------


async def _connect_tcp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket: each address tried in turn, as asyncio does."""
    infos: Sequence[_AddrInfo] | None = _numeric_address(host, port)
    if infos is None:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:
        sock = None
        try:
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            if family in (socket.AF_INET, socket.AF_INET6) and proto in (0, socket.IPPROTO_TCP):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            if sock is not None:
                sock.close()
            errors.append(exc)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
    if len(errors) == 1 or all(str(exc) == str(errors[0]) for exc in errors):
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


def _numeric_address(host: str, port: int) -> list[_AddrInfo] | None:
    """The address itself when ``host`` is an IPv4 or IPv6 address (no scope), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError, TypeError):
            continue
        address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
    return None
