"""``Libssl.watch``: sessions captured through OpenSSL's new-session callback, real TLS.

Self-contained (no conftest, no helpers): handshakes run in memory between a client
and a trustme server context, plus one asyncio client/server pair on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import ssl
import subprocess
import sys
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

import pytest
import trustme

from aiotlspool.engines import session_callback
from aiotlspool.engines.libssl import NativeSession, NativeUnavailable

from ..support.memory_tls import TLS12, TLS13, Conn, libssl_or_skip_module

LIB = libssl_or_skip_module()
_GET_MODE, _SET_MODE = 45, 44
_CLIENT, _NO_INTERNAL_STORE = 0x1, 0x200

CA = trustme.CA()
CERT = CA.issue_cert("localhost")


def server_context(version: ssl.TLSVersion, num_tickets: int = 2) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CERT.configure_cert(ctx)
    ctx.minimum_version = ctx.maximum_version = version
    if version is TLS13:
        ctx.num_tickets = num_tickets
    return ctx


def client_context(
    version: ssl.TLSVersion, protocol: int = ssl.PROTOCOL_TLS_CLIENT
) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl.PROTOCOL_TLS
        ctx = ssl.SSLContext(protocol)
    if protocol == ssl.PROTOCOL_TLS:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        CA.configure_trust(ctx)
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


class Pair:
    """A server context and a client context pinned to one TLS version."""

    def __init__(self, version: ssl.TLSVersion, num_tickets: int = 2) -> None:
        self.server_ctx = server_context(version, num_tickets)
        self.client_ctx = client_context(version)

    def connect(self, client_ctx: ssl.SSLContext | None = None, **kw: Any) -> Conn:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = (client_ctx or self.client_ctx).wrap_bio(
            c_in, c_out, server_hostname="localhost", **kw
        )
        server = self.server_ctx.wrap_bio(s_in, s_out, server_side=True)
        return Conn(client, server, c_in, c_out, s_in, s_out)

    def watched(self, sink: list[NativeSession], session: NativeSession | None = None) -> Conn:
        """A watched connection (offering ``session``), handshaken and with its tickets read."""
        conn = self.connect()
        if session is not None:
            LIB.apply(conn.client, session)
        assert LIB.watch(conn.client, sink.append)
        conn.handshake()
        conn.client_read()
        return conn


def context_state(ctx: ssl.SSLContext) -> tuple[int, int | None]:
    """(session cache mode, new-session callback address) of the context's SSL_CTX."""
    sslctx = LIB.context_pointer(ctx)
    return LIB._fns.ctx_ctrl(sslctx, _GET_MODE, 0, None), LIB._fns.ctx_get_new_cb(sslctx)


# --- how many sessions, and when ------------------------------------------------------


@pytest.mark.parametrize("num_tickets", [2, 4])
def test_tls13_full_handshake_reports_each_ticket_after_the_handshake(num_tickets: int) -> None:
    pair = Pair(TLS13, num_tickets)
    got: list[NativeSession] = []
    conn = pair.connect()
    assert LIB.watch(conn.client, got.append) is True
    conn.handshake()
    assert got == []  # tickets come after the handshake, in the first read
    conn.client_read()
    assert len(got) == num_tickets
    assert all(s.has_ticket and s.is_resumable() for s in got)
    assert all(s.protocol_version == 0x0304 for s in got)
    assert len({s.session_id for s in got}) == num_tickets


def test_tls13_resumption_reports_one_ticket() -> None:
    pair = Pair(TLS13)
    first: list[NativeSession] = []
    pair.watched(first)
    again: list[NativeSession] = []
    conn = pair.watched(again, session=first[0])
    assert conn.client.session_reused
    assert len(again) == 1
    assert again[0].session_id != first[0].session_id


def test_tls12_full_handshake_reports_one_session_inside_the_handshake() -> None:
    pair = Pair(TLS12)
    got: list[NativeSession] = []
    conn = pair.connect()
    assert LIB.watch(conn.client, got.append)
    conn.handshake()
    assert len(got) == 1
    assert got[0].protocol_version == 0x0303 and got[0].has_ticket
    conn.client_read()
    assert len(got) == 1


def test_tls12_resumption_reports_nothing() -> None:
    pair = Pair(TLS12)
    first: list[NativeSession] = []
    pair.watched(first)
    again: list[NativeSession] = []
    conn = pair.watched(again, session=first[0])
    assert conn.client.session_reused
    assert again == []


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_each_captured_ticket_resumes_its_own_connection(version: ssl.TLSVersion) -> None:
    pair = Pair(version, num_tickets=4)
    tickets: list[NativeSession] = []
    pair.watched(tickets)
    assert len(tickets) == (4 if version is TLS13 else 1)
    for ticket in tickets:
        conn = pair.connect()
        LIB.apply(conn.client, ticket)
        conn.handshake()
        assert conn.client.session_reused
    # And through another client context: NativeSessions are not bound to one.
    conn = pair.connect(client_context(version))
    LIB.apply(conn.client, tickets[-1])
    conn.handshake()
    assert conn.client.session_reused


