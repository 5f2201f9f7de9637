"""The socket TLS transport's readiness state machine, driven by a scripted stand-in for the
SSLSocket: the cases real servers cannot be made to produce on demand - SSL_read that must
write first (a key update answered while the socket is full), SSL_write that must read first
(a renegotiation), a close_notify exchange that blocks both ways, errors from the socket.

The stand-in passes bytes through one end of a socketpair, so the event loop (asyncio or
uvloop) sees real readiness; each SSL call first does what the script says.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiotlspool.transports import SocketTLSTransport

SESSION_ENGINES = ["stdlib"]  # (no engine involved: run once per loop)


class ScriptedTLS:
    """Stands in for a non-blocking ``ssl.SSLSocket`` (what the transport calls of it)."""

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw
        self.reads: list[BaseException] = []
        self.writes: list[BaseException] = []
        self.unwraps: list[BaseException] = []
        self.calls: list[str] = []
        self.unsent: memoryview | None = None  # what a blocked write still has to send

    def fileno(self) -> int:
        return self.raw.fileno()

    def pending(self) -> int:
        return 0

    def read(self, size: int) -> bytes:
        self.calls.append("read")
        if self.reads:
            raise self.reads.pop(0)
        try:
            return self.raw.recv(size)  # b"": the peer's close_notify
        except BlockingIOError:
            raise ssl.SSLWantReadError() from None

    def write(self, data: bytes) -> int:
        """As SSL_write: all of ``data`` or SSLWantWriteError, having sent part of it (the
        retry must pass the same bytes)."""
        self.calls.append("write")
        if self.writes:
            raise self.writes.pop(0)
        if self.unsent is None:
            self.unsent = memoryview(bytes(data))
        assert len(data) == len(self.unsent.obj)  # type: ignore[arg-type]
        try:
            while self.unsent:
                self.unsent = self.unsent[self.raw.send(self.unsent) :]
        except BlockingIOError:
            raise ssl.SSLWantWriteError() from None
        self.unsent = None
        return len(data)

    def unwrap(self) -> None:
        self.calls.append("unwrap")
        if self.unwraps:
            raise self.unwraps.pop(0)

    def close(self) -> None:
        self.raw.close()


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.data = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> None:
        self.events.append("eof")

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc)))
        self.lost.set_result(exc)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SocketTLSTransport, ScriptedTLS, Recorder, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.settimeout(5)
    tls = ScriptedTLS(ours)
    recorder = Recorder()
    transport = SocketTLSTransport(
        asyncio.get_running_loop(),
        tls,
        recorder,
        extra={},  # type: ignore[arg-type]
    )
    recorder.connection_made(transport)
    transport.start()
    yield transport, tls, recorder, peer
    transport.abort()
    await recorder.lost
    peer.close()


async def until(condition: Any) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), 3)


async def test_a_read_that_must_write_first_waits_for_writable_then_reads(pair) -> None:
    transport, tls, recorder, peer = pair
    tls.reads.append(ssl.SSLWantWriteError())
    peer.sendall(b"abc")
    await until(lambda: recorder.data == b"abc")
    assert tls.calls[:2] == ["read", "read"]  # blocked on writing, retried once writable
    assert not transport._writer_on and transport._reader_on


async def test_a_write_that_must_read_first_retries_when_readable_even_while_paused(pair) -> None:
    transport, tls, recorder, peer = pair
    transport.pause_reading()
    tls.writes.append(ssl.SSLWantReadError())
    transport.write(b"hello")
    assert transport.get_write_buffer_size() == 5
    assert transport._reader_on  # for the write, although reading is paused
    peer.sendall(b"R")  # what the renegotiation waited for
    await until(lambda: transport.get_write_buffer_size() == 0)
    assert peer.recv(5) == b"hello"
    assert recorder.data == b""  # nothing delivered while paused
    assert not transport._reader_on  # and no busy loop on the unread byte
    transport.resume_reading()
    await until(lambda: recorder.data == b"R")


async def test_a_blocked_write_keeps_its_bytes_and_the_flow_control_fires(pair) -> None:
    transport, tls, recorder, peer = pair
    transport.set_write_buffer_limits(high=4)
    tls.writes.append(ssl.SSLWantWriteError())
    transport.write(b"0123456789")  # blocked: the retry passes the same bytes
    transport.write(bytearray(b"abc"))
    assert transport.get_write_buffer_size() == 13
    assert recorder.events == ["pause_writing"]
    await until(lambda: transport.get_write_buffer_size() == 0)
    assert recorder.events == ["pause_writing", "resume_writing"]
    assert peer.recv(13) == b"0123456789abc"


async def test_close_notify_blocking_both_ways_then_a_clean_close(pair) -> None:
    transport, tls, recorder, peer = pair
    tls.unwraps += [ssl.SSLWantReadError(), ssl.SSLWantWriteError()]
    transport.close()
    assert tls.calls == ["unwrap"] and transport._reader_on and not transport._writer_on
    peer.sendall(b"N")  # the peer's close_notify arrives: then the socket is writable
    assert await recorder.lost is None
    assert tls.calls == ["unwrap"] * 3
    assert recorder.events == ["eof", ("lost", type(None))]
    assert tls.raw.fileno() == -1  # the socket is closed


async def test_the_peers_close_notify_is_answered(pair) -> None:
    _transport, tls, recorder, peer = pair
    peer.sendall(b"last")
    peer.shutdown(socket.SHUT_WR)  # the stand-in reads b"": a close_notify
    assert await recorder.lost is None
    assert recorder.data == b"last" and recorder.events == ["eof", ("lost", type(None))]
    assert tls.calls[-1] == "unwrap"


async def test_a_write_error_loses_the_connection_with_it(pair) -> None:
    transport, tls, recorder, _peer = pair
    tls.writes.append(BrokenPipeError())
    transport.write(b"x")
    assert isinstance(await recorder.lost, BrokenPipeError)
    assert transport.is_closing() and transport.get_write_buffer_size() == 0
    transport.write(b"dropped")


async def test_a_protocol_error_is_reported_and_loses_the_connection(pair) -> None:
    _transport, _tls, recorder, peer = pair
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: reported.append(context))

    def broken(data: bytes) -> None:
        raise ValueError("bad data")

    recorder.data_received = broken  # type: ignore[method-assign]
    peer.sendall(b"boom")
    assert isinstance(await recorder.lost, ValueError)
    assert reported[0]["message"] == "Fatal error: protocol.data_received() call failed."
    loop.set_exception_handler(None)


async def test_an_unclosed_transport_warns_and_closes_its_socket() -> None:
    ours, peer = socket.socketpair()
    tls = ScriptedTLS(ours)
    transport = SocketTLSTransport(
        asyncio.get_running_loop(),
        tls,
        Recorder(),
        extra={},  # type: ignore[arg-type]
    )
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del transport
    assert ours.fileno() == -1
    peer.close()


async def test_the_peers_close_notify_during_a_blocked_flush_stops_reading(pair) -> None:
    # Our flush is blocked (the peer reads nothing) when its close_notify (and TCP end)
    # arrive: no more reading - an EOF is readable forever and would spin the loop - and the
    # close waits for the flush, then answers.
    transport, tls, recorder, peer = pair
    payload = b"p" * 4_000_000
    transport.write(payload)
    assert transport.get_write_buffer_size() > 0 and transport._writer_on
    peer.shutdown(socket.SHUT_WR)
    await until(lambda: recorder.events == ["pause_writing", "eof"])
    reads = tls.calls.count("read")
    await asyncio.sleep(0.05)
    assert tls.calls.count("read") == reads and not transport._reader_on
    assert transport.is_closing() and not recorder.lost.done()
    received = 0
    peer.setblocking(False)
    while received < len(payload):  # the peer reads at last: the flush completes
        received += len(await asyncio.get_running_loop().sock_recv(peer, 1 << 20))
    assert await recorder.lost is None
    assert tls.calls[-1] == "unwrap"
    assert recorder.events == ["pause_writing", "eof", "resume_writing", ("lost", type(None))]
