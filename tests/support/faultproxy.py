"""A TCP proxy on 127.0.0.1 that injects the faults production networks inflict on a pool.

It runs on the test's own event loop (asyncio or uvloop), between the pool and a real TLS
server, and forwards raw bytes: it never sees plaintext, so every fault is one the TLS client
meets on the wire.

Faults for connections accepted from now on (``connections=k`` limits one to the next ``k``
connections; by default it applies to all of them until :meth:`FaultProxy.heal`):

- :meth:`~FaultProxy.reset_after` / :meth:`~FaultProxy.close_after`: forward ``nbytes`` from
  the server, then reset (RST) or close (FIN) the connection, e.g. in the middle of the
  handshake;
- :meth:`~FaultProxy.stall_after`: forward ``nbytes`` from the server, then nothing more in
  either direction, keeping the connection open (a peer that stalls mid-handshake);
- :meth:`~FaultProxy.garbage`: replace every byte from the server by junk of the same length;
- :meth:`~FaultProxy.switch_upstream`: connect to another server (e.g. one whose certificate
  does not cover the name the client expects);
- :meth:`~FaultProxy.blackhole`: accept TCP but forward nothing in one direction.

Faults on connections already open (pooled connections):

- :meth:`~FaultProxy.close_idle`: close connections idle for a while, with FIN or RST (a
  server or a middlebox dropping idle keep-alive connections);
- :meth:`~FaultProxy.half_open`: stop forwarding one direction, silently (a dead NAT entry);
- :meth:`~FaultProxy.half_close`: send FIN to the client but keep forwarding what it sends.

:class:`SaturatedListener` is a listener whose accept queue is full: a TCP connect to it hangs
in SYN retransmission, which lands a cancellation inside the TCP connect deterministically.

Everything listens on 127.0.0.1 only and stops by itself after ``lifetime`` seconds, in case a
test forgets to close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

HOST = "127.0.0.1"
Direction = Literal["up", "down"]  # up: client -> server; down: server -> client


@dataclass(frozen=True)
class _Plan:
    """What the proxy does to one connection from its start."""

    down_budget: int | None = None  # server bytes forwarded before `then` happens
    then: Literal["reset", "close", "stall"] = "reset"
    garbage: bool = False
    drop_up: bool = False
    drop_down: bool = False


PLAIN = _Plan()


def _reset(transport: asyncio.Transport | None) -> None:
    """Close with RST rather than FIN: SO_LINGER with a zero timeout, then close."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(eq=False)