def test_data_flows_on_a_watched_connection() -> None:
    got: list[NativeSession] = []
    conn = Pair(TLS13).watched(got)
    assert conn.echo(b"ping") == b"ping"
    assert len(got) == 2


# --- the context, and connections that were not watched -------------------------------


def test_context_gets_client_no_internal_store_and_our_callback_once() -> None:
    pair = Pair(TLS13)
    mode, callback = context_state(pair.client_ctx)
    assert (mode, callback) == (0x2, None)  # a fresh client context, as documented
    for _ in range(3):
        pair.watched([])
    assert context_state(pair.client_ctx) == (
        0x2 | _CLIENT | _NO_INTERNAL_STORE,
        session_callback.CALLBACK_ADDRESS,
    )


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_unwatched_connections_on_the_same_context_are_unaffected(
    version: ssl.TLSVersion,
) -> None:
    pair = Pair(version)
    watched: list[NativeSession] = []
    pair.watched(watched)  # installs the callback on pair.client_ctx
    count = len(watched)
    for _ in range(3):
        conn = pair.connect()
        conn.handshake()
        conn.client_read()
        session = conn.client.session
        assert session is not None and session.has_ticket
        resumed = pair.connect(session=session)
        resumed.handshake()
        assert resumed.client.session_reused
        # The same stdlib session once more, after its copy was used.
        again = pair.connect(session=session)
        again.handshake()
        assert again.client.session_reused
    assert len(watched) == count  # nothing from other connections reached on_session
    assert pair.client_ctx.session_stats()["number"] == 0  # nothing stored in the cache


def _records(data: bytes) -> list[bytes]:
    """Split a byte stream into TLS records."""
    records = []
    while data:
        size = 5 + int.from_bytes(data[3:5], "big")
        records.append(data[:size])
        data = data[size:]
    return records


def test_an_unwatched_session_read_between_two_tickets_still_resumes() -> None:
    pair = Pair(TLS13)
    pair.watched([])
    conn = pair.connect()
    conn.handshake()
    tickets = _records(conn.c_in.read())
    assert len(tickets) == 2
    conn.c_in.write(tickets[0])
    conn.client_read()
    between = conn.client.session
    native_between = LIB.capture(conn.client)
    conn.c_in.write(tickets[1])
    conn.client_read()
    assert between is not None and native_between is not None
    resumed = pair.connect(session=between)
    resumed.handshake()
    assert resumed.client.session_reused
    assert native_between.is_resumable()


def test_a_foreign_callback_is_never_replaced() -> None:
    ctx = client_context(TLS13)
    sslctx = LIB.context_pointer(ctx)
    LIB._fns.ctx_set_new_cb(sslctx, _FOREIGN_ADDRESS)
    LIB._fns.ctx_ctrl(sslctx, _SET_MODE, _CLIENT | _NO_INTERNAL_STORE, None)
    pair = Pair(TLS13)
    got: list[NativeSession] = []
    conn = pair.connect(ctx)
    before = len(_foreign_calls)
    assert LIB.watch(conn.client, got.append) is False
    conn.handshake()
    conn.client_read()
    assert len(_foreign_calls) - before == 2
    assert got == []
    assert context_state(ctx) == (_CLIENT | _NO_INTERNAL_STORE, _FOREIGN_ADDRESS)


_foreign_calls: list[int] = []


def _foreign(ssl_ptr: int | None, session_ptr: int | None) -> int:
    _foreign_calls.append(session_ptr or 0)
    return 0


# Module level: a context may keep pointing at it as long as this module lives.
_FOREIGN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(_foreign)
_FOREIGN_ADDRESS = ctypes.cast(_FOREIGN, ctypes.c_void_p).value or 0


def test_a_changed_cache_mode_makes_watch_decline() -> None:
    pair = Pair(TLS13)
    pair.watched([])
    sslctx = LIB.context_pointer(pair.client_ctx)
    LIB._fns.ctx_ctrl(sslctx, _SET_MODE, 0x2, None)  # someone switched client reports off
    conn = pair.connect()
    assert LIB.watch(conn.client, lambda s: None) is False
    assert context_state(pair.client_ctx) == (0x2, session_callback.CALLBACK_ADDRESS)


