"""Regression tests for the faults of the v0.1 security review.

Each test drives real TLS servers on 127.0.0.1 through the public API and fails on v0.1: a
context mutated after first use, an empty server name with host-name checking on, TLS 1.3 tickets
used twice, imports that ignored pinned leaves, CRLs, security level, options and the host,
process-local store keys, multi-dimensional views, tickets shared across fork(), and lax argument
checks.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from aiotlspool import CertificateError, MemorySessionCache, Pool

from ..support.helpers import HOST, NAME, connect_once, roundtrip
from ..support.servers import (
    TLS_VERSIONS,
    Server,
    client_context,
    running_server,
    server_context,
    start_server,
)


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    """A CA the test clients do not trust."""
    return trustme.CA()


@pytest.fixture
def native_only(session_engine: str | None) -> None:
    """Export and import need the native engine: run those tests with it only."""
    if session_engine != "native":
        pytest.skip("session export/import needs the native session engine")


def unverified_context(tls_version: str) -> ssl.SSLContext:
    """CERT_NONE without host-name checks (default trust store loaded, but unused)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tls_version]
    return ctx


def pinning_context(leaf: trustme.LeafCert, tls_version: str) -> ssl.SSLContext:
    """Trusts exactly one leaf certificate (no CA at all)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata=leaf.cert_chain_pems[0].bytes().decode())
    ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tls_version]
    return ctx


def empty_crl_file(ca: trustme.CA, directory: Path) -> str:
    """A PEM file holding an empty CRL signed by ``ca``."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now - datetime.timedelta(days=1))
        .next_update(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path = directory / "crl.pem"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return str(path)


async def checkout(pool: Pool, host: str, port: int, server_hostname: str | None = None) -> None:
    """``pool.acquire()``, then close what it returned (nothing is left checked out)."""
    conn = await pool.acquire(host, port, server_hostname=server_hostname)
    await conn.aclose()


async def use_without_server_name(pool: Pool, port: int) -> None:
    """``pool.connection()`` with no server name (no SNI), one exchange, give it back."""
    async with pool.connection(HOST, port, server_hostname="") as conn:
        await roundtrip(conn)


# -- Fault 2: a context mutated after first use ------------------------------------------------


async def test_session_from_cert_none_is_not_resumed_after_context_starts_verifying(
    other_ca, tls_version
) -> None:
    async with running_server(server_context(other_ca.issue_cert("localhost"), tls_version)) as srv:
        ctx = unverified_context(tls_version)
        async with Pool(ctx) as pool:
            await connect_once(pool, srv.port)
            assert await connect_once(pool, srv.port) is True  # a session is cached and works
            resumed = srv.resumed
            # The same object now verifies: the untrusted server must fail verification.
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            with pytest.raises(CertificateError):
                await connect_once(pool, srv.port)
            assert pool.stats().stale_sessions_dropped >= 1
        assert srv.resumed == resumed


async def test_session_from_before_a_context_change_is_not_exported(
    other_ca, tls_version, native_only
) -> None:
    async with running_server(server_context(other_ca.issue_cert("localhost"), tls_version)) as srv:
        ctx = unverified_context(tls_version)
        async with Pool(ctx) as pool:
            await connect_once(pool, srv.port)
            assert pool.stats().cache_size >= 1
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            # Exported now, it would carry the new (verifying) settings' fingerprint.
            assert await pool.export_session(HOST, srv.port, server_hostname=NAME) is None
            assert pool.stats().stale_sessions_dropped >= 1


def _toggle_strict(ctx: ssl.SSLContext, ca: trustme.CA) -> None:
    ctx.verify_flags ^= ssl.VERIFY_X509_STRICT  # added (or, where it is the default, removed)


def _load_another_ca(ctx: ssl.SSLContext, ca: trustme.CA) -> None:
    ctx.load_verify_locations(cadata=trustme.CA().cert_pem.bytes().decode())


def _set_option(ctx: ssl.SSLContext, ca: trustme.CA) -> None:
    assert not ctx.options & ssl.OP_NO_RENEGOTIATION  # a real change, harmless here
    ctx.options |= ssl.OP_NO_RENEGOTIATION


def _load_client_cert(ctx: ssl.SSLContext, ca: trustme.CA) -> None:
    ca.issue_cert("client").configure_cert(ctx)


def _lower_security_level(ctx: ssl.SSLContext, ca: trustme.CA) -> None:
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")


def _widen_protocol_range(ctx: ssl.SSLContext, ca: trustme.CA) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3


CONTEXT_MUTATIONS: dict[str, Callable[[ssl.SSLContext, trustme.CA], None]] = {
    "verify flags": _toggle_strict,
    "another CA loaded": _load_another_ca,
    "options": _set_option,
    "client certificate": _load_client_cert,
    "security level": _lower_security_level,
    "protocol range": _widen_protocol_range,
}


@pytest.mark.parametrize("mutation", list(CONTEXT_MUTATIONS))
async def test_context_mutated_after_first_use_gets_a_full_handshake(
    ca, server: Server, tls_version, mutation
) -> None:
    ctx = client_context(ca, tls_version)
    async with Pool(ctx) as pool:
        await connect_once(pool, server.port)
        assert await connect_once(pool, server.port) is True  # resumption works before
        resumed = server.resumed
        CONTEXT_MUTATIONS[mutation](ctx, ca)
        assert await connect_once(pool, server.port) is False
        assert server.resumed == resumed  # the server agrees: no session was offered
        assert pool.stats().stale_sessions_dropped >= 1
        # Sessions obtained under the new settings resume again.
        assert await connect_once(pool, server.port) is True


# -- Fault 3: an empty server name while host names are checked ------------------------------


async def test_empty_server_hostname_is_refused_before_connecting_when_hostnames_are_checked(
    ca, tls_version
) -> None:
    # Trusted CA, but a certificate for another name: only a skipped name check lets it pass.
    srv = await start_server(
        server_context(ca.issue_cert("totally-different.example"), tls_version)
    )
    try:
        async with Pool(client_context(ca, tls_version)) as pool:
            with pytest.raises(ValueError, match="server_hostname"):
                await checkout(pool, HOST, srv.port, server_hostname="")
            with pytest.raises(ValueError, match="server_hostname"):
                await use_without_server_name(pool, srv.port)
            stats = pool.stats()
        assert stats.connections_opened == stats.connect_errors == stats.full_handshakes == 0
        assert srv.handshakes == 0
        # Without host-name checks an empty name is still allowed (the chain is verified).
        no_names = client_context(ca, tls_version)
        no_names.check_hostname = False
        async with Pool(no_names) as pool:
            await use_without_server_name(pool, srv.port)
        assert srv.handshakes == 1
    finally:
        await srv.close()


# -- Fault 4: a TLS 1.3 ticket is used at most once -------------------------------------------


async def _reconnect(pool: Pool, port: int, *, close: bool) -> bool:
    """One connection with a real read; either closed, or released and then closed from idle."""
    if close:
        return await connect_once(pool, port)
    reused = await connect_once(pool, port, close=False)
    opened = pool.stats().connections_opened
    conn = await pool.acquire(HOST, port, server_hostname=NAME)
    assert pool.stats().connections_opened == opened  # the idle connection, not a new one
    await conn.aclose()
    return reused


@pytest.mark.parametrize("close", [True, False], ids=["closed", "released-then-closed"])
async def test_tls13_ticket_gives_one_resumption_only(ca, cert, close) -> None:
    server_ctx = server_context(cert, "TLSv1.3", num_tickets=1)
    async with running_server(server_ctx) as srv:
        async with Pool(client_context(ca, "TLSv1.3")) as pool:
            reused = [await _reconnect(pool, srv.port, close=close)]
            server_ctx.num_tickets = 0  # from now on the server issues no ticket
            for _ in range(3):
                reused.append(await _reconnect(pool, srv.port, close=close))
            stats = pool.stats()
        assert reused == [False, True, False, False]
        assert (srv.handshakes, srv.resumed) == (4, 1)
        assert (stats.full_handshakes, stats.resumed_handshakes) == (3, 1)


# -- Fault 5: the import binding covers pinned leaves, CRLs, security level, options ----------


async def test_import_refuses_session_obtained_pinning_another_leaf(
    ca, cert, other_ca, tls_version, native_only
) -> None:
    attacker_leaf = other_ca.issue_cert("localhost")
    async with running_server(server_context(attacker_leaf, tls_version)) as attacker:
        real = await start_server(server_context(cert, tls_version))
        async with Pool(pinning_context(attacker_leaf, tls_version)) as pool:
            await connect_once(pool, attacker.port)
            data = await pool.export_session(HOST, attacker.port, server_hostname=NAME)
        assert data is not None
        # Another context object pinning the same leaf accepts it: the binding is the settings.
        async with Pool(pinning_context(attacker_leaf, tls_version)) as pool:
            await pool.import_session(data, HOST, attacker.port, server_hostname=NAME)
        async with Pool(pinning_context(cert, tls_version)) as pool:
            assert await connect_once(pool, real.port) is False  # the real pin verifies
            cached = pool.stats().cache_size
            with pytest.raises(ValueError):  # noqa: PT011 - refused; the reason is not the point
                await pool.import_session(data, HOST, attacker.port, server_hostname=NAME)
            assert pool.stats().cache_size == cached
            with pytest.raises(CertificateError):
                await connect_once(pool, attacker.port)
        assert attacker.resumed == 0
        await real.close()


def _load_crl(ctx: ssl.SSLContext, ca: trustme.CA, tmp_path: Path) -> None:
    before = ctx.cert_store_stats()["crl"]
    ctx.load_verify_locations(cafile=empty_crl_file(ca, tmp_path))
    assert ctx.cert_store_stats()["crl"] == before + 1


def _seclevel_0(ctx: ssl.SSLContext, ca: trustme.CA, tmp_path: Path) -> None:
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")


def _no_renegotiation(ctx: ssl.SSLContext, ca: trustme.CA, tmp_path: Path) -> None:
    assert not ctx.options & ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_NO_RENEGOTIATION


IMPORTER_CHANGES: dict[str, Callable[[ssl.SSLContext, trustme.CA, Path], None]] = {
    "extra CRL": _load_crl,
    "security level": _seclevel_0,
    "options": _no_renegotiation,
}


@pytest.mark.parametrize("change", list(IMPORTER_CHANGES))
async def test_import_refuses_context_with_other_crls_security_level_or_options(
    ca, server: Server, tls_version, change, tmp_path, native_only
) -> None:
    async with Pool(client_context(ca, tls_version)) as pool:
        await connect_once(pool, server.port)
        data = await pool.export_session(HOST, server.port, server_hostname=NAME)
    assert data is not None
    async with Pool(client_context(ca, tls_version)) as pool:  # same settings: accepted
        await pool.import_session(data, HOST, server.port, server_hostname=NAME)
        assert pool.stats().cache_size == 1
    importing = client_context(ca, tls_version)
    IMPORTER_CHANGES[change](importing, ca, tmp_path)
    async with Pool(importing) as pool:
        with pytest.raises(ValueError, match="verification settings"):
            await pool.import_session(data, HOST, server.port, server_hostname=NAME)
        assert pool.stats().cache_size == 0
        assert await connect_once(pool, server.port) is False


# -- Fault 6: a key's store_id is the same in every process, and names the settings -----------

_STORE_ID_SCRIPT = """
import json, ssl, sys
import aiotlspool

def key(ctx, port=5432, name="db.internal"):
    return aiotlspool.session_key(ctx, aiotlspool.Endpoint.create(name, port)).store_id()

unverified = ssl.create_default_context()
unverified.check_hostname = False
unverified.verify_mode = ssl.CERT_NONE
for _ in range(int(sys.argv[1])):  # shifts this process's local context numbers
    key(ssl.create_default_context())
default = ssl.create_default_context()
print(json.dumps({
    "unverified": key(unverified),
    "default": key(default),
    "default again": key(ssl.create_default_context()),
    "other port": key(default, port=5433),
    "other name": key(default, name="db2.internal"),
}))
"""


def _store_ids(throwaway_contexts: int) -> dict[str, str]:
    """store_id()s from a fresh interpreter that first keys ``throwaway_contexts`` contexts."""
    proc = subprocess.run(
        [sys.executable, "-c", _STORE_ID_SCRIPT, str(throwaway_contexts)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ids: dict[str, str] = json.loads(proc.stdout)
    return ids


def test_store_id_is_process_independent_and_names_the_verification_settings() -> None:
    one, two = _store_ids(0), _store_ids(3)
    assert all(isinstance(value, str) for value in one.values())
    assert one == two  # the same settings in two processes: the same store_id
    assert one["unverified"] != one["default"]  # other verification settings
    assert one["default"] == one["default again"]  # another object, same settings
    assert one["other port"] != one["default"]
    assert one["other name"] != one["default"]


# -- Fault 7: the size limit counts bytes, whatever the view's shape --------------------------

VIEWS: dict[str, Callable[[], memoryview]] = {
    "2-D view of 64 MiB": lambda: memoryview(bytearray(64 * 1024 * 1024)).cast(
        "B", shape=[16, 4 * 1024 * 1024]
    ),
    "view of 4-byte items": lambda: memoryview(bytearray(256 * 1024)).cast("I"),
}


@pytest.mark.parametrize("view", list(VIEWS))
async def test_import_refuses_oversized_views_by_their_byte_size(ca, view, native_only) -> None:
    data = VIEWS[view]()
    assert len(data) <= 128 * 1024 < data.nbytes  # len() alone would let it through
    async with Pool(client_context(ca)) as pool:
        started = time.perf_counter()
        with pytest.raises(ValueError, match=r"(?i)larger than|too large|size|limit"):
            await pool.import_session(data, HOST, 443, server_hostname=NAME)
        assert time.perf_counter() - started < 2.0
        assert pool.stats().cache_size == 0


# -- Fault 8: a session without a server name is bound to its host ---------------------------


async def test_session_without_server_name_imports_only_for_the_same_host(
    cert, tls_version, native_only
) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        async with Pool(unverified_context(tls_version)) as pool:
            await connect_once(pool, srv.port, name="")
            data = await pool.export_session(HOST, srv.port, server_hostname="")
        assert data is not None
        async with Pool(unverified_context(tls_version)) as pool:
            with pytest.raises(ValueError):  # noqa: PT011 - refused; the reason is not the point
                await pool.import_session(
                    data, "some-other-host.example", srv.port, server_hostname=""
                )
            assert pool.stats().cache_size == 0
            await pool.import_session(data, HOST, srv.port, server_hostname="")
            assert pool.stats().cache_size == 1
            assert await connect_once(pool, srv.port, name="") is True
        assert srv.resumed == 1


# -- Fault 9: fork() does not share TLS 1.3 tickets ------------------------------------------

_FORK_PRELUDE = """
import asyncio, os, ssl, sys, threading, time
from aiotlspool import Endpoint, MemorySessionCache, Pool, session_key

port12, port13, ca_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
HOST, NAME = "127.0.0.1", "localhost"
ctx = ssl.create_default_context(cafile=ca_file)
cache = MemorySessionCache()

async def reconnect(port):
    async with Pool(ctx, session_cache=cache) as pool:
        async with pool.connection(HOST, port, server_hostname=NAME) as conn:
            conn.writer.write(b"ping")
            await conn.writer.drain()
            assert await conn.reader.readexactly(4) == b"ping"
            reused = conn.session_reused
            await conn.aclose()
    return reused

def connect(port):
    return asyncio.run(reconnect(port))

def wait_child(pid, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.005)

assert connect(port12) is False and connect(port13) is False
assert cache.size() == 2, cache.size()  # one TLS 1.2 session, one TLS 1.3 ticket
"""

_FORK_TICKETS = """
pid = os.fork()
if pid == 0:
    code = 0
    try:
        if cache.size() != 1:
            print(f"child: cache.size() == {cache.size()}, expected the TLS 1.2 session only")
            code = 1
        if connect(port13):
            print("child: resumed the parent's TLS 1.3 ticket")
            code = 1
        if not connect(port12):
            print("child: did not resume the TLS 1.2 session")
            code = 1
    except BaseException as exc:
        print(f"child: {exc!r}")
        code = 1
    sys.stdout.flush()
    os._exit(code)
child = wait_child(pid, 20.0)
parent13, parent12 = connect(port13), connect(port12)
print(f"child exit {child}, parent resumed TLS 1.3 {parent13}, TLS 1.2 {parent12}")
sys.exit(0 if child == 0 and parent13 and parent12 else 1)
"""

_FORK_WHILE_LOCKED = """
key = session_key(ctx, Endpoint.create(HOST, port12, NAME))

def now(coro):  # the cache's coroutines never suspend: run one without a loop
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("suspended")

session = now(cache.get(key))
assert session is not None
for i in range(2000):  # size() then holds the lock for a while
    now(cache.put(session_key(ctx, Endpoint.create(HOST, port12, f"h{i}.example")), session))
stop = threading.Event()

def hammer():
    while not stop.is_set():
        cache.size()
        now(cache.put(key, session))
        now(cache.get(key))

thread = threading.Thread(target=hammer, daemon=True)
thread.start()
time.sleep(0.05)
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        ok = cache.size() >= 1 and now(cache.get(key)) is not None
        now(cache.put(key, session))
        os._exit(0 if ok else 2)
    status = wait_child(pid)
    if status != 0:
        print(f"child exit {status}")
        sys.exit(1)
stop.set()
thread.join()
print("ok")
"""


async def _run_fork_script(body: str, srv12: Server, srv13: Server, ca, tmp_path) -> str:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(_FORK_PRELUDE + body),
        str(srv12.port),
        str(srv13.port),
        str(ca_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its children can be killed with it
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except asyncio.TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    text = out.decode()
    assert proc.returncode == 0, text
    return text


@pytest.fixture
async def fork_servers(cert) -> AsyncIterator[tuple[Server, Server]]:
    """A TLS 1.2 server and a TLS 1.3 server that issues one ticket per connection."""
    srv12 = await start_server(server_context(cert, "TLSv1.2"))
    srv13 = await start_server(server_context(cert, "TLSv1.3", num_tickets=1))
    yield srv12, srv13
    await srv12.close()
    await srv13.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_forked_child_drops_tls13_tickets_and_keeps_tls12_sessions(
    ca, fork_servers, tmp_path
) -> None:
    srv12, srv13 = fork_servers
    await _run_fork_script(_FORK_TICKETS, srv12, srv13, ca, tmp_path)
    # The servers' view: one full handshake each before the fork; the child resumed TLS 1.2
    # only; the parent resumed both, its ticket unused by the child.
    assert (srv13.handshakes, srv13.resumed) == (3, 1)
    assert (srv12.handshakes, srv12.resumed) == (3, 2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_fork_while_another_thread_uses_the_cache_does_not_deadlock_the_child(
    ca, fork_servers, tmp_path
) -> None:
    srv12, srv13 = fork_servers
    assert "ok" in await _run_fork_script(_FORK_WHILE_LOCKED, srv12, srv13, ca, tmp_path)


# -- Fault 10: argument checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Pool(share_sessions_across_ports="false"), "share_sessions_across_ports"),
        (lambda: Pool(require_resumption="no"), "require_resumption"),
        (lambda: MemorySessionCache(reuse_tls13_tickets="no"), "reuse_tls13_tickets"),
    ],
    ids=["share_sessions_across_ports", "require_resumption", "reuse_tls13_tickets"],
)
def test_boolean_options_refuse_non_booleans(make, argument) -> None:
    with pytest.raises(TypeError, match=argument):
        make()


async def test_names_with_nul_are_refused_before_connecting_and_keep_the_cache(
    client_ctx, server: Server
) -> None:
    async with Pool(client_ctx) as pool:
        await connect_once(pool, server.port)
        before = pool.stats()
        assert before.cache_size >= 1
        with pytest.raises(ValueError, match=r"\bhost\b"):
            await checkout(pool, "a\x00b", server.port)
        with pytest.raises(ValueError, match="server_hostname"):
            await checkout(pool, HOST, server.port, server_hostname="local\x00host")
        after = pool.stats()
        assert after.cache_size == before.cache_size
        assert (after.connections_opened, after.connect_errors, after.cache_hits) == (
            before.connections_opened,
            before.connect_errors,
            before.cache_hits,
        )
        assert await connect_once(pool, server.port) is True
    assert (server.handshakes, server.resumed) == (2, 1)


def test_misspelt_session_engine_variable_is_named_in_the_error(monkeypatch) -> None:
    monkeypatch.setenv("AIOTLSPOOL_SESSION_ENGINE", "nativ")
    with pytest.raises(ValueError, match="AIOTLSPOOL_SESSION_ENGINE"):
        Pool()