class Link:
    """One proxied connection and what went through it."""

    proxy: FaultProxy
    plan: _Plan
    number: int
    client: asyncio.Transport | None = None
    server: asyncio.Transport | None = None
    bytes_up: int = 0  # received from the client
    bytes_down: int = 0  # received from the server
    forwarded_down: int = 0
    last_activity: float = 0.0
    client_closed: bool = False
    server_closed: bool = False
    client_eof: bool = False  # the client half-closed (FIN)
    server_eof: bool = False
    forward_up: bool = True
    forward_down: bool = True
    _pending_up: list[bytes] = field(default_factory=list)  # client bytes before upstream is up

    @property
    def open(self) -> bool:
        return not (self.client_closed and self.server_closed)

    def _touch(self) -> None:
        self.last_activity = asyncio.get_running_loop().time()

    # client side ---------------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        self._touch()
        self.bytes_up += len(data)
        if not self.forward_up:
            return  # read and discard: we still notice when the client goes away
        if self.server is None:
            self._pending_up.append(data)
        elif not self.server.is_closing():
            self.server.write(data)

    def eof_from_client(self) -> None:
        self.client_eof = True
        if not self.forward_up:
            # A stalled or blackholed link whose client hung up: nobody can observe it any
            # more, so end it rather than keep the server's side (and our sockets) around.
            self.close()
            return
        if self.server is not None and self.server.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self.server.write_eof()
        self._close_if_both_eof()

    def _close_if_both_eof(self) -> None:
        # Both sides said FIN: nothing can flow any more, so release the sockets.
        if self.client_eof and self.server_eof:
            self.close()

    def client_lost(self) -> None:
        self.client_closed = True
        if self.server is not None and not self.server.is_closing():
            self.server.close()
        self.proxy._changed()

    # server side ---------------------------------------------------------------------------
    def upstream_ready(self, transport: asyncio.Transport) -> None:
        self.server = transport
        if self.client_closed:
            transport.close()
            return
        for data in self._pending_up:
            transport.write(data)
        self._pending_up.clear()

    def from_server(self, data: bytes) -> None:
        self._touch()
        self.bytes_down += len(data)
        if not self.forward_down or self.client is None or self.client.is_closing():
            return
        if self.plan.garbage:
            data = self.proxy._junk(len(data))
        budget = self.plan.down_budget
        if budget is not None and self.forwarded_down + len(data) >= budget:
            head = data[: budget - self.forwarded_down]
            if head:
                self.client.write(head)
                self.forwarded_down += len(head)
            if self.plan.then == "reset":
                self.reset()
            elif self.plan.then == "close":
                self.close()
            else:
                self.forward_up = self.forward_down = False
            self.proxy._changed()
            return
        self.client.write(data)
        self.forwarded_down += len(data)

    def eof_from_server(self) -> None:
        self.server_eof = True
        if self.forward_down and self.client is not None and self.client.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self.client.write_eof()
        self._close_if_both_eof()

    def server_lost(self) -> None:
        self.server_closed = True
        # A blackholed direction hides the server's departure from the client, as a dead
        # middlebox would; otherwise the client sees the close.
        if self.forward_down and self.client is not None and not self.client.is_closing():
            self.client.close()
        self.proxy._changed()

    # faults on an open link ----------------------------------------------------------------
    def reset(self) -> None:
        _reset(self.client)
        if self.server is not None:
            self.server.abort()

    def close(self) -> None:
        for transport in (self.client, self.server):
            if transport is not None and not transport.is_closing():
                transport.close()


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.link: Link | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport but have its methods.
        self.link = self.proxy._accepted(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        assert self.link is not None
        self.link.from_client(data)

    def eof_received(self) -> bool:
        assert self.link is not None
        self.link.eof_from_client()
        return True  # keep our sending side open: the client only half-closed

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None:
            self.link.client_lost()


class _ServerSide(asyncio.Protocol):
    def __init__(self, link: Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link.upstream_ready(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.link.from_server(data)

    def eof_received(self) -> bool:
        self.link.eof_from_server()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.server_lost()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``, injecting the faults it is told to.

    Use ``async with FaultProxy(upstream_port) as proxy`` and connect to ``proxy.port``.
    """

    def __init__(
        self, upstream_port: int, upstream_host: str = HOST, *, lifetime: float = 120.0
    ) -> None:
        self.upstream: tuple[str, int] = (upstream_host, upstream_port)
        self.lifetime = lifetime
        self.links: list[Link] = []
        self.upstream_failures = 0
        self._default = PLAIN
        self._next: deque[_Plan] = deque()
        self._server: asyncio.Server | None = None
        self._stopper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random(4936)  # deterministic junk
        self._change: asyncio.Event | None = None
        self.port = 0

    async def start(self) -> FaultProxy:
        loop = asyncio.get_running_loop()
        self._change = asyncio.Event()
        self._server = await loop.create_server(lambda: _ClientSide(self), HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        # Stop by ourselves even if the test never does.
        self._stopper = loop.call_later(self.lifetime, self._abort_all)
        return self

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening and reset every connection still open."""
        self._abort_all()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let the transports' connection_lost callbacks run (they close the sockets).
        for _ in range(3):
            await asyncio.sleep(0)

    def _abort_all(self) -> None:
        if self._stopper is not None:
            self._stopper.cancel()
            self._stopper = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in self._tasks:
            task.cancel()
        for link in self.links:
            for transport in (link.client, link.server):
                if transport is not None:
                    transport.abort()

    # -- faults for new connections --------------------------------------------------------

    def _plan(self, plan: _Plan, connections: int | None) -> None:
        if connections is None:
            self._default = plan
            self._next.clear()
        else:
            self._next.extend([plan] * connections)

    def reset_after(self, nbytes: int, *, connections: int | None = None) -> None:
        """Reset (RST) new client connections once ``nbytes`` from the server went through."""
        self._plan(_Plan(down_budget=nbytes, then="reset"), connections)

    def close_after(self, nbytes: int, *, connections: int | None = None) -> None:
        """Close (FIN) new client connections once ``nbytes`` from the server went through."""
        self._plan(_Plan(down_budget=nbytes, then="close"), connections)

    def stall_after(self, nbytes: int, *, connections: int | None = None) -> None:
        """Forward ``nbytes`` from the server, then nothing either way; stay connected."""
        self._plan(_Plan(down_budget=nbytes, then="stall"), connections)

    def garbage(self, *, connections: int | None = None) -> None:
        """Replace the server's bytes by junk of the same length."""
        self._plan(_Plan(garbage=True), connections)

    def blackhole(self, direction: Direction, *, connections: int | None = None) -> None:
        """Forward nothing in ``direction`` on new connections (bytes are read and dropped)."""
        self._plan(_Plan(drop_up=direction == "up", drop_down=direction == "down"), connections)

    def switch_upstream(self, port: int, host: str = HOST) -> None:
        """Send new connections to another server; open ones stay where they are."""
        self.upstream = (host, port)

    def heal(self) -> None:
        """Plain forwarding for new connections from now on."""
        self._plan(PLAIN, None)

    # -- faults on open connections ----------------------------------------------------------

    def close_idle(self, min_idle: float = 0.0, *, reset: bool = False) -> int:
        """Close (FIN, or RST with ``reset``) open connections idle for ``min_idle`` seconds."""
        now = asyncio.get_running_loop().time()
        closed = 0
        for link in self.open_links:
            if now - link.last_activity >= min_idle:
                if reset:
                    link.reset()
                else:
                    link.close()
                closed += 1
        return closed

    def half_open(self, direction: Direction) -> int:
        """Stop forwarding ``direction`` on open connections, telling nobody."""
        for link in self.open_links:
            if direction == "up":
                link.forward_up = False
            else:
                link.forward_down = False
        return len(self.open_links)

    def half_close(self) -> int:
        """Send FIN to every open client (the server stopped sending) and keep forwarding up."""
        for link in self.open_links:
            if link.client is not None and link.client.can_write_eof():
                link.client.write_eof()
            link.forward_down = False
        return len(self.open_links)

    # -- observations ------------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        return len(self.links)

    @property
    def open_links(self) -> list[Link]:
        return [link for link in self.links if link.open]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds; it is checked after every proxy event."""
        change = self._change
        assert change is not None

        async def until() -> None:
            while not condition():
                change.clear()
                await change.wait()

        await asyncio.wait_for(until(), timeout)  # asyncio.timeout() needs Python 3.11

    # -- internals ---------------------------------------------------------------------------

    def _changed(self) -> None:
        if self._change is not None:
            self._change.set()

    def _junk(self, n: int) -> bytes:
        data = bytearray(self._random.randbytes(n))
        data[0] = 0xFF  # never a TLS record type (20-24), so it cannot parse by chance
        return bytes(data)

    def _accepted(self, client: asyncio.Transport) -> Link:
        plan = self._next.popleft() if self._next else self._default
        link = Link(self, plan, len(self.links), client=client)
        link.forward_up = not plan.drop_up
        link.forward_down = not plan.drop_down
        link._touch()
        self.links.append(link)
        task = asyncio.get_running_loop().create_task(self._connect_upstream(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed()
        return link

    async def _connect_upstream(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.upstream
        try:
            await loop.create_connection(lambda: _ServerSide(link), host, port)
        except OSError:
            self.upstream_failures += 1
            link.server_closed = True
            _reset(link.client)
            self._changed()


class SaturatedListener:
    """A listener on 127.0.0.1 whose accept queue is full and that never accepts.

    Linux drops further SYNs for a full queue, so ``connect()`` to it hangs in SYN
    retransmission (1 s, 3 s, ...) instead of failing: the one way to keep a pool inside its
    TCP connect for as long as a test needs. Closing it (or ``lifetime``) ends all of that.
    """

    def __init__(self, lifetime: float = 60.0) -> None:
        self.lifetime = lifetime
        self.port = 0
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self._stopper: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> SaturatedListener:
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen(0)  # the queue holds one connection (backlog + 1)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        # Fill the queue with connections nobody accepts, until a connect no longer completes.
        loop = asyncio.get_running_loop()
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            self._fillers.append(filler)
            try:
                await asyncio.wait_for(loop.sock_connect(filler, (HOST, self.port)), 0.2)
            except (TimeoutError, asyncio.TimeoutError):  # distinct classes on Python 3.10
                break  # its SYN was dropped: the queue is full from here on
        else:
            self.close()
            raise RuntimeError("could not fill the accept queue (not Linux?)")
        self._stopper = asyncio.get_running_loop().call_later(self.lifetime, self.close)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stopper is not None:
            self._stopper.cancel()
            self._stopper = None
        for sock in [*self._fillers, self._listener]:
            if sock is not None:
                sock.close()
        self._fillers.clear()
        self._listener = None