def test_a_context_that_may_serve_is_left_alone() -> None:
    ctx = client_context(TLS13, ssl.PROTOCOL_TLS)
    pair = Pair(TLS13)
    conn = pair.connect(ctx)
    got: list[NativeSession] = []
    assert LIB.watch(conn.client, got.append) is False
    conn.handshake()
    conn.client_read()
    assert got == []
    assert context_state(ctx) == (0x2, None)
    server_side = pair.connect()
    assert LIB.watch(server_side.server, got.append) is False
    assert context_state(pair.server_ctx)[1] is None


# --- misuse ---------------------------------------------------------------------------


def test_watch_after_the_handshake_started_is_a_value_error() -> None:
    pair = Pair(TLS13)
    conn = pair.connect()
    with pytest.raises(ssl.SSLWantReadError):
        conn.client.do_handshake()
    with pytest.raises(ValueError, match="before the handshake"):
        LIB.watch(conn.client, lambda s: None)
    done = pair.connect()
    done.handshake()
    with pytest.raises(ValueError, match="before the handshake"):
        LIB.watch(done.client, lambda s: None)


@pytest.mark.parametrize("thing", [object(), ssl.MemoryBIO(), None])
def test_watch_refuses_non_ssl_objects(thing: object) -> None:
    with pytest.raises(NativeUnavailable):
        LIB.watch(thing, lambda s: None)  # type: ignore[arg-type]


def test_watch_refuses_a_non_callable() -> None:
    with pytest.raises(TypeError):
        LIB.watch(Pair(TLS13).connect().client, None)  # type: ignore[arg-type]


def test_watching_again_replaces_on_session() -> None:
    pair = Pair(TLS13)
    first: list[NativeSession] = []
    second: list[NativeSession] = []
    conn = pair.connect()
    assert LIB.watch(conn.client, first.append)
    assert LIB.watch(conn.client, second.append)
    conn.handshake()
    conn.client_read()
    assert (len(first), len(second)) == (0, 2)


# --- failures inside the callback -----------------------------------------------------


def test_an_on_session_that_raises_is_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[NativeSession] = []

    def boom(session: NativeSession) -> None:
        calls.append(session)
        raise RuntimeError("on_session failed")

    pair = Pair(TLS13)
    conn = pair.connect()
    assert LIB.watch(conn.client, boom)
    with caplog.at_level(logging.DEBUG, logger="aiotlspool"):
        conn.handshake()
        assert conn.client_read() == b""
        assert conn.echo(b"still fine") == b"still fine"
    assert len(calls) == 2
    assert all(s.is_resumable() for s in calls)
    raised = [r for r in caplog.records if r.name == "aiotlspool" and r.exc_info]
    assert len(raised) == 2 and raised[0].levelno == logging.DEBUG
    # No stale OpenSSL error left behind that a later operation could report.
    assert conn.echo(b"again") == b"again"


def test_an_on_session_raising_base_exceptions_is_swallowed() -> None:
    def stop(session: NativeSession) -> None:
        raise SystemExit(3)

    pair = Pair(TLS12)
    conn = pair.connect()
    assert LIB.watch(conn.client, stop)
    conn.handshake()  # the callback runs in here for TLS 1.2
    assert conn.echo(b"ok") == b"ok"


def test_an_sslobject_deleted_before_its_tickets_arrive_is_ignored() -> None:
    pair = Pair(TLS13)
    got: list[NativeSession] = []
    conn = pair.connect()
    assert LIB.watch(conn.client, got.append)
    conn.handshake()
    owner = weakref.ref(conn.client)
    sslobj = conn.client._sslobj  # type: ignore[attr-defined]
    gc.collect()
    registered = session_callback.watched_count()
    del conn.client
    assert owner() is None
    assert session_callback.watched_count() == registered - 1
    # The SSL* lives on in the bare _ssl object; its tickets reach the callback, unwatched.
    with contextlib.suppress(ssl.SSLWantReadError):
        sslobj.read(1024)
    assert sslobj.session.has_ticket  # the tickets were processed
    assert got == []


def test_a_registration_with_another_sslobj_is_ignored() -> None:
    # A stale entry: the SSLObject lives, but the registered _sslobj is not its current one.
    pair = Pair(TLS13)
    conn = pair.connect()
    got: list[NativeSession] = []
    decoy = object()
    session_callback.register(
        LIB._fns, LIB.ssl_pointer(conn.client), conn.client, decoy, got.append
    )
    conn.handshake()
    conn.client_read()
    assert got == []


class _Owner:
    """Any weak-referenceable object, standing in for an SSLObject."""


def test_an_old_registration_dying_never_removes_a_newer_one() -> None:
    address = 0x10  # never a real SSL*: only the map is exercised
    first, second = _Owner(), _Owner()
    session_callback.register(LIB._fns, address, first, object(), lambda s: None)
    session_callback.register(LIB._fns, address, second, object(), lambda s: None)
    entry = session_callback._watched[address]
    del first
    gc.collect()
    assert session_callback._watched.get(address) is entry
    del second
    gc.collect()
    assert address not in session_callback._watched


