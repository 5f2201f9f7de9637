"""A pooled TLS connection as the user holds it: its streams, the facts of its handshake, and
closing it. What the pool and the connector keep about a connection lives with them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import ssl
from collections.abc import Awaitable, Callable

from .endpoint import Endpoint

logger = logging.getLogger("aiotlspool")
_HAS_POLL = hasattr(select, "poll")


class StreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, also recording what the pool needs to judge the connection."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)  # (given: no lookup, a getpid() on 3.10-3.11)
        self._event_loop = loop
        self.bytes_received = 0  # application data so far (a TLS 1.3 ticket comes before it)
        self.eof = False
        self.lost = False
        self._lost_waiters: list[asyncio.Future[None]] = []

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        super().data_received(data)

    def eof_received(self) -> bool:
        self.eof = True
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost = True
        self.stop_waiting()
        super().connection_lost(exc)

    def stop_waiting(self) -> None:
        """End the current :meth:`wait_lost` calls, lost or not."""
        for waiter in self._lost_waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_lost(self) -> None:
        """Wait until the transport is closed.

        Unlike ``StreamWriter.wait_closed``, a cancelled wait does not cancel a future shared
        with later waiters, so a close that was cut short can be awaited again.
        """
        if self.lost:
            return
        waiter = self._event_loop.create_future()  # (not looked up: a getpid() on 3.10-3.11)
        self._lost_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._lost_waiters.remove(waiter)


class Connection:
    """A TLS connection checked out of a :class:`~aiotlspool.Pool`.

    Use :attr:`reader` and :attr:`writer` as with ``asyncio.open_connection``. Give it back with
    ``pool.release(conn)`` (or leave the ``async with pool.connection(...)`` block), or close it
    with :meth:`aclose` when it must not be reused.

    Facts about the connection: :attr:`endpoint`, :attr:`session_reused`, :attr:`tls_version`,
    :attr:`handshake_seconds` and :attr:`connect_seconds` (``time.perf_counter`` durations),
    :attr:`created_at` (event loop time), :attr:`checkouts` (times handed out by the pool),
    :attr:`ssl_object` (an ``ssl.SSLObject``, or on the socket transport an ``ssl.SSLSocket``,
    which forgets its TLS state once closed: read what you need before closing).
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: StreamProtocol,
        ssl_object: ssl.SSLObject,
        session_reused: bool,
        handshake_seconds: float,
        connect_seconds: float,
        created_at: float,
        close_hook: Callable[[Connection], Awaitable[None]],
        close_bound: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer
        self.ssl_object = ssl_object
        self.session_reused = session_reused
        self.tls_version = ssl_object.version() or ""
        self.handshake_seconds = handshake_seconds
        self.connect_seconds = connect_seconds
        self.created_at = created_at
        self.checkouts = 0
        self._protocol = protocol
        self._close_hook = close_hook  # how aclose() reaches the pool that owns the connection
        self._closed = False
        self._probe: _ReadableProbe | None = None  # made at the first check (many get none)
        # How long the transport's own close may take at most (it aborts then), if it bounds it.
        self._close_bound = close_bound

    def __repr__(self) -> str:
        how = "resumed" if self.session_reused else "full handshake"
        state = "closed" if self.closed else "open"
        return f"<Connection {self.endpoint} {self.tls_version} {how} {state}>"

    @property
    def closed(self) -> bool:
        """True once the connection was closed (by :meth:`aclose`, the pool, or the peer)."""
        return self._closed or self._protocol.eof or self.writer.transport.is_closing()

    @property
    def bytes_received(self) -> int:
        """Bytes of application data received so far (read or not)."""
        return self._protocol.bytes_received

    async def aclose(self) -> None:
        """Close the connection (with TLS close_notify) instead of returning it to the pool."""
        await self._close_hook(self)

    def is_reusable(self, *, ask_socket: bool = True) -> bool:
        """Whether the connection can be pooled or handed out again: open, nothing unread."""
        if self.closed:
            return False
        if not ask_socket:
            return True
        # The event loop may not have noticed yet that the peer closed: ask the socket.
        if self._probe is None:
            self._probe = _ReadableProbe(self.writer)
        return not self._probe.readable()

    async def close_streams(self, timeout: float) -> None:
        """Send close_notify and wait up to ``timeout`` for the peer's; then drop the socket.

        A clean TLS shutdown matters: servers with a stateful session cache forget the session
        of a connection that ended without close_notify.
        """
        self._closed = True
        transport = self.writer.transport
        if not transport.is_closing():
            # Only once: asyncio's SSL transport detaches itself on a second close(), after
            # which abort() does nothing and the socket lingers until garbage collection.
            self.writer.close()
        if self._close_bound is not None and self._close_bound <= timeout:
            # It ends its close (closing, or closed) within ``timeout`` itself, since
            # close() started it: no timer of ours (a third of a connect's timers).
            await self._protocol.wait_lost()
            return
        # At ``timeout`` a timer aborts the socket and ends the wait: what a deadline on this
        # task did, without its cancel-and-convert machinery (a third of a connect's timers).
        timer = asyncio.get_running_loop().call_later(timeout, self._give_up_closing, timeout)
        try:
            await self._protocol.wait_lost()
        except asyncio.CancelledError:
            raise  # the shutdown goes on; the caller may wait for it again
        except BaseException:
            transport.abort()
            raise
        finally:
            timer.cancel()

    def _give_up_closing(self, timeout: float) -> None:
        """The peer is gone or slow to answer: drop the socket (it is closed either way)."""
        logger.debug("closing %s: no close_notify from the peer within %ss", self.endpoint, timeout)
        self.writer.transport.abort()
        self._protocol.stop_waiting()  # (an asyncio transport may report its loss later)

    def abort(self) -> None:
        """Drop the socket at once, without close_notify."""
        self._closed = True
        self.writer.transport.abort()


class _ReadableProbe:
    """Asks the kernel whether a socket has bytes or EOF waiting, without reading them.

    The descriptor and the poller are looked up once per connection, at its first check (it is
    asked only while the transport is open): checking an idle connection at checkout is then a
    single ``poll(0)`` system call.
    """

    __slots__ = ("_known_fd", "_poller", "_writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer: asyncio.StreamWriter | None = writer
        self._known_fd = -1
        self._poller: select.poll | None = None

    @property
    def _fd(self) -> int:
        if self._writer is not None:
            sock = self._writer.get_extra_info("socket")
            self._writer = None
            with contextlib.suppress(OSError, ValueError, AttributeError):
                self._known_fd = sock.fileno()
        return self._known_fd

    def readable(self) -> bool:
        if self._fd < 0:
            return False  # nothing to ask (no socket exposed): rely on the protocol's flags
        with contextlib.suppress(OSError, ValueError):
            if self._poller is None and _HAS_POLL:
                self._poller = select.poll()
                self._poller.register(self._fd, select.POLLIN)
            if self._poller is not None:
                return bool(self._poller.poll(0))
            readable, _, _ = select.select([self._fd], [], [], 0)
            return bool(readable)
        return True  # the socket is gone
