"""The socket-level TLS transport (aiotlspool.transports): TLS on a non-blocking SSLSocket,
driven by add_reader/add_writer, behaving as ``create_connection(ssl=...)`` does.

Real TLS over 127.0.0.1 (asyncio and uvloop, TLS 1.2 and 1.3). Where asyncio's behaviour is
the specification, a test runs the same scenario through ``create_connection`` too
(``path="asyncio"``) and asserts the same outcome. Servers: the asyncio echo servers of
``tests/support/servers.py``, and :class:`ScriptServer`, a blocking one-connection server in a
thread whose script can do what asyncio's cannot (tell close_notify from a bare TCP end, reset,
close without close_notify).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from aiotlspool import Pool
from aiotlspool.connection import StreamProtocol
from aiotlspool.endpoint import Endpoint
from aiotlspool.engines.select import select_engine
from aiotlspool.exceptions import CertificateError, TLSHandshakeError, translate
from aiotlspool.transports import (
    SocketTLSTransport,
    SocketTLSUnsupported,
    open_socket_tls,
    socket_tls_supported,
)

from ..support.helpers import HOST, NAME, wait_for
from ..support.servers import (
    client_context,
    fd_baseline,
    never_answer,
    openssl_available,
    plain_http,
    running_server,
    server_context,
    settle_fds,
    ssh_banner,
    unused_port,
)

# The transport does not depend on the session engine: run each test once per loop.
SESSION_ENGINES = ["native"]


def wrapper(
    ctx: ssl.SSLContext, name: str = NAME, **kwargs: Any
) -> Callable[[socket.socket], ssl.SSLSocket]:
    def wrap(sock: socket.socket) -> ssl.SSLSocket:
        return ctx.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False, **kwargs)

    return wrap


async def open_streams(
    port: int, ctx: ssl.SSLContext, *, name: str = NAME, **kwargs: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, StreamProtocol]:
    """Streams on the socket transport, built as the connector builds them."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = StreamProtocol(reader, loop)
    transport, _ = await open_socket_tls(
        loop, lambda: protocol, HOST, port, wrap=wrapper(ctx, name, **kwargs)
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol


async def connect(path: str, port: int, ctx: ssl.SSLContext, name: str = NAME, **kw: Any) -> Any:
    """``(transport, Recorder)`` through ``create_connection`` or the socket transport."""
    loop = asyncio.get_running_loop()
    if path == "asyncio":
        timeout = {"ssl_handshake_timeout": kw["timeout"]} if "timeout" in kw else {}
        return await loop.create_connection(
            Recorder, HOST, port, ssl=ctx, server_hostname=name, **timeout
        )
    timeout = {"handshake_timeout": kw["timeout"]} if "timeout" in kw else {}
    return await open_socket_tls(loop, Recorder, HOST, port, wrap=wrapper(ctx, name), **timeout)


class Recorder(asyncio.Protocol):
    """Records the protocol calls in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc)))
        self.lost.set_result(exc)


class ScriptServer:
    """One TLS connection served by ``script(tls_socket)`` on a blocking socket in a thread;
    :attr:`result` is what the script returned (or the exception it raised)."""

    def __init__(self, cert: trustme.LeafCert, version: str, script: Callable[..., Any]):
        self.context = server_context(cert, version)
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(10)
            raw, _ = self.listener.accept()
            raw.settimeout(10)
            with self.context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as tls:
                self.result = self.script(tls)
        except BaseException as exc:
            self.result = exc
        finally:
            self.listener.close()

    async def finished(self) -> Any:
        await asyncio.to_thread(self.thread.join, 10)
        assert not self.thread.is_alive()
        return self.result


def read_until_end(tls: ssl.SSLSocket) -> tuple[int, str]:
    """Read until the client's close_notify ("close_notify") or a bare TCP end ("eof");
    answer a close_notify with ours. Returns the byte count and how it ended."""
    total = 0
    try:
        while data := tls.recv(65536):
            total += len(data)
    except ssl.SSLEOFError:
        return total, "eof"
    tls.unwrap()
    return total, "close_notify"


# -- streams ------------------------------------------------------------------------------------


async def test_echo_round_trips_through_streams(server, client_ctx, tls_version) -> None:
    reader, writer, _ = await open_streams(server.port, client_ctx)
    for payload in (b"ping", b"x" * 70_000, b"pong"):
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload
    transport = writer.transport
    tls = transport.get_extra_info("ssl_object")
    assert isinstance(transport, SocketTLSTransport) and isinstance(tls, ssl.SSLSocket)
    assert tls.version() == tls_version and tls.session_reused is False
    assert transport.get_extra_info("sslcontext") is client_ctx
    assert transport.get_extra_info("peername") == (HOST, server.port)
    assert transport.get_extra_info("sockname")[0] == HOST
    assert transport.get_extra_info("socket").fileno() == tls.fileno()
    assert transport.get_extra_info("cipher") == tls.cipher()
    assert ("DNS", "localhost") in transport.get_extra_info("peercert")["subjectAltName"]
    assert transport.get_extra_info("nothing", 7) == 7
    assert tls.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    writer.close()
    await writer.wait_closed()


async def test_megabytes_both_ways_with_drain_back_pressure(server, client_ctx) -> None:
    # 6 MB written in pieces with drain() while a task reads the echo: the write buffer goes
    # over the high-water mark (the protocol is paused) and drain() waits for it.
    reader, writer, protocol = await open_streams(server.port, client_ctx)
    transport = writer.transport
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    pieces = [bytes([i]) * 200_003 for i in range(30)]
    expected = hashlib.sha256(b"".join(pieces)).hexdigest()
    total = sum(map(len, pieces))

    async def read_all() -> str:
        digest = hashlib.sha256()
        remaining = total
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 20))
            assert chunk
            digest.update(chunk)
            remaining -= len(chunk)
        return digest.hexdigest()

    echo = asyncio.create_task(read_all())
    peak = 0
    for piece in pieces:
        writer.write(piece)
        peak = max(peak, transport.get_write_buffer_size())
        await writer.drain()
        assert transport.get_write_buffer_size() <= 16 * 1024 or not protocol._paused
    assert peak > 64 * 1024
    # One big write at once, then writelines: both flushed completely.
    big = b"\xab" * 2_000_000
    writer.write(big)
    writer.writelines([b"a" * 10, bytearray(b"b" * 10), memoryview(b"c" * 10)])
    await writer.drain()
    assert await echo == expected
    assert await reader.readexactly(len(big) + 30) == big + b"a" * 10 + b"b" * 10 + b"c" * 10
    await wait_for(lambda: transport.get_write_buffer_size() == 0)
    writer.close()
    await writer.wait_closed()


async def test_pause_and_resume_reading(server, client_ctx) -> None:
    transport, recorder = await connect("socket", server.port, client_ctx)
    transport.pause_reading()
    assert not transport.is_reading()
    transport.write(b"y" * 300_000)
    await asyncio.sleep(0.2)  # the echo is back in the socket by now
    assert recorder.data == b""
    transport.resume_reading()
    assert transport.is_reading()
    await wait_for(lambda: len(recorder.data) == 300_000)
    transport.close()
    assert not transport.is_reading() and transport.is_closing()
    await recorder.lost


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buffer = bytearray(1000)  # smaller than a record: filled, then filled again
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_a_buffered_protocol_reads_into_its_own_buffer(server, client_ctx) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await open_socket_tls(
        loop, BufferedRecorder, HOST, server.port, wrap=wrapper(client_ctx)
    )
    payload = bytes(range(256)) * 400
    transport.write(payload)
    await wait_for(lambda: len(protocol.data) == len(payload))
    assert protocol.data == payload
    transport.close()
    assert await protocol.lost is None


# -- closing ------------------------------------------------------------------------------------


async def test_close_sends_close_notify_after_flushing_and_the_server_sees_a_clean_close(
    cert, client_ctx, tls_version
) -> None:
    server = ScriptServer(cert, tls_version, read_until_end)
    transport, recorder = await connect("socket", server.port, client_ctx)
    transport.write(b"z" * 3_000_000)  # still buffered when close() is called
    transport.close()
    assert transport.is_closing()
    transport.write(b"dropped after close")
    assert await recorder.lost is None
    assert recorder.events == ["made", "eof", ("lost", type(None))]
    assert await server.finished() == (3_000_000, "close_notify")


async def test_abort_closes_at_once_without_close_notify(cert, client_ctx, tls_version) -> None:
    server = ScriptServer(cert, tls_version, read_until_end)
    transport, recorder = await connect("socket", server.port, client_ctx)
    transport.write(b"lost")
    transport.abort()
    assert await recorder.lost is None
    assert recorder.events == ["made", ("lost", type(None))]
    ended = await server.finished()  # (a reset if the server's tickets were still unread)
    assert isinstance(ended, ConnectionResetError) or ended[1] == "eof"


@pytest.mark.parametrize("path", ["asyncio", "socket"])
@pytest.mark.parametrize("ending", ["close_notify", "tcp_end"])
async def test_eof_from_the_server(cert, client_ctx, tls_version, path, ending) -> None:
    # The data, then eof_received(), then connection_lost(None), as create_connection does -
    # with close_notify or without (a bare TCP end). A close_notify is answered with ours.
    def script(tls: ssl.SSLSocket) -> str:
        tls.sendall(b"bye")
        if ending == "tcp_end":
            return "closed"  # leaving the with block closes without close_notify
        tls.unwrap()  # returns once the client's close_notify came back
        return "answered"

    server = ScriptServer(cert, tls_version, script)
    _, recorder = await connect(path, server.port, client_ctx)
    assert await recorder.lost is None
    assert recorder.data == b"bye"
    expected = ["made", "data", "eof", ("lost", type(None))]
    if path == "socket":
        assert recorder.events == expected
    else:  # asyncio's own TLS may skip eof_received(): on Python 3.10, on uvloop without
        # close_notify; the socket transport follows 3.11+'s sslproto
        assert recorder.events in (expected, [e for e in expected if e != "eof"])
    ended = await server.finished()
    if path == "socket" or sys.version_info >= (3, 11):  # (3.10's sslproto does not answer)
        assert ended == ("answered" if ending == "close_notify" else "closed")


def type_of_loop() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize("path", ["asyncio", "socket"])
async def test_a_reset_mid_stream_loses_the_connection_with_connection_reset_error(
    cert, client_ctx, tls_version, path
) -> None:
    def script(tls: ssl.SSLSocket) -> str:
        tls.sendall(b"x")
        assert tls.recv(2) == b"go"
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return "reset"

    server = ScriptServer(cert, tls_version, script)
    transport, recorder = await connect(path, server.port, client_ctx)
    await wait_for(lambda: recorder.data == b"x")
    transport.write(b"go")
    assert isinstance(await recorder.lost, ConnectionResetError)
    assert recorder.events == ["made", "data", ("lost", ConnectionResetError)]
    assert await server.finished() == "reset"


async def test_close_gives_up_after_the_shutdown_timeout(cert, client_ctx, tls_version) -> None:
    release = threading.Event()

    def script(tls: ssl.SSLSocket) -> None:
        release.wait(10)  # never answers the close_notify

    server = ScriptServer(cert, tls_version, script)
    loop = asyncio.get_running_loop()
    transport, recorder = await open_socket_tls(
        loop, Recorder, HOST, server.port, wrap=wrapper(client_ctx), shutdown_timeout=0.2
    )
    transport.close()
    assert isinstance(await asyncio.wait_for(recorder.lost, 5), TimeoutError)
    release.set()
    await server.finished()


async def test_the_pools_connection_works_on_the_transport(server, client_ctx) -> None:
    # What the pool reads: Connection facts, the checkout probe, close_streams.
    from aiotlspool.connection import Connection

    reader, writer, protocol = await open_streams(server.port, client_ctx)
    tls = writer.get_extra_info("ssl_object")

    async def hook(conn: Connection) -> None: ...

    conn = Connection(
        endpoint=Endpoint.create(HOST, server.port, NAME),
        reader=reader,
        writer=writer,
        protocol=protocol,
        ssl_object=tls,
        session_reused=tls.session_reused,
        handshake_seconds=0.0,
        connect_seconds=0.0,
        created_at=0.0,
        close_hook=hook,
    )
    assert conn.tls_version == tls.version() and conn.is_reusable()
    assert conn._probe._fd == tls.fileno()  # the checkout probe asks the right socket
    writer.write(b"unread")
    await wait_for(lambda: conn.bytes_received == 6)  # read eagerly, as asyncio does
    await conn.close_streams(2.0)
    assert protocol.lost and writer.transport.is_closing()


class OpenSSLServer:
    """``openssl s_server -msg`` whose stdin we type into (its commands: ``r`` renegotiate,
    ``K`` key update asking for ours) and whose output (each TLS message) we collect."""

    def __init__(self, pem: str, version: str) -> None:
        flag = {"TLSv1.2": "-tls1_2", "TLSv1.3": "-tls1_3"}[version]
        command = ["openssl", "s_server", "-accept", f"{HOST}:0", "-cert", pem, "-msg", flag]
        if shutil.which("timeout"):
            command = ["timeout", "60", *command]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped as a group: timeout(1) and s_server together
        )
        self.lines: list[str] = []
        self.port = 0
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace")
            if match := re.match(rf"ACCEPT {re.escape(HOST)}:(\d+)", line):
                self.port = int(match.group(1))
            self.lines.append(line)

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)
        self.thread.join(5)  # (s_server gone: its output ends)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.skipif(not openssl_available(), reason="needs the openssl command")
async def test_a_renegotiation_or_key_update_from_the_server_mid_stream(
    cert, client_ctx, tls_version, tmp_path
) -> None:
    # TLS 1.2: the server renegotiates (SSL_read must write a ClientHello, SSL_write may have
    # to read first); TLS 1.3: it updates its keys and asks for ours (SSL_read must write).
    # Data keeps flowing both ways, and the close is clean.
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = OpenSSLServer(str(pem), tls_version)
    try:
        await wait_for(lambda: server.port != 0, 10)
        transport, recorder = await connect("socket", server.port, client_ctx)
        await wait_for(lambda: server.count("Finished") >= 2, 10)  # its handshake is done
        command, evidence = ("r", "ClientHello") if tls_version == "TLSv1.2" else ("K", "KeyUpdate")
        server.type(f"{command}\n")
        await wait_for(lambda: server.count(evidence) >= 1, 10)
        await asyncio.sleep(0.05)  # (read by the transport meanwhile)
        transport.write(b"ping\n")
        await wait_for(lambda: server.count("ping") == 1, 10)
        # Our ClientHello went out from inside SSL_read; our KeyUpdate before the data.
        assert server.count(evidence) >= 2
        server.type("pong\n")
        await wait_for(lambda: recorder.data == b"pong\n", 10)
        transport.close()
        assert await asyncio.wait_for(recorder.lost, 10) is None
    finally:
        server.stop()


# -- connect failures: the exceptions of create_connection ----------------------------------------


def other_ca_context(tls_version: str) -> ssl.SSLContext:
    return client_context(trustme.CA(), tls_version)


@pytest.fixture
def any_ctx(ca: trustme.CA) -> ssl.SSLContext:
    """A client context for tests where the TLS version plays no part."""
    return client_context(ca)


@pytest.mark.parametrize("failure", ["wrong_ca", "wrong_name"])
async def test_certificate_failures_raise_what_create_connection_raises(
    server, client_ctx, tls_version, failure
) -> None:
    baseline = await fd_baseline()
    ctx = other_ca_context(tls_version) if failure == "wrong_ca" else client_ctx
    name = "other.test" if failure == "wrong_name" else NAME
    errors = []
    for path in ("asyncio", "socket"):
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await connect(path, server.port, ctx, name)
        errors.append(info.value)
    assert errors[0].verify_code == errors[1].verify_code
    assert errors[0].verify_message == errors[1].verify_message
    endpoint = Endpoint.create(HOST, server.port, name)
    assert isinstance(translate(errors[1], endpoint), CertificateError)
    assert await settle_fds(baseline) == baseline


async def test_connection_refused_as_create_connection(any_ctx) -> None:
    port = unused_port()
    errors = []
    for path in ("asyncio", "socket"):
        with pytest.raises(ConnectionRefusedError) as info:
            await connect(path, port, any_ctx)
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1]) is ConnectionRefusedError
    if type_of_loop().startswith("asyncio"):
        assert str(errors[0]) == str(errors[1])
    loop = asyncio.get_running_loop()
    # A name: every address is tried (localhost may be ::1 and 127.0.0.1), errors combined.
    with pytest.raises(OSError, match=r"Connect call failed|Multiple exceptions"):
        await open_socket_tls(loop, Recorder, "localhost", port, wrap=wrapper(any_ctx))


@pytest.mark.parametrize("handler", [plain_http, ssh_banner])
async def test_a_peer_that_is_not_tls_fails_as_with_create_connection(any_ctx, handler) -> None:
    baseline = await fd_baseline()
    async with running_server(None, handler) as srv:
        errors = []
        for path in ("asyncio", "socket"):
            with pytest.raises(ssl.SSLError) as info:
                await connect(path, srv.port, any_ctx)
            errors.append(info.value)
    assert type(errors[0]) is type(errors[1])
    assert getattr(errors[0], "reason", None) == getattr(errors[1], "reason", None)
    endpoint = Endpoint.create(HOST, srv.port, NAME)
    assert isinstance(translate(errors[1], endpoint), TLSHandshakeError)
    assert await settle_fds(baseline) == baseline


async def test_handshake_timeout_against_a_server_that_never_answers(any_ctx) -> None:
    baseline = await fd_baseline()
    async with running_server(None, never_answer) as srv:
        for path in ("asyncio", "socket"):
            with pytest.raises(ConnectionAbortedError, match=r"longer than 0\.1 seconds"):
                await connect(path, srv.port, any_ctx, timeout=0.1)
    assert await settle_fds(baseline) == baseline


async def test_a_wrap_that_does_not_leave_the_handshake_to_the_transport_is_refused(
    any_ctx,
) -> None:
    baseline = await fd_baseline()
    loop = asyncio.get_running_loop()
    async with running_server(None, never_answer) as srv:
        with pytest.raises(ValueError, match="do_handshake_on_connect"):
            await open_socket_tls(
                loop,
                Recorder,
                HOST,
                srv.port,
                wrap=lambda sock: any_ctx.wrap_socket(sock, server_hostname=NAME),
            )
        with pytest.raises(TypeError, match=r"ssl\.SSLSocket"):
            await open_socket_tls(loop, Recorder, HOST, srv.port, wrap=lambda sock: sock)
    assert await settle_fds(baseline) == baseline


async def test_a_peer_closing_during_the_handshake_is_a_connection_reset(any_ctx) -> None:
    for path in ("asyncio", "socket"):
        listener = socket.create_server((HOST, 0))
        port = listener.getsockname()[1]

        def close_after_hello(listener: socket.socket = listener) -> None:
            raw, _ = listener.accept()
            raw.recv(4096)  # the ClientHello
            raw.close()
            listener.close()

        thread = threading.Thread(target=close_after_hello, daemon=True)
        thread.start()
        with pytest.raises(ConnectionResetError):
            await connect(path, port, any_ctx)
        await asyncio.to_thread(thread.join, 5)


async def test_a_loop_with_add_reader_is_supported() -> None:
    assert socket_tls_supported(asyncio.get_running_loop())  # asyncio's selector loop, uvloop


def test_a_loop_without_add_reader_is_refused_before_any_io() -> None:
    class NoReaders(asyncio.SelectorEventLoop):
        add_reader = asyncio.AbstractEventLoop.add_reader  # as the ProactorEventLoop has it

    loop = NoReaders()
    try:
        assert not socket_tls_supported(loop)
        wrapped: list[socket.socket] = []
        with pytest.raises(SocketTLSUnsupported, match="create_connection"):
            loop.run_until_complete(
                open_socket_tls(loop, Recorder, HOST, 1, wrap=wrapped.append)  # type: ignore[arg-type]
            )
        assert wrapped == []
    finally:
        loop.close()


# -- cancellation ---------------------------------------------------------------------------------


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: a TCP connect to it hangs (Linux drops the SYN)."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect((HOST, port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_cancelled_during_the_tcp_connect_leaks_no_socket(any_ctx) -> None:
    loop = asyncio.get_running_loop()
    with full_backlog() as port:
        baseline = await fd_baseline()
        wrapped: list[socket.socket] = []

        def wrap(sock: socket.socket) -> ssl.SSLSocket:
            wrapped.append(sock)
            return wrapper(any_ctx)(sock)

        task = asyncio.create_task(open_socket_tls(loop, Recorder, HOST, port, wrap=wrap))
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wrapped == []  # it was in the TCP connect
        assert await settle_fds(baseline) == baseline


async def test_cancelled_during_the_handshake_leaks_no_socket(any_ctx) -> None:
    loop = asyncio.get_running_loop()
    baseline = await fd_baseline()
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    async with running_server(None, never_answer) as srv:
        task = asyncio.create_task(
            open_socket_tls(loop, factory, HOST, srv.port, wrap=wrapper(any_ctx))
        )
        await asyncio.sleep(0.1)
        assert len(made) == 1 and not task.done()  # past the TCP connect, in the handshake
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert made[0].events == []  # never connected
    assert await settle_fds(baseline) == baseline


async def test_cancelled_at_every_step_of_a_connect_leaks_no_socket(server, client_ctx) -> None:
    # Cancelled after 0, 1, 2, ... loop iterations: in the TCP connect, between it and the
    # handshake, in each handshake wait, or just done (then closed here).
    loop = asyncio.get_running_loop()
    baseline = await fd_baseline()
    outcomes = set()
    for steps in range(16):
        task = asyncio.create_task(
            open_socket_tls(loop, Recorder, HOST, server.port, wrap=wrapper(client_ctx))
        )
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            transport, recorder = await task
        except asyncio.CancelledError:
            outcomes.add("cancelled")
        else:
            outcomes.add("connected")
            transport.abort()
            await recorder.lost
    assert "cancelled" in outcomes
    assert await settle_fds(baseline) == baseline


# -- sessions -------------------------------------------------------------------------------------


async def test_a_second_connect_resumes_with_the_stdlib_session(server, client_ctx) -> None:
    reader, writer, _ = await open_streams(server.port, client_ctx)
    writer.write(b"ping")
    await writer.drain()
    await reader.readexactly(4)  # a TLS 1.3 ticket comes before the data
    session = writer.get_extra_info("ssl_object").session
    writer.close()
    await writer.wait_closed()
    reader, writer, _ = await open_streams(server.port, client_ctx, session=session)
    assert writer.get_extra_info("ssl_object").session_reused
    await wait_for(lambda: server.resumed == 1)
    writer.close()
    await writer.wait_closed()


async def test_sessions_arrive_without_the_application_reading(ca, cert, tls_version) -> None:
    # The native engine watches the SSLSocket as it watches an SSLObject: TLS 1.2's session
    # arrives inside the handshake, TLS 1.3's two tickets right after it, read eagerly by the
    # transport while the application reads nothing. Each one resumes a later connection.
    engine = select_engine("native")
    ctx = client_context(ca, tls_version)
    loop = asyncio.get_running_loop()
    arrived: list[Any] = []

    def watching(sock: socket.socket) -> ssl.SSLSocket:
        tls = wrapper(ctx)(sock)
        assert engine.watch(tls, arrived.append)  # type: ignore[arg-type]
        return tls

    async with running_server(server_context(cert, tls_version, num_tickets=2)) as srv:
        transport, recorder = await open_socket_tls(loop, Recorder, HOST, srv.port, wrap=watching)
        if tls_version == "TLSv1.2":
            assert len(arrived) == 1  # before open_socket_tls returned
        else:
            await wait_for(lambda: len(arrived) == 2)
            assert transport.get_extra_info("ssl_object").session.has_ticket
        assert recorder.data == b""
        for session in arrived:

            def offering(sock: socket.socket, session: Any = session) -> ssl.SSLSocket:
                tls = wrapper(ctx)(sock)
                assert engine.offer(tls, session)  # type: ignore[arg-type]
                return tls

            again, other = await open_socket_tls(loop, Recorder, HOST, srv.port, wrap=offering)
            assert again.get_extra_info("ssl_object").session_reused
            again.close()
            await other.lost
        transport.close()
        await recorder.lost
        await wait_for(lambda: srv.resumed == len(arrived))


async def test_before_close_reads_the_tls_state_after_the_close_notify_exchange(
    server, client_ctx, tls_version
) -> None:
    # An SSLObject is still readable after close() (where the connector captures a TLS 1.3
    # session it could not watch); an SSLSocket forgets its TLS state when closed. before_close
    # is its last moment: after the close_notify exchange (tickets read), before the close.
    loop = asyncio.get_running_loop()
    seen: list[tuple[Any, ...]] = []

    def before_close(tls: ssl.SSLSocket) -> None:
        seen.append((tls.cipher(), tls.session, tls.fileno() >= 0))

    transport, recorder = await open_socket_tls(
        loop, Recorder, HOST, server.port, wrap=wrapper(client_ctx), before_close=before_close
    )
    transport.close()  # at once: a TLS 1.3 ticket may only be read by the shutdown
    await recorder.lost
    assert len(seen) == 1
    cipher, session, open_then = seen[0]
    assert cipher[1] == tls_version and session is not None and open_then
    assert transport.get_extra_info("ssl_object").session is None  # forgotten once closed
    again, other = await open_socket_tls(
        loop, Recorder, HOST, server.port, wrap=wrapper(client_ctx, session=session)
    )
    assert again.get_extra_info("ssl_object").session_reused
    again.abort()
    await other.lost


# -- the rest of the Transport API ----------------------------------------------------------------


async def test_transport_api_details(server, client_ctx, caplog) -> None:
    transport, recorder = await connect("socket", server.port, client_ctx)
    assert not transport.can_write_eof()
    with pytest.raises(NotImplementedError):
        transport.write_eof()  # TLS has no half-close
    with pytest.raises(TypeError):
        transport.write("text")
    transport.write(b"")
    with pytest.raises(ValueError, match="must be >="):
        transport.set_write_buffer_limits(high=1, low=2)
    transport.set_write_buffer_limits(high=100)
    assert transport.get_write_buffer_limits() == (25, 100)
    transport.set_write_buffer_limits(low=10)
    assert transport.get_write_buffer_limits() == (10, 40)
    replacement = Recorder()
    transport.set_protocol(replacement)
    assert transport.get_protocol() is replacement
    assert "open" in repr(transport)
    transport.close()
    transport.close()  # once
    for _ in range(7):
        transport.write(b"x")  # dropped; asyncio's warning after 5
    assert "SSL connection is closed" in caplog.text
    assert await replacement.lost is None
    assert recorder.events == ["made"]
    assert "closed" in repr(transport) and transport.get_protocol() is None


def test_a_bad_transport_override_is_refused_when_the_pool_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOTLSPOOL_TLS_TRANSPORT", "fast")
    with pytest.raises(ValueError, match="AIOTLSPOOL_TLS_TRANSPORT"):
        Pool(ssl.create_default_context())
    monkeypatch.setenv("AIOTLSPOOL_TLS_TRANSPORT", "asyncio")
    assert (
        Pool(ssl.create_default_context(), tls_transport="socket")._connector.transport_choice
        == "socket"
    )
