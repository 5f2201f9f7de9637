"""A user-space TCP proxy that adds a fixed round-trip time (netem is not available here).

Each direction delays every chunk, and the end of the stream, by half the RTT while keeping
their order. It runs in its own process on the server CPU, and stops by itself after
``lifetime`` seconds or when the harness is gone.

Caveat: the client's TCP handshake with the proxy is local, so the RTT is added to the TLS
handshake and the request, not to TCP connect. A real network adds one more RTT (SYN/SYN-ACK)
to every connect, full or resumed alike.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections import deque
from multiprocessing.connection import Connection as PipeEnd
from typing import cast

from .certs import HOST
from .env import pin_self, run_until_orphaned


class _Delayed:
    """The sending half of one direction: writes each chunk ``delay`` seconds after it came."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.transport: asyncio.Transport | None = None  # None until the upstream connects
        self.queue: deque[tuple[float, bytes | None]] = deque()  # None marks the end
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False

    def send(self, data: bytes | None) -> None:
        if self.ended:
            return  # EOF and connection_lost both end the stream; once is enough
        self.ended = data is None
        self.queue.append((self.loop.time() + self.delay, data))
        if self.timer is None:
            self._arm()

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.queue and self.timer is None:
            self._arm()

    def _arm(self) -> None:
        self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        if self.transport is None:
            return  # attach() re-arms
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                self.transport.close()  # flushes what was written, then FIN
                self.queue.clear()
                return
            self.transport.write(data)
        if self.queue:
            self._arm()


class _Side(asyncio.Protocol):
    """Receives on one connection and sends, delayed, through the other side's ``_Delayed``."""

    def __init__(self, out: _Delayed, back: _Delayed) -> None:
        self.out = out  # towards the peer of this side
        self.back = back  # towards this side (fed by the other side)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.back.attach(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.out.send(data)

    def eof_received(self) -> bool:
        self.out.send(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.out.send(None)


def _run(upstream_port: int, rtt: float, pipe: PipeEnd, cpu: int | None, lifetime: float) -> None:
    pin_self(cpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    delay = rtt / 2
    connecting: set[asyncio.Task[None]] = set()

    def accept() -> asyncio.Protocol:
        to_client, to_server = _Delayed(loop, delay), _Delayed(loop, delay)
        downstream = _Side(out=to_server, back=to_client)
        upstream = _Side(out=to_client, back=to_server)

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: upstream, HOST, upstream_port)
            except OSError:
                to_client.send(None)

        task = loop.create_task(connect())
        connecting.add(task)  # keep a reference until it is done
        task.add_done_callback(connecting.discard)
        return downstream

    async def main() -> None:
        server = await loop.create_server(accept, HOST, 0, backlog=1024)
        pipe.send(server.sockets[0].getsockname()[1])
        await run_until_orphaned(lifetime)

    loop.run_until_complete(main())


class DelayProxy:
    """``with DelayProxy(port, rtt=0.02) as proxy:`` connect to ``proxy.port`` instead."""

    def __init__(
        self, upstream_port: int, *, rtt: float, cpu: int | None, lifetime: float = 300
    ) -> None:
        spawn = multiprocessing.get_context("spawn")
        ours, theirs = spawn.Pipe()
        self._process = spawn.Process(
            target=_run,
            args=(upstream_port, rtt, theirs, cpu, lifetime),
            daemon=True,
            name="bench-delay-proxy",
        )
        self._process.start()
        stop_at = time.monotonic() + 30
        while not ours.poll(0.1):
            if not self._process.is_alive() or time.monotonic() > stop_at:
                self.stop()
                raise RuntimeError("the delay proxy did not start")
        self.port: int = ours.recv()

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