def test_registrations_do_not_keep_connections_alive() -> None:
    before = session_callback.watched_count()
    pair = Pair(TLS13)
    refs = []
    for _ in range(20):
        conn = pair.watched([])
        refs.append(weakref.ref(conn.client))
        del conn
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert session_callback.watched_count() == before


# --- threads --------------------------------------------------------------------------


def test_concurrent_watchers_install_once_and_all_get_their_tickets() -> None:
    pair = Pair(TLS13)
    results: list[tuple[bool, int]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            got: list[NativeSession] = []
            conn = pair.connect()
            ok = LIB.watch(conn.client, got.append)
            conn.handshake()
            conn.client_read()
            results.append((ok, len(got)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(True, 2)] * 40
    assert context_state(pair.client_ctx)[1] == session_callback.CALLBACK_ADDRESS


# --- a real asyncio connection --------------------------------------------------------


class WatchingContext(ssl.SSLContext):
    """Watches every connection asyncio makes, and offers ``offer`` when set."""

    sink: list[NativeSession]
    offer: NativeSession | None = None

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        obj = super().wrap_bio(*args, **kwargs)
        if self.offer is not None:
            LIB.apply(obj, self.offer)
        assert LIB.watch(obj, self.sink.append)
        return obj


def test_asyncio_connections_deliver_tickets_without_reading() -> None:
    async def main() -> tuple[int, bool, int]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                writer.write(await reader.read(100))
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(TLS13))
        port = server.sockets[0].getsockname()[1]
        ctx = WatchingContext(ssl.PROTOCOL_TLS_CLIENT)
        CA.configure_trust(ctx)
        ctx.sink = []
        async with server:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            for _ in range(100):  # asyncio reads eagerly: no application read needed
                if len(ctx.sink) == 2:
                    break
                await asyncio.sleep(0.01)
            full = len(ctx.sink)
            writer.close()
            await writer.wait_closed()
            ctx.offer = ctx.sink[-1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            writer.write(b"x")
            assert await reader.read(1) == b"x"
            reused = writer.get_extra_info("ssl_object").session_reused
            writer.close()
            await writer.wait_closed()
        return full, reused, len(ctx.sink) - full

    full, reused, after_resumption = asyncio.run(main())
    assert (full, reused, after_resumption) == (2, True, 1)


# --- interpreter exit -----------------------------------------------------------------

PACKAGE_ROOT = str(Path(session_callback.__file__).resolve().parents[2])

# A daemon thread handshakes (watched, TLS 1.3 so callbacks fire inside read()) while the
# main thread exits; half the runs also keep the last SSLObjects around in a global.
_EXIT_SCRIPT = """
import contextlib, os, ssl, sys, threading
import trustme
from aiotlspool.engines.libssl_load import load_libssl


lib = load_libssl()
ca = trustme.CA()
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ca.issue_cert("localhost").configure_cert(server_ctx)
server_ctx.num_tickets = 4
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ca.configure_trust(client_ctx)
KEEP = []
started = threading.Event()

def one(sink):
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="localhost")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    if not lib.watch(client, sink.append):
        os._exit(5)
    for _ in range(10):
        for obj, out, peer_in in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
            peer_in.write(out.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read(1)
    return client

def hammer():
    try:
        while True:
            sink = []
            client = one(sink)
            if len(sink) != 4:
                os._exit(3)
            KEEP[:] = [client, sink]
            started.set()
    except BaseException:
        os._exit(4)

sys.setswitchinterval(1e-6)
for _ in range(int(sys.argv[1])):
    threading.Thread(target=hammer, daemon=True).start()
started.wait()
"""


def test_daemon_threads_handshaking_while_the_interpreter_exits(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    for threads in (1, 3, 1, 3, 1, 3):
        result = subprocess.run(
            [sys.executable, str(script), str(threads)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (threads, result.returncode, result.stderr)
        assert "Exception ignored" not in result.stderr, result.stderr


def test_a_context_reassigned_before_watch_reports_through_the_original_one() -> None:
    # Documented limitation: OpenSSL calls the callback of the SSL*'s session_ctx (the
    # context it was created with), which watch() cannot see.
    pair = Pair(TLS13)
    original, other = client_context(TLS13), client_context(TLS13)
    for install_on_original, expected in ((False, 0), (True, 2)):
        if install_on_original:
            probe = pair.connect(original)
            assert LIB.watch(probe.client, lambda s: None)
        conn = pair.connect(original)
        conn.client.context = other
        got: list[NativeSession] = []
        assert LIB.watch(conn.client, got.append) is True
        conn.handshake()
        conn.client_read()
        assert len(got) == expected
