"""The ctypes binding to libssl, exercised with real in-memory TLS handshakes."""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import datetime
import gc
import os
import socket
import ssl
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotlspool.engines import libssl_load as _loader
from aiotlspool.engines.libssl import MAX_DER_SIZE, Libssl, NativeSession, NativeUnavailable
from aiotlspool.engines.libssl_load import load_libssl

from ..support.memory_tls import TLS12, TLS13, Conn, libssl_or_skip_module

LIB = libssl_or_skip_module()


@dataclass
class Pki:
    ca: trustme.CA
    cert: trustme.LeafCert


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    return Pki(ca, ca.issue_cert("localhost"))


class Endpoint:
    """A server context and a client context pinned to one TLS version."""

    def __init__(self, pki: Pki, version: ssl.TLSVersion) -> None:
        self.pki = pki
        self.version = version
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pki.cert.configure_cert(self.server_ctx)
        self.server_ctx.minimum_version = self.server_ctx.maximum_version = version
        self.client_ctx = self.new_client_ctx()

    def new_client_ctx(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.pki.ca.configure_trust(ctx)
        ctx.minimum_version = ctx.maximum_version = self.version
        return ctx

    def connect(self, client_ctx: ssl.SSLContext | None = None) -> Conn:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = (client_ctx or self.client_ctx).wrap_bio(c_in, c_out, server_hostname="localhost")
        server = self.server_ctx.wrap_bio(s_in, s_out, server_side=True)
        return Conn(client, server, c_in, c_out, s_in, s_out)

    def full(self) -> Conn:
        """A completed handshake whose client has read the server's tickets."""
        conn = self.connect()
        conn.handshake()
        conn.client_read()
        return conn


@pytest.fixture(scope="module")
def tls12(pki: Pki) -> Endpoint:
    return Endpoint(pki, TLS12)


@pytest.fixture(scope="module")
def tls13(pki: Pki) -> Endpoint:
    return Endpoint(pki, TLS13)


@pytest.fixture(params=[TLS12, TLS13], ids=["tls12", "tls13"])
def endpoint(request: pytest.FixtureRequest, tls12: Endpoint, tls13: Endpoint) -> Endpoint:
    return tls12 if request.param is TLS12 else tls13


@pytest.fixture(scope="module")
def der13(tls13: Endpoint) -> bytes:
    session = LIB.capture(tls13.full().client)
    assert session is not None
    return session.to_der()


def captured(endpoint: Endpoint) -> NativeSession:
    session = LIB.capture(endpoint.full().client)
    assert session is not None
    return session


def resumes(
    endpoint: Endpoint, session: NativeSession, client_ctx: ssl.SSLContext | None = None
) -> bool:
    conn = endpoint.connect(client_ctx)
    LIB.apply(conn.client, session)
    conn.handshake()
    return conn.client.session_reused


# --- loading --------------------------------------------------------------------------


def test_load_is_cached_across_threads() -> None:
    results: list[Libssl] = []
    threads = [threading.Thread(target=lambda: results.append(load_libssl())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r is LIB for r in results)


def test_load_binds_the_libssl_mapped_for_ssl() -> None:
    assert "libssl" in LIB.libssl_path
    assert "libcrypto" in LIB.libcrypto_path


def test_load_reports_missing_proc_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_loader, "_MAPS_PATH", "/nonexistent/maps")
    with pytest.raises(NativeUnavailable, match="/proc/self/maps"):
        _loader._load_uncached()


def test_load_caches_the_failure_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_loader, "_load_outcome", "a cached reason.")
    for _ in range(2):
        with pytest.raises(NativeUnavailable, match=r"^a cached reason\.$"):
            load_libssl()


def test_load_reports_a_statically_linked_ssl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Pretend every address belongs to _ssl itself, as with a static OpenSSL.
    maps = tmp_path / "maps"
    maps.write_text(f"0-ffffffffffffffff r-xp 00000000 00:00 1 {_ssl.__file__}\n")
    monkeypatch.setattr(_loader, "_MAPS_PATH", str(maps))
    with pytest.raises(NativeUnavailable, match="statically"):
        _loader._load_uncached()


