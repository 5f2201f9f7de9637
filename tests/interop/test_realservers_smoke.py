"""Smoke tests of the real-server harness, with the standard library client only.

They pin the resumption matrix of ``realservers.VARIANTS`` (see docs/real-servers.md): what a
plain ``ssl`` client observes is what the pool's interop tests must observe too.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..support import realservers as rs

REPO = Path(__file__).resolve().parents[2]
TLS12, TLS13 = rs.TLS12, rs.TLS13
VERSION_NAME = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}


def cases(
    variants: list[rs.Variant] | None = None,
    keep: Callable[[rs.VariantSpec, ssl.TLSVersion], bool] = lambda spec, version: True,
) -> list[Any]:
    """(variant, version) for every version each variant speaks, with readable ids."""
    return [
        pytest.param(variant, version, id=f"{variant}-{VERSION_NAME[version]}")
        for variant in variants or list(rs.VARIANTS)
        for version in sorted(rs.VARIANTS[variant].tls_versions)
        if keep(rs.VARIANTS[variant], version)
    ]


NGINX = [v for v in rs.VARIANTS if v.startswith("nginx-")]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polls another process's state: there is no event to wait on
    return True


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def handshake_then_close(
    server: rs.RealServer, ctx: ssl.SSLContext, *, close_notify: bool
) -> ssl.SSLSession:
    """Handshake, wait for the TLS 1.3 ticket without sending a request, then close.

    The server is left waiting for a request, as with an idle pooled connection."""
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        tls = ctx.wrap_socket(raw, server_hostname=server.server_name)
        tls.setblocking(False)
        deadline = time.monotonic() + 5
        # TLS 1.3 tickets arrive after the handshake: read (nothing but the tickets) until
        # the session has one.  TLS 1.2 sessions are complete after the handshake.
        while tls.version() == "TLSv1.3" and not (tls.session and tls.session.has_ticket):
            assert select.select([tls], [], [], deadline - time.monotonic())[0], "no ticket"
            with contextlib.suppress(ssl.SSLWantReadError):
                assert tls.recv(1) != b"", "the server closed"
        session = tls.session
        assert session is not None
        tls.setblocking(True)
        if close_notify:
            with contextlib.suppress(OSError, ValueError):
                tls.unwrap()
        tls.close()
    return session


def reconnect_after(
    server: rs.RealServer, ctx: ssl.SSLContext, event: Callable[[], None]
) -> rs.Exchange:
    """Take a session, let ``event`` happen to the server, offer the session again."""
    before = rs.exchange(server, ctx)
    event()
    return rs.exchange(server, ctx, before.session)


# --- each variant answers and resumes as declared ------------------------------------------


@pytest.mark.parametrize(("variant", "version"), cases())
def test_reconnect_resumes_as_declared(
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
    variant: rs.Variant,
    version: ssl.TLSVersion,
) -> None:
    server = shared_realserver(variant)
    spec = server.spec
    ctx = realserver_certs.client_context(version)

    first = rs.exchange(server, ctx)
    assert first.reply.endswith(spec.reply_end), first.reply[-200:]
    assert (first.version, first.session_reused) == (VERSION_NAME[version], False)
    if version is TLS13:
        assert first.has_ticket is spec.tls13_tickets

    second = rs.exchange(server, ctx, first.session)
    assert second.reply.endswith(spec.reply_end)
    assert second.session_reused is (version in spec.resumes)
    # A resumed session keeps resuming (TLS 1.3: with the ticket issued on resumption).
    third = rs.exchange(server, ctx, second.session)
    assert third.session_reused is (version in spec.resumes)


@pytest.mark.parametrize("variant", ["s_server-no-ticket", "s_server-no-tls13-tickets"])
@pytest.mark.parametrize("version", [TLS12, TLS13], ids=VERSION_NAME.get)
def test_s_server_status_page_agrees_with_the_client(
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
    variant: rs.Variant,
    version: ssl.TLSVersion,
) -> None:
    server = shared_realserver(variant)
    ctx = realserver_certs.client_context(version)
    first = rs.exchange(server, ctx)
    second = rs.exchange(server, ctx, first.session)
    assert b"\nNew, " in first.reply
    assert (b"\nReused, " in second.reply) is second.session_reused


@pytest.mark.parametrize(
    ("variant", "refused"),
    [("nginx-session-ids", TLS13), ("nginx-tickets", TLS13), ("nginx-tls13", TLS12)],
)
def test_versions_outside_the_variant_are_refused(
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
    variant: rs.Variant,
    refused: ssl.TLSVersion,
) -> None:
    server = shared_realserver(variant)
    with pytest.raises(ssl.SSLError):
        rs.exchange(server, realserver_certs.client_context(refused))


def test_certificate_covers_localhost_and_the_ip_only(
    nginx_no_resumption: rs.RealServer, realserver_certs: rs.Certs
) -> None:
    ctx = realserver_certs.client_context()
    for name in ("localhost", "127.0.0.1"):
        assert rs.exchange(nginx_no_resumption, ctx, server_hostname=name).reply
    with pytest.raises(ssl.SSLCertVerificationError):
        rs.exchange(nginx_no_resumption, ctx, server_hostname="example.com")
    # The CA is also usable the trustme way.
    other = ssl.create_default_context()
    realserver_certs.ca.configure_trust(other)
    assert rs.exchange(nginx_no_resumption, other).reply


# --- several instances, reload, restart ------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=VERSION_NAME.get)
def test_instances_sharing_a_ticket_key_resume_each_others_sessions(
    nginx_shared_key_pair: tuple[rs.RealServer, rs.RealServer],
    realserver_certs: rs.Certs,
    version: ssl.TLSVersion,
) -> None:
    a, b = nginx_shared_key_pair
    assert a.port != b.port
    ctx = realserver_certs.client_context(version)
    on_b = rs.exchange(b, ctx, rs.exchange(a, ctx).session)
    assert on_b.session_reused
    assert rs.exchange(a, ctx, on_b.session).session_reused


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=VERSION_NAME.get)
def test_an_instance_with_another_ticket_key_does_not_resume(
    nginx_shared_key_pair: tuple[rs.RealServer, rs.RealServer],
    nginx_fixed_key: rs.RealServer,
    realserver_certs: rs.Certs,
    version: ssl.TLSVersion,
) -> None:
    ctx = realserver_certs.client_context(version)
    session = rs.exchange(nginx_shared_key_pair[0], ctx).session
    other = rs.exchange(nginx_fixed_key, ctx, session)
    assert other.reply.endswith(nginx_fixed_key.reply_end)  # a silent full handshake
    assert not other.session_reused


@pytest.mark.parametrize(("variant", "version"), cases(NGINX))
def test_reload_resumes_as_declared(
    start_realserver: rs.StartRealServer,
    realserver_certs: rs.Certs,
    variant: rs.Variant,
    version: ssl.TLSVersion,
) -> None:
    server = start_realserver(variant)
    master = server.pid
    after = reconnect_after(server, realserver_certs.client_context(version), server.reload)
    assert server.pid == master  # same master, same port, new workers
    assert after.reply.endswith(server.reply_end)
    assert server.spec.after_reload is not None
    assert after.session_reused is (version in server.spec.after_reload)


@pytest.mark.parametrize(("variant", "version"), cases())
def test_restart_resumes_as_declared(
    start_realserver: rs.StartRealServer,
    realserver_certs: rs.Certs,
    variant: rs.Variant,
    version: ssl.TLSVersion,
) -> None:
    server = start_realserver(variant)
    port, old_pid = server.port, server.pid
    after = reconnect_after(server, realserver_certs.client_context(version), server.restart)
    assert (server.port, group_gone(old_pid)) == (port, True)
    assert after.reply.endswith(server.reply_end)
    assert after.session_reused is (version in server.spec.after_restart)


def test_shared_instances_refuse_restart_and_reload(nginx_tickets: rs.RealServer) -> None:
    with pytest.raises(RuntimeError, match="shared"):
        nginx_tickets.restart()
    with pytest.raises(RuntimeError, match="shared"):
        nginx_tickets.reload()


# --- closing an idle connection without close_notify ----------------------------------------


@pytest.mark.parametrize(
    ("variant", "version"),
    cases(keep=lambda spec, version: version in spec.resumes),
)
@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "abrupt"])
def test_idle_close_keeps_the_session_unless_declared(
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
    variant: rs.Variant,
    version: ssl.TLSVersion,
    close_notify: bool,
) -> None:
    server = shared_realserver(variant)
    ctx = realserver_certs.client_context(version)
    session = handshake_then_close(server, ctx, close_notify=close_notify)
    dropped = not close_notify and server.spec.abrupt_close_drops_session
    assert rs.exchange(server, ctx, session).session_reused is not dropped


# --- the harness leaves nothing behind --------------------------------------------------------


def test_stopped_server_leaves_no_process_and_no_listener(
    require_realserver: Callable[[rs.Variant], None], realserver_certs: rs.Certs
) -> None:
    require_realserver("nginx-tickets")
    with rs.run_server("nginx-tickets", realserver_certs) as server:
        pgid, port, workdir = server.pid, server.port, server.workdir
        assert not group_gone(pgid)
    assert group_gone(pgid)
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((rs.HOST, port), timeout=2).close()


CRASHING_CHILD = """
import os, signal, sys
from tests.support import realservers as rs
with rs.certificates() as certs, rs.run_server("nginx-tickets", certs) as server:
    print(server.pid, server.port, server.workdir, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: only the watchdog is left
"""


def test_watchdog_stops_servers_of_a_killed_test_process(
    require_realserver: Callable[[rs.Variant], None],
) -> None:
    require_realserver("nginx-tickets")
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    with child:
        pid, port, workdir = child.stdout.readline().split()
        assert child.wait(timeout=30) == -signal.SIGKILL
    assert wait_until(lambda: group_gone(int(pid))), "nginx survived its test process"
    assert wait_until(lambda: not Path(workdir).exists()), "its directory survived"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((rs.HOST, int(port)), timeout=2).close()
