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
from typing import Any, Generic, TypeVar

from .socket_tls import SocketTLSTransport

HANDSHAKE_TIMEOUT = 60.0  # asyncio's default ssl_handshake_timeout

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_AddrInfo = tuple[int, int, int, str, Any]
_READ, _WRITE = 1, 2


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
    opening = await _open(loop, host, port, wrap, protocol_factory, timeout)
    tls, protocol = opening.tls, opening.protocol
    assert tls is not None
    assert protocol is not None
    try:
        transport = SocketTLSTransport(
            loop,
            tls,
            protocol,
            extra=extra_info(tls),
            shutdown_timeout=shutdown_timeout,
            before_close=before_close,
            reader_registered=opening.adopt_reader(),
        )
    except BaseException:
        opening.unregister()
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


# -- TCP ----------------------------------------------------------------------------------


async def _open(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    wrap: Callable[[socket.socket], ssl.SSLSocket],
    protocol_factory: Callable[[], _P],
    timeout: float,
) -> _Opening[_P]:
    """TCP connect, ``wrap`` and the handshake: each address tried in turn until one
    connects (its TLS errors are raised as they are), the TCP errors combined as asyncio's."""
    infos: Sequence[_AddrInfo] | None = _numeric_address(host, port)
    if infos is None:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:
        opening = None
        try:
            sock = socket.socket(family, type_, proto)
            opening = _Opening(loop, sock, address, wrap, protocol_factory, timeout)
            sock.setblocking(False)
            if family in (socket.AF_INET, socket.AF_INET6) and proto in (0, socket.IPPROTO_TCP):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await opening.run()
            return opening
        except OSError as exc:
            if opening is None:
                errors.append(exc)
                continue
            opening.close()
            if opening.connected:
                raise
            errors.append(exc)
        except BaseException:
            if opening is not None:
                opening.close()
            raise
    if len(errors) == 1 or all(str(exc) == str(errors[0]) for exc in errors):
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


class _Opening(Generic[_P]):
    """One address: the TCP connect, ``wrap``, ``protocol_factory()`` and the handshake
    driven from the socket's readiness callbacks, the task woken once at the end (awaiting a
    future per step cost two loop iterations and a register/unregister pair each). On success
    the socket stays registered for reading if the handshake last waited for that: the
    transport adopts it.
    ``connect()``'s errors are asyncio's (``sock_connect``); the handshake's as documented
    in :func:`open_socket_tls`; past ``timeout`` after the TCP connect, ConnectionAbortedError.
    """

    __slots__ = (
        "_address",
        "_fd",
        "_loop",
        "_protocol_factory",
        "_registered",
        "_sock",
        "_timeout",
        "_timer",
        "_waiter",
        "_wrap",
        "connected",
        "protocol",
        "tls",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        address: Any,
        wrap: Callable[[socket.socket], ssl.SSLSocket],
        protocol_factory: Callable[[], _P],
        timeout: float,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._address = address
        self._wrap = wrap
        self._protocol_factory = protocol_factory
        self.protocol: _P | None = None
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._registered = 0  # _READ or _WRITE: what the socket is registered for
        self._fd = sock.fileno()  # (the SSLSocket takes it over: the same number)
        self.connected = False  # TCP connected (errors from here on are not retried)
        self.tls: ssl.SSLSocket | None = None

    async def run(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            self._sock.connect(self._address)
        except (BlockingIOError, InterruptedError):
            self._want(_WRITE)
        else:
            self._step()
        try:
            await self._waiter
        except BaseException:
            self.unregister()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _step(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # (a readable socket the transport has not adopted yet)
        try:
            tls = self.tls
            if tls is None:
                tls = self._connected()
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._want(_READ)
        except ssl.SSLWantWriteError:
            self._want(_WRITE)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            # asyncio reports the TCP end it sees during a handshake as ConnectionResetError.
            self._fail(
                ConnectionResetError("the peer closed the connection during the TLS handshake"),
                exc,
            )
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fail(exc, None)
        else:
            if self._registered == _WRITE:
                self.unregister()
            waiter.set_result(None)

    def _connected(self) -> ssl.SSLSocket:
        """The TCP connect is done: check it as ``sock_connect`` does, wrap, arm the timer."""
        sock = self._sock
        if not self.connected:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {self._address}")
            self.connected = True
        tls = self._wrap(sock)
        if not isinstance(tls, ssl.SSLSocket):
            raise TypeError(f"wrap() must return an ssl.SSLSocket, not {type(tls).__name__}")
        self.tls = tls
        if tls.gettimeout() != 0.0:  # (it has the socket's, non-blocking: spare the syscall)
            tls.setblocking(False)
        # SSLEOFError must reach the transport: it tells a TCP end without close_notify.
        tls.suppress_ragged_eofs = False  # type: ignore[attr-defined]
        self.protocol = self._protocol_factory()
        if self._timeout != math.inf:
            self._timer = self._loop.call_later(self._timeout, self._time_out)
        return tls

    def _time_out(self) -> None:
        self._timer = None
        self._fail(
            ConnectionAbortedError(
                f"SSL handshake is taking longer than {self._timeout} seconds: "
                "aborting the connection"
            ),
            None,
        )

    def _fail(self, exc: BaseException, cause: BaseException | None) -> None:
        self.unregister()
        if cause is not None:
            exc.__cause__ = cause
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _want(self, what: int) -> None:
        if self._registered == what:
            return
        self.unregister()
        if what == _READ:
            self._loop.add_reader(self._fd, self._step)
        else:
            self._loop.add_writer(self._fd, self._step)
        self._registered = what

    def unregister(self) -> None:
        if not self._registered:
            return
        if self._registered == _READ:
            self._loop.remove_reader(self._fd)
        else:
            self._loop.remove_writer(self._fd)
        self._registered = 0

    def adopt_reader(self) -> bool:
        """Whether the socket is still registered for reading: the transport takes it over."""
        return self._registered == _READ

    def close(self) -> None:
        """After a failure: unregister, close the socket (the ``SSLSocket`` if made)."""
        self.unregister()
        (self._sock if self.tls is None else self.tls).close()


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