def test_load_reports_symbols_outside_any_mapping(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    maps = tmp_path / "maps"
    maps.write_text("")
    monkeypatch.setattr(_loader, "_MAPS_PATH", str(maps))
    with pytest.raises(NativeUnavailable, match="not in any mapped file"):
        _loader._load_uncached()


def test_load_reports_a_version_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_NUMBER", 0x10101000)
    with pytest.raises(NativeUnavailable, match="version"):
        _loader._load_uncached()


def test_load_refuses_other_implementations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.implementation, "name", "pypy")
    with pytest.raises(NativeUnavailable, match="not CPython"):
        _loader._load_uncached()


def test_a_fresh_load_passes_its_self_check() -> None:
    fresh = _loader._load_uncached()
    assert fresh is not LIB
    assert fresh.libssl_path == LIB.libssl_path


def test_load_reports_a_type_too_small_for_the_layout() -> None:
    with pytest.raises(NativeUnavailable, match="smaller"):
        _loader._check_layout(object)


# --- validation of the SSL* -----------------------------------------------------------


@pytest.mark.parametrize(
    "thing",
    [object(), ssl.MemoryBIO(), None, "text", type("Fake", (), {"_sslobj": object()})()],
    ids=["object", "memorybio", "none", "str", "fake-sslobj"],
)
def test_non_ssl_objects_are_refused_without_crashing(thing: object) -> None:
    with pytest.raises(NativeUnavailable):
        LIB.ssl_pointer(thing)  # type: ignore[arg-type]
    with pytest.raises(NativeUnavailable):
        LIB.capture(thing)  # type: ignore[arg-type]


def test_ctx_field_mismatch_is_reported(tls13: Endpoint) -> None:
    conn = tls13.connect()
    other = tls13.new_client_ctx()
    with pytest.raises(NativeUnavailable, match="layout"):
        LIB._read_ssl_field(conn.client, conn.client._sslobj, id(other))  # type: ignore[attr-defined]
    with pytest.raises(NativeUnavailable, match="layout"):
        LIB._read_ssl_field(conn.client, conn.client._sslobj, 12345)  # type: ignore[attr-defined]


def test_ssl_pointer_is_stable_and_distinct(tls13: Endpoint) -> None:
    a, b = tls13.connect(), tls13.connect()
    assert LIB.ssl_pointer(a.client) == LIB.ssl_pointer(a.client)
    assert LIB.ssl_pointer(a.client) != LIB.ssl_pointer(b.client)


def test_ssl_pointer_survives_a_context_swap(tls13: Endpoint) -> None:
    conn = tls13.connect()
    conn.client.context = tls13.new_client_ctx()
    assert LIB.ssl_pointer(conn.client)


# --- capture, has_ticket --------------------------------------------------------------


def test_fresh_connection_has_no_session(endpoint: Endpoint) -> None:
    conn = endpoint.connect()
    assert LIB.capture(conn.client) is None
    assert LIB.has_ticket(conn.client) is False


def test_capture_after_full_handshake_has_a_ticket(endpoint: Endpoint) -> None:
    before = int(time.time())
    session = captured(endpoint)
    assert session.has_ticket
    assert session.is_resumable()
    assert session.protocol_version == (0x0303 if endpoint.version is TLS12 else 0x0304)
    assert session.ticket_lifetime_hint > 0
    assert session.timeout > 0
    assert before - 5 <= session.time <= time.time() + 5


def test_tls13_ticket_arrives_only_after_a_read(tls13: Endpoint) -> None:
    conn = tls13.connect()
    conn.handshake()
    assert LIB.has_ticket(conn.client) is False
    early = LIB.capture(conn.client)
    assert early is not None
    assert not early.has_ticket
    conn.client_read()
    assert LIB.has_ticket(conn.client) is True
    later = LIB.capture(conn.client)
    assert later is not None
    assert later.has_ticket


def test_tls12_ticket_is_part_of_the_handshake(tls12: Endpoint) -> None:
    conn = tls12.connect()
    conn.handshake()
    assert LIB.has_ticket(conn.client) is True


def test_has_ticket_agrees_with_the_stdlib(endpoint: Endpoint) -> None:
    conn = endpoint.full()
    session = conn.client.session
    assert session is not None
    assert LIB.has_ticket(conn.client) is session.has_ticket


def test_session_is_freed_when_unreferenced(tls13: Endpoint) -> None:
    session = captured(tls13)
    ref = weakref.ref(session)
    del session
    # No gc.collect(): the finalizer must not form a cycle with the session.
    assert ref() is None


# --- apply and resumption -------------------------------------------------------------


def test_applied_capture_resumes(endpoint: Endpoint) -> None:
    assert resumes(endpoint, captured(endpoint))


def test_session_resumes_under_another_context(endpoint: Endpoint) -> None:
    # Unlike stdlib SSLSession, which is bound to the SSLContext that made it.
    assert resumes(endpoint, captured(endpoint), endpoint.new_client_ctx())


def test_without_apply_there_is_no_resumption(endpoint: Endpoint) -> None:
    conn = endpoint.connect()
    conn.handshake()
    assert not conn.client.session_reused


def test_capture_before_tls13_ticket_gives_a_full_handshake(tls13: Endpoint) -> None:
    conn = tls13.connect()
    conn.handshake()
    early = LIB.capture(conn.client)
    assert early is not None
    assert not early.is_resumable()
    assert not resumes(tls13, early)


def test_session_reapplied_after_unclean_drops_stays_resumable(endpoint: Endpoint) -> None:
    # OpenSSL marks the session attached to a connection freed without close_notify
    # as non-resumable; apply() must attach a copy so ours survives.
    session = captured(endpoint)
    for _ in range(3):
        assert resumes(endpoint, session)
        gc.collect()
    assert session.is_resumable()


def test_capture_survives_its_connection(endpoint: Endpoint) -> None:
    conn = endpoint.full()
    session = LIB.capture(conn.client)
    assert session is not None
    del conn
    gc.collect()
    assert session.is_resumable()
    assert resumes(endpoint, session)


def test_apply_refuses_server_side(tls13: Endpoint) -> None:
    conn = tls13.connect()
    with pytest.raises(ValueError, match="server-side"):
        LIB.apply(conn.server, captured(tls13))


def test_apply_refuses_after_handshake_started(tls13: Endpoint) -> None:
    session = captured(tls13)
    conn = tls13.connect()
    with pytest.raises(ssl.SSLWantReadError):
        conn.client.do_handshake()
    with pytest.raises(ValueError, match="handshake"):
        LIB.apply(conn.client, session)
    done = tls13.full()
    with pytest.raises(ValueError, match="handshake"):
        LIB.apply(done.client, session)


def test_apply_refuses_non_sessions(tls13: Endpoint) -> None:
    conn = tls13.connect()
    with pytest.raises(TypeError):
        LIB.apply(conn.client, object())  # type: ignore[arg-type]


# --- DER ------------------------------------------------------------------------------


def test_der_round_trip_resumes(endpoint: Endpoint) -> None:
    der = captured(endpoint).to_der()
    assert 100 < len(der) < 4096
    restored = LIB.session_from_der(der)
    assert restored.to_der() == der
    assert restored.has_ticket
    assert restored.is_resumable()
    assert resumes(endpoint, restored, endpoint.new_client_ctx())


@pytest.mark.parametrize(
    "der",
    [b"", b"\x00", b"\x30\x00", b"\x30\x82\xff\xff", b"not a session" * 10],
    ids=["empty", "zero", "empty-seq", "huge-length", "text"],
)
def test_garbage_der_is_a_value_error(der: bytes) -> None:
    with pytest.raises(ValueError, match="DER"):
        LIB.session_from_der(der)


def test_oversized_der_is_a_value_error(der13: bytes) -> None:
    with pytest.raises(ValueError, match="larger"):
        LIB.session_from_der(der13 + b"\x00" * (MAX_DER_SIZE + 1 - len(der13)))


def test_trailing_bytes_are_a_value_error(der13: bytes) -> None:
    with pytest.raises(ValueError, match="trailing"):
        LIB.session_from_der(der13 + b"\x00")


def test_der_refuses_non_bytes() -> None:
    with pytest.raises(TypeError):
        LIB.session_from_der(10**9)  # type: ignore[arg-type]


def test_der_accepts_bytes_like(der13: bytes) -> None:
    assert LIB.session_from_der(bytearray(der13)).to_der() == der13  # type: ignore[arg-type]
    assert LIB.session_from_der(memoryview(der13)).to_der() == der13  # type: ignore[arg-type]


FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FAST
@given(st.binary(min_size=1, max_size=2048))
def test_random_bytes_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="DER"):
        LIB.session_from_der(data)


@FAST
@given(st.data())
def test_every_truncation_is_a_value_error(der13: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(der13) - 1))
    with pytest.raises(ValueError, match="DER"):
        LIB.session_from_der(der13[:cut])


@FAST
@given(st.data())
def test_mutated_der_never_crashes(der13: bytes, tls13: Endpoint, data: st.DataObject) -> None:
    raw = bytearray(der13)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        session = LIB.session_from_der(bytes(raw))
    except ValueError:
        return
    # Whatever OpenSSL accepted must be safe to inspect, encode and offer.
    session.to_der()
    repr(session)
    conn = tls13.connect()
    try:
        LIB.apply(conn.client, session)
        conn.handshake()
    except (ValueError, ssl.SSLError):
        pass


def _all_truncations(der: bytes) -> Iterator[bytes]:
    step = max(1, len(der) // 64)
    yield from (der[:n] for n in range(0, len(der), step))


def test_systematic_truncations_are_value_errors(der13: bytes) -> None:
    for prefix in _all_truncations(der13):
        with pytest.raises(ValueError, match="DER"):
            LIB.session_from_der(prefix)


@pytest.mark.parametrize(
    "der", [b"\x30\x03\x02\x01\x01", b"\x30\x82\x01"], ids=["bad-version", "truncated"]
)
def test_failed_parse_leaves_no_openssl_error_behind(der: bytes) -> None:
    # A stale entry on the thread's error queue could surface later as a bogus SSLError.
    libcrypto = ctypes.CDLL(LIB.libcrypto_path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    peek = libcrypto.ERR_peek_error
    peek.restype, peek.argtypes = ctypes.c_ulong, []
    with pytest.raises(ValueError, match="DER"):
        LIB.session_from_der(der)
    assert peek() == 0


# --- lifetime at interpreter exit -----------------------------------------------------

# The package under test, for subprocesses (so a copy elsewhere tests its own code).
PACKAGE_ROOT = str(Path(_loader.__file__).resolve().parents[2])

# Sessions from real in-process handshakes; then `at_exit` (defined by each script).
_EXIT_SCRIPT_SETUP = """
import ssl
import trustme
from aiotlspool.engines.libssl_load import load_libssl

ca = trustme.CA()
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ca.issue_cert("localhost").configure_cert(server_ctx)
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ca.configure_trust(client_ctx)
lib = load_libssl()

def handshake():
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
    try:
        client.read(1)  # TLS 1.3 tickets
    except ssl.SSLWantReadError:
        pass
    return client

SESSIONS = [lib.capture(handshake()) for _ in range(4)]
DER = {id(s): s.to_der() for s in SESSIONS}
"""

# Registered before any session exists, so atexit runs it after anything the sessions
# registered themselves (weakref.finalize did, and freed them first).
_ATEXIT_SCRIPT = (
    """
import atexit, os

def at_exit():
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for _ in range(200):
        for s in SESSIONS:
            if s.protocol_version not in (0x0303, 0x0304) or s.to_der() != DER[id(s)]:
                print("garbage", hex(s.protocol_version), flush=True)
                os._exit(3)
            s.is_resumable(), s.has_ticket, s.session_id
            lib.apply(ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()), s)
    print("sane", flush=True)

atexit.register(at_exit)
"""
    + _EXIT_SCRIPT_SETUP
)

# A daemon thread still using sessions while the interpreter shuts down around it.
_DAEMON_SCRIPT = (
    _EXIT_SCRIPT_SETUP
    + """
import os, sys, threading
MANY = [lib.session_from_der(DER[id(SESSIONS[0])]) for _ in range(2000)] + SESSIONS
started = threading.Event()

def hammer():
    try:
        while True:
            for s in MANY:
                if s.protocol_version not in (0x0303, 0x0304) or s.to_der() != DER.get(
                    id(s), DER[id(SESSIONS[0])]
                ):
                    os._exit(3)
                started.set()
    except BaseException:
        os._exit(4)

sys.setswitchinterval(1e-6)  # hand the GIL back and forth as often as possible
threading.Thread(target=hammer, daemon=True).start()
started.wait()
"""
)


def _run_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    return subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )


def test_sessions_stay_valid_in_an_earlier_atexit_handler(tmp_path: Path) -> None:
    result = _run_script(tmp_path, _ATEXIT_SCRIPT)
    assert (result.returncode, result.stdout.strip()) == (0, "sane"), result.stderr


def test_daemon_thread_using_sessions_at_exit_never_crashes(tmp_path: Path) -> None:
    for _ in range(5):
        result = _run_script(tmp_path, _DAEMON_SCRIPT)
        assert result.returncode == 0, result.stderr


def test_sessions_register_nothing_at_exit(tls13: Endpoint) -> None:
    registry = weakref.finalize._registry  # type: ignore[attr-defined]
    before = len(registry)
    session = captured(tls13)
    assert len(registry) == before
    assert session.is_resumable()


def test_del_tolerates_an_uninitialised_session() -> None:
    bare = NativeSession.__new__(NativeSession)
    bare.__del__()  # no _ptr: __init__ never ran
    del bare


def test_a_freed_session_raises_instead_of_touching_memory(tls13: Endpoint) -> None:
    session = captured(tls13)
    session.__del__()  # as when another finalizer reaches it after it was finalized
    session.__del__()  # never freed twice
    for use in (
        lambda: session.protocol_version,
        lambda: session.has_ticket,
        lambda: session.session_id,
        session.to_der,
        session.is_resumable,
        lambda: LIB.apply(tls13.connect().client, session),
    ):
        with pytest.raises(ValueError, match="freed"):
            use()


# --- the order of the layout checks ---------------------------------------------------

_HEAD = object.__basicsize__


def _fields(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> ctypes.Array[ctypes.c_void_p]:
    """PySSLSocket's Socket, ssl and ctx fields, writable in place."""
    sslobj = ssl_object._sslobj  # type: ignore[union-attr]
    return (ctypes.c_void_p * 3).from_address(id(sslobj) + _HEAD)


@pytest.fixture
def sslsocket() -> Iterator[ssl.SSLSocket]:
    a, b = socket.socketpair()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with a, b, ctx.wrap_socket(a, do_handshake_on_connect=False) as wrapped:
        yield wrapped


def test_socket_field_is_null_for_wrap_bio_and_a_weakref_for_wrap_socket(
    tls13: Endpoint, sslsocket: ssl.SSLSocket
) -> None:
    # The layout assumption itself, checked on every interpreter this runs on.
    bio = tls13.connect().client
    assert _fields(bio)[0] is None
    assert _fields(bio)[2] == id(bio.context)
    socket_ref = _fields(sslsocket)[0]
    assert socket_ref in [id(ref) for ref in weakref.getweakrefs(sslsocket)]
    assert _fields(sslsocket)[2] == id(sslsocket.context)


def test_ssl_pointer_accepts_an_sslsocket(sslsocket: ssl.SSLSocket) -> None:
    assert LIB.ssl_pointer(sslsocket)  # type: ignore[arg-type]
    assert LIB.capture(sslsocket) is None  # type: ignore[arg-type]


@contextlib.contextmanager
def _corrupted(ssl_object: ssl.SSLObject, index: int, value: int | None) -> Iterator[None]:
    fields = _fields(ssl_object)
    saved = fields[index]
    fields[index] = value
    try:
        yield
    finally:
        fields[index] = saved


@pytest.fixture
def ex_data_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records SSL_get_ex_data calls instead of making them (never a bad pointer to OpenSSL)."""
    calls: list[int] = []

    def spy(ptr: int, index: int) -> None:
        calls.append(ptr)

    monkeypatch.setattr(LIB._fns, "get_ex_data", spy)
    return calls


def test_a_wrong_socket_field_is_refused_before_openssl(
    tls13: Endpoint, ex_data_calls: list[int]
) -> None:
    client = tls13.connect().client
    decoy = weakref.ref(client)  # a weakref, but not one _ssl made for a socket
    for value in (id(client), id(decoy) + 8):
        with _corrupted(client, 0, value), pytest.raises(NativeUnavailable, match="Socket"):
            LIB.ssl_pointer(client)
    assert ex_data_calls == []


@pytest.mark.parametrize("offset", [1, 4, -3])
def test_a_misaligned_ssl_field_is_refused_before_openssl(
    tls13: Endpoint, ex_data_calls: list[int], offset: int
) -> None:
    client = tls13.connect().client
    ptr = _fields(client)[1]
    assert ptr
    with _corrupted(client, 1, ptr + offset), pytest.raises(NativeUnavailable, match="ssl field"):
        LIB.ssl_pointer(client)
    assert ex_data_calls == []


def test_self_check_requires_pointers_in_heap_mappings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The same libraries, but no heap or anonymous mappings: the SSL* lies outside them.
    lines = Path("/proc/self/maps").read_text().splitlines()
    maps = tmp_path / "maps"
    maps.write_text("".join(f"{line}\n" for line in lines if "/" in line))
    monkeypatch.setattr(_loader, "_MAPS_PATH", str(maps))
    with pytest.raises(NativeUnavailable, match="heap mapping"):
        _loader._load_uncached()


def test_heap_regions_are_read_write_anonymous_or_heap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        "1000-2000 rw-p 00000000 00:00 0 [heap]\n"
        "3000-4000 rw-p 00000000 00:00 0\n"
        "5000-6000 rw-p 00000000 00:00 0 [anon:glibc: malloc arena]\n"
        "7000-8000 r--p 00000000 00:00 0\n"
        "9000-a000 rw-p 00000000 08:01 42 /usr/lib/libssl.so.3\n"
        "b000-c000 rw-p 00000000 00:00 0 [stack]\n"
    )
    monkeypatch.setattr(_loader, "_MAPS_PATH", str(maps))
    assert _loader._heap_regions() == [(0x1000, 0x2000), (0x3000, 0x4000), (0x5000, 0x6000)]


# --- free-threaded CPython ------------------------------------------------------------


def test_load_refuses_free_threaded_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_loader, "_gil_disabled", lambda: True)
    monkeypatch.setattr(_loader, "_load_outcome", None)
    for _ in range(2):
        with pytest.raises(NativeUnavailable, match="GIL is disabled"):
            load_libssl()


def test_gil_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loader._gil_disabled() is False  # the interpreters this suite runs on
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert _loader._gil_disabled() is True
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 1)
    assert _loader._gil_disabled() is True


# --- contexts -------------------------------------------------------------------------


class CountingContext(ssl.SSLContext):
    wrapped = 0

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        type(self).wrapped += 1
        return super().wrap_bio(*args, **kwargs)


@pytest.mark.parametrize("server_side", [False, True], ids=["client", "server"])
def test_context_pointer_is_the_ssl_ctx_of_its_connections(
    tls13: Endpoint, server_side: bool
) -> None:
    ctx = tls13.server_ctx if server_side else tls13.client_ctx
    conn = tls13.connect()
    obj = conn.server if server_side else conn.client
    assert LIB.context_pointer(ctx) == LIB._fns.get_ssl_ctx(LIB.ssl_pointer(obj))
    assert LIB.context_pointer(ctx) != LIB.context_pointer(tls13.new_client_ctx())


@pytest.mark.parametrize("thing", [object(), None, ssl.MemoryBIO(), "ctx"])
def test_context_pointer_refuses_non_contexts(thing: object) -> None:
    with pytest.raises(TypeError):
        LIB.context_pointer(thing)  # type: ignore[arg-type]


def test_context_pointer_validates_once_per_context() -> None:
    ctx = CountingContext(ssl.PROTOCOL_TLS_CLIENT)
    pointers = {LIB.context_pointer(ctx) for _ in range(5)}
    assert len(pointers) == 1
    assert CountingContext.wrapped == 1
    ref = weakref.ref(ctx)
    del ctx
    gc.collect()
    assert ref() is None  # the cache does not keep contexts alive


class AllEqualContext(ssl.SSLContext):
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 1


def test_context_pointer_is_not_fooled_by_eq() -> None:
    a = AllEqualContext(ssl.PROTOCOL_TLS_CLIENT)
    b = AllEqualContext(ssl.PROTOCOL_TLS_CLIENT)
    pa, pb = LIB.context_pointer(a), LIB.context_pointer(b)
    assert pa != pb
    assert pb == LIB._fns.get_ssl_ctx(LIB.ssl_pointer(b.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())))


class UnhashableContext(ssl.SSLContext):
    __hash__ = None  # type: ignore[assignment]


def test_context_pointer_of_an_unhashable_context() -> None:
    ctx = UnhashableContext(ssl.PROTOCOL_TLS_CLIENT)
    probe = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    assert LIB.context_pointer(ctx) == LIB._fns.get_ssl_ctx(LIB.ssl_pointer(probe))
    assert LIB.security_level(ctx) >= 0


@pytest.mark.parametrize("level", [0, 1, 2])
def test_security_level(level: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers(f"DEFAULT:@SECLEVEL={level}")
    assert LIB.security_level(ctx) == level


def test_client_certificate(pki: Pki) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert LIB.client_certificate(ctx) is None
    pki.cert.configure_cert(ctx)
    expected = ssl.PEM_cert_to_DER_cert(pki.cert.cert_chain_pems[0].bytes().decode())
    assert LIB.client_certificate(ctx) == expected


def _crl(ca: trustme.CA) -> tuple[bytes, bytes]:
    """A CRL signed by ``ca``: (PEM, DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    revoked = x509.RevokedCertificateBuilder().serial_number(1234).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.PEM), crl.public_bytes(
        serialization.Encoding.DER
    )


def test_trust_store_lists_certs_and_crls(pki: Pki, tmp_path: Path) -> None:
    ca_der = ssl.PEM_cert_to_DER_cert(pki.ca.cert_pem.bytes().decode())
    leaf_der = ssl.PEM_cert_to_DER_cert(pki.cert.cert_chain_pems[0].bytes().decode())
    crl_pem, crl_der = _crl(pki.ca)
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(crl_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert LIB.trust_store(ctx) == []
    ctx.load_verify_locations(cadata=pki.ca.cert_pem.bytes().decode())
    ctx.load_verify_locations(cadata=leaf_der)  # not a CA: get_ca_certs() omits it
    ctx.load_verify_locations(cafile=str(crl_file))  # cadata takes certificates only
    entries = LIB.trust_store(ctx)
    assert Counter(entries) == Counter([("cert", ca_der), ("cert", leaf_der), ("crl", crl_der)])
    assert [der for kind, der in entries if kind == "cert"].count(ca_der) == 1


# --- session ids ----------------------------------------------------------------------


def test_session_id_is_shared_by_copies_of_one_ticket(tls13: Endpoint) -> None:
    conn = tls13.full()
    first, second = LIB.capture(conn.client), LIB.capture(conn.client)
    assert first is not None and second is not None
    assert first.session_id == second.session_id
    assert len(first.session_id) == 32
    assert LIB.session_from_der(first.to_der()).session_id == first.session_id


def test_session_ids_of_two_handshakes_differ(endpoint: Endpoint) -> None:
    a, b = captured(endpoint), captured(endpoint)
    assert a.session_id and b.session_id
    assert a.session_id != b.session_id


# --- module layout --------------------------------------------------------------------

_BINDING_MODULES = ("_bindings", "native_session", "session_callback", "libssl", "libssl_load")


def _engine_imports(path: Path) -> set[str]:
    """Modules of aiotlspool.engines that ``path`` imports anywhere (typing-only included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("aiotlspool.engines."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aiotlspool.engines."):
                    found.add(alias.name.split(".")[2])
    return found


def test_binding_modules_are_small_and_import_no_cycle() -> None:
    engines = Path(_loader.__file__).parent
    graph = {
        name: _engine_imports(engines / f"{name}.py") & set(_BINDING_MODULES)
        for name in _BINDING_MODULES
    }
    for name in _BINDING_MODULES:
        assert len((engines / f"{name}.py").read_text().splitlines()) <= 400, name
    order: list[str] = []
    while len(order) < len(graph):  # Kahn: a cycle leaves modules that never become ready
        ready = [m for m in graph if m not in order and graph[m] <= set(order)]
        assert ready, f"import cycle among {sorted(set(graph) - set(order))}: {graph}"
        order.extend(sorted(ready))
    assert graph["libssl"] >= {"_bindings", "native_session"}
    assert "libssl_load" not in graph["libssl"]


def test_libssl_keeps_its_public_names() -> None:
    from aiotlspool.engines import libssl

    assert libssl.Libssl is Libssl
    assert libssl.NativeSession is NativeSession
    assert libssl.NativeUnavailable is NativeUnavailable
    assert libssl.MAX_DER_SIZE == 64 * 1024
    assert not hasattr(Libssl, "load")
