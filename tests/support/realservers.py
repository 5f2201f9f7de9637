"""Real TLS servers (nginx, openssl s_server, haproxy, stunnel) on 127.0.0.1 for interop tests.

Install them with ``scripts/install-servers.sh``; see ``docs/real-servers.md`` for the variant
table and the resumption matrix measured with the standard library client.

Every server runs in the foreground under :mod:`subprocess`, in its own process group, in a
temporary directory, on a free ephemeral port of 127.0.0.1.  Three layers make sure none
outlives the tests:

* the context managers stop their process group on exit (SIGTERM, then SIGKILL);
* an :mod:`atexit` hook stops whatever is still running at interpreter exit;
* a watchdog process, started in its own session, holds the read end of a pipe whose write
  end only this process has.  When this process dies in any way (SIGKILL, a crash) the pipe
  reads EOF and the watchdog kills every registered process group.  It also kills them after
  ``AIOTLSPOOL_REALSERVERS_MAX_SECONDS`` (default 3600 s) in case the test run hangs.

This module imports nothing from pytest: the fixtures live in ``tests/interop/conftest.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, get_args

import trustme

HOST = "127.0.0.1"
SERVER_NAME = "localhost"  # the certificate covers "localhost" and "127.0.0.1"
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3

# How long a server may take to accept connections (nginx retries a busy port for ~2.5 s
# before giving up, so allow more than that).
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

Variant = Literal[
    "nginx-session-ids",
    "nginx-tickets",
    "nginx-tls13",
    "nginx-no-resumption",
    "nginx-fixed-key",
    "s_server-no-ticket",
    "s_server-no-tls13-tickets",
    "haproxy-echo",
    "stunnel-echo",
]


# --------------------------------------------------------------------------------------------
# What each variant is and what a client can expect from it
# --------------------------------------------------------------------------------------------

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
NGINX_BODY = b"pong\n"
ECHO_REQUEST = b"ping\n"


BOTH = frozenset({TLS12, TLS13})
ONLY12 = frozenset({TLS12})
ONLY13 = frozenset({TLS13})
NEITHER: frozenset[ssl.TLSVersion] = frozenset()


@dataclass(frozen=True)
class VariantSpec:
    """A server variant: what it speaks, what to send, and how it resumes.

    The resumption fields are the expected matrix, measured and asserted with the standard
    library client by ``tests/interop/test_realservers_smoke.py``.  Each names the TLS versions at
    which a session taken from one connection (after reading the reply, so TLS 1.3 tickets
    have arrived) resumes on a new connection (the fields commented "...").
    """

    binary: str
    description: str
    request: bytes  # send this ...
    reply_end: bytes  # ... and read until the received bytes end with this (or EOF)
    closes_after_reply: bool  # the server closes the connection after one reply
    tls_versions: frozenset[ssl.TLSVersion] = BOTH
    resumes: frozenset[ssl.TLSVersion] = BOTH  # ... to the same running instance
    after_reload: frozenset[ssl.TLSVersion] | None = None  # ... after reload(); None: no reload
    after_restart: frozenset[ssl.TLSVersion] = NEITHER  # ... after restart()
    # A TLS 1.3 session carries a ticket (nginx sends tickets even with resumption off).
    tls13_tickets: bool = True
    # The session is lost when the client closes an idle connection (the server is waiting
    # for a request) without close_notify: OpenSSL 3 treats that EOF as a fatal error, and a
    # fatal error removes the session from the server's cache.  Observed only with s_server's
    # stateful cache: stateless tickets carry their own state, and nginx's shared cache kept
    # the session.
    abrupt_close_drops_session: bool = False


# s_server -www answers only a first line starting with "GET " (anything else makes it wait
# for more lines, blocking every other client); it sends an HTML status page and closes.
_NGINX = VariantSpec("nginx", "", HTTP_REQUEST, b"\r\n\r\n" + NGINX_BODY, False)
_S_SERVER = VariantSpec("openssl", "", b"GET / HTTP/1.0\r\n\r\n", b"</HTML>\r\n\r\n", True)
_ECHO = VariantSpec("", "", ECHO_REQUEST, ECHO_REQUEST, False)

VARIANTS: Mapping[Variant, VariantSpec] = {
    "nginx-session-ids": replace(
        _NGINX,
        description="nginx, TLS 1.2 only, session IDs only (shared cache, tickets off)",
        tls_versions=ONLY12,
        resumes=ONLY12,
        after_reload=ONLY12,  # the shared memory zone survives a reload
    ),
    "nginx-tickets": replace(
        _NGINX,
        description="nginx, TLS 1.2 only, tickets only (cache off), random ticket keys",
        tls_versions=ONLY12,
        resumes=ONLY12,
        after_reload=NEITHER,  # each configuration cycle makes new random ticket keys
    ),
    "nginx-tls13": replace(
        _NGINX,
        description="nginx, TLS 1.3 only, tickets (cache off), random ticket keys",
        tls_versions=ONLY13,
        resumes=ONLY13,
        after_reload=NEITHER,
    ),
    "nginx-no-resumption": replace(
        _NGINX,
        description="nginx, TLS 1.2 and 1.3, cache off and tickets off",
        resumes=NEITHER,
        after_reload=NEITHER,
    ),
    "nginx-fixed-key": replace(
        _NGINX,
        description="nginx, TLS 1.2 and 1.3, tickets with a fixed ssl_session_ticket_key, "
        "cache off",
        after_reload=BOTH,
        after_restart=BOTH,
    ),
    "s_server-no-ticket": replace(
        _S_SERVER,
        description="openssl s_server -www -no_ticket: stateful (TLS 1.2 session IDs, "
        "TLS 1.3 stateful tickets)",
        abrupt_close_drops_session=True,
    ),
    "s_server-no-tls13-tickets": replace(
        _S_SERVER,
        description="openssl s_server -www -num_tickets 0: no TLS 1.3 tickets "
        "(TLS 1.2 tickets still resume)",
        resumes=ONLY12,
        tls13_tickets=False,
    ),
    "haproxy-echo": replace(
        _ECHO,
        binary="haproxy",
        description="haproxy terminating TLS (its defaults: cache and tickets) "
        "in front of a TCP echo server",
    ),
    "stunnel-echo": replace(
        _ECHO,
        binary="stunnel4",
        description="stunnel4 terminating TLS (its defaults: cache and tickets) "
        "in front of a TCP echo server",
    ),
}
assert set(VARIANTS) == set(get_args(Variant))


# --------------------------------------------------------------------------------------------
# Binaries and certificates
# --------------------------------------------------------------------------------------------


class ServerUnavailable(RuntimeError):
    """The server's binary is not installed (run scripts/install-servers.sh)."""

    def __init__(self, binary: str) -> None:
        super().__init__(f"{binary} not installed: run scripts/install-servers.sh")
        self.binary = binary


class ServerStartError(RuntimeError):
    """A server did not come up (or back up) in time; the message holds its log tail."""


def find_binary(name: str) -> str:
    """The path of ``name``, also looking in the sbin directories (nginx and haproxy live in
    /usr/sbin, which is not on a non-root user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise ServerUnavailable(name)
    return found


def require(variant: Variant) -> str:
    """Raise :class:`ServerUnavailable` unless the variant's binary is installed."""
    return find_binary(VARIANTS[variant].binary)


@dataclass(frozen=True)
class Certs:
    """A trustme CA and a server certificate for "localhost" and "127.0.0.1", as PEM files."""

    ca: trustme.CA
    directory: Path
    ca_file: Path  # the CA certificate: ssl.create_default_context(cafile=...)
    cert_file: Path  # the server certificate chain
    key_file: Path  # the server private key
    combined_file: Path  # key + chain in one file (haproxy's "crt")

    def client_context(self, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A default verifying client context trusting the CA, optionally pinned to one
        TLS version."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx


def write_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    leaf = ca.issue_cert(SERVER_NAME, HOST)
    certs = Certs(
        ca=ca,
        directory=directory,
        ca_file=directory / "ca.pem",
        cert_file=directory / "server-chain.pem",
        key_file=directory / "server.key",
        combined_file=directory / "server-combined.pem",
    )
    ca.cert_pem.write_to_path(str(certs.ca_file))
    leaf.private_key_pem.write_to_path(str(certs.key_file))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(certs.combined_file))
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(certs.cert_file), append=i > 0)
    return certs


@contextlib.contextmanager
def certificates() -> Iterator[Certs]:
    """Fresh certificates in a temporary directory, removed on exit."""
    with _watchdog.directory("aiotlspool-certs-") as tmp:
        yield write_certs(tmp)


def write_ticket_key(path: Path) -> Path:
    """48 random bytes: an nginx ``ssl_session_ticket_key`` (AES-128 + HMAC-SHA256 keys)."""
    path.write_bytes(os.urandom(48))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Process groups, the watchdog, readiness
# --------------------------------------------------------------------------------------------

_WATCHDOG_SCRIPT = r"""
import os, select, shutil, signal, sys, time
deadline = time.monotonic() + float(sys.argv[1])
groups, dirs, buf = set(), set(), b""
while True:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([0], [], [], left)[0]:
        break  # the test run outlived its budget
    chunk = os.read(0, 4096)
    if not chunk:
        break  # the test process is gone, however it died
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        op, arg = line[:1], line[1:]
        if op == b"+":
            groups.add(int(arg))
        elif op == b"-":
            groups.discard(int(arg))
        elif op == b"d":
            dirs.add(arg)
        elif op == b"r":
            dirs.discard(arg)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
for path in dirs:
    shutil.rmtree(path, ignore_errors=True)
"""


class _Watchdog:
    """Kills registered process groups (and removes registered directories) when this process
    dies or the deadline passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _ensure(self) -> int:
        if self._fd is None:
            read_fd, write_fd = os.pipe()  # both non-inheritable: children never hold them
            max_seconds = os.environ.get("AIOTLSPOOL_REALSERVERS_MAX_SECONDS", "3600")
            try:
                # Own session: a Ctrl-C sent to the terminal's process group (which kills the
                # test run) must not kill the watchdog before it has cleaned up.
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-c", _WATCHDOG_SCRIPT, max_seconds],
                    stdin=read_fd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            finally:
                os.close(read_fd)
            self._fd = write_fd
        return self._fd

    def _send(self, line: bytes) -> None:
        # If the watchdog is gone, the other two layers still stop the servers.
        with self._lock, contextlib.suppress(OSError):
            os.write(self._ensure(), line + b"\n")

    def register(self, pgid: int) -> None:
        self._send(b"+%d" % pgid)

    def unregister(self, pgid: int) -> None:
        self._send(b"-%d" % pgid)

    @contextlib.contextmanager
    def directory(self, prefix: str) -> Iterator[Path]:
        """A temporary directory, also removed by the watchdog if this process dies."""
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            self._send(b"d" + os.fsencode(tmp))
            try:
                yield Path(tmp)
            finally:
                self._send(b"r" + os.fsencode(tmp))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # EOF: the watchdog kills what is left and exits
                self._fd = None
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=STOP_TIMEOUT)
                self._proc = None


_watchdog = _Watchdog()
_running: set[_Process] = set()


@atexit.register
def _stop_everything() -> None:
    for proc in list(_running):
        proc.stop()
    _watchdog.close()


def _free_port() -> int:
    # Race: another process may take the port before the server binds it.
    # _RestartableServer.start() retries with another port when the log says "in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _Process:
    """One server process, started in its own process group (so its children, e.g. nginx
    workers, are stopped with it), its output appended to a log file."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path) -> None:
        self.name, self.argv, self.cwd, self.log = name, argv, cwd, log
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # pgid == pid: one killpg stops the whole tree
            )
        _running.add(self)
        _watchdog.register(self.popen.pid)

    def exited(self) -> bool:
        return self.popen is None or self.popen.poll() is not None

    def stop(self) -> None:
        popen = self.popen
        if popen is None:
            return
        pgid = popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)  # nginx: fast shutdown of master and workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=STOP_TIMEOUT)
        # Whatever is left of the group (a worker that ignored TERM, or everything on timeout).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        popen.wait()
        _wait_group_gone(pgid)
        self.popen = None
        _running.discard(self)
        _watchdog.unregister(pgid)

    def wait_ready(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Poll until the port accepts a TCP connection; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.exited():
                raise ServerStartError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, port), timeout=1.0):
                    pass
            except OSError:
                pass
            else:
                if not self.exited():
                    return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} did not accept on {HOST}:{port} within {timeout} s:\n"
                    f"{self.log_tail()}"
                )
            # Doubles as the back-off between attempts and as early detection of an exit.
            assert self.popen is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=0.02)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _wait_group_gone(pgid: int, timeout: float = STOP_TIMEOUT) -> None:
    # Members that are not our children (nginx workers) are reaped by init; wait until the
    # kernel reports the group empty so the port and the processes are really gone.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return  # the pgid now belongs to someone else's process
        time.sleep(0.01)  # no event tells us when init reaps another process's child


def _children(pid: int) -> set[int]:
    """Live (non-zombie) child pids of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

NGINX_WORKERS = 2  # two workers: a session must resume whichever worker takes the connection


def _nginx_conf(
    variant: Variant, prefix: Path, port: int, certs: Certs, ticket_key: Path | None
) -> str:
    protocols = {ONLY12: "TLSv1.2", ONLY13: "TLSv1.3", BOTH: "TLSv1.2 TLSv1.3"}[
        VARIANTS[variant].tls_versions
    ]
    cache, tickets = {
        "nginx-session-ids": ("shared:sids:1m", "off"),
        "nginx-tickets": ("off", "on"),
        "nginx-tls13": ("off", "on"),
        "nginx-no-resumption": ("off", "off"),
        "nginx-fixed-key": ("off", "on"),
    }[variant]
    key_line = f"ssl_session_ticket_key {ticket_key};" if ticket_key else ""
    temp = prefix / "temp"
    # Temp paths inside the prefix, so that a non-root user can run nginx too (the compiled-in
    # /var/lib/nginx is writable by root only).  Started as root, the workers run as "nobody":
    # that is fine, as only the master reads files (certificates, ticket key) and the one
    # location answers with "return".
    temp_lines = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
# {VARIANTS[variant].description}
daemon off;            # foreground, under subprocess
master_process on;     # real master + workers, as deployed
worker_processes {NGINX_WORKERS};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp_lines}
    keepalive_timeout 10s;
    server {{
        listen {HOST}:{port} ssl;
        server_name {SERVER_NAME};
        ssl_certificate {certs.cert_file};
        ssl_certificate_key {certs.key_file};
        ssl_protocols {protocols};
        ssl_session_cache {cache};
        ssl_session_tickets {tickets};
        ssl_session_timeout 5m;
        {key_line}
        default_type text/plain;
        location / {{ return 200 "pong\\n"; }}  # NGINX_BODY
    }}
}}
"""


def _haproxy_conf(port: int, echo_port: int, certs: Certs) -> str:
    # Defaults on purpose: haproxy's own session cache and tickets with per-process keys.
    return f"""\
global
    maxconn 256
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls_in
    bind {HOST}:{port} ssl crt {certs.combined_file}
    default_backend echo
backend echo
    server echo1 {HOST}:{echo_port}
"""


def _stunnel_conf(port: int, echo_port: int, certs: Certs) -> str:
    # Defaults on purpose: stunnel's session cache and OpenSSL's default tickets.
    return f"""\
foreground = yes
pid =
syslog = no
debug = notice
[echo]
accept = {HOST}:{port}
connect = {HOST}:{echo_port}
cert = {certs.cert_file}
key = {certs.key_file}
sslVersionMin = TLSv1.2
sslVersionMax = TLSv1.3
"""


_ECHO_SCRIPT = r"""
import asyncio, sys

async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


# --------------------------------------------------------------------------------------------
# Running servers
# --------------------------------------------------------------------------------------------


class _RestartableServer:
    """A server on 127.0.0.1 run as one :class:`_Process` at a time, on a port kept across
    ``stop()``, ``start()`` and ``restart()``.  What the servers of this module, of
    :mod:`.redisserver` and of :mod:`.postgresserver` share; a subclass says how to make the
    process for a port (:meth:`_new_process`)."""

    host = HOST
    server_name = SERVER_NAME

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = workdir
        self._port = port
        self._proc: _Process | None = None
        self.starts = 0  # processes made, failed attempts included

    def _new_process(self, port: int) -> _Process:
        """The process to run on ``port``, not yet started (``self.starts`` is its number)."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The port it listens on; kept across stop() and restart()."""
        assert self._port is not None, "never started"
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._proc.exited()

    def start(self) -> None:
        """Start: on the same port as before, or else on a free port, retried with another
        free port if some other process takes it first.  No-op if running."""
        if self.running:
            return
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            port = self._port if self._port is not None else _free_port()
            self.starts += 1
            proc = self._new_process(port)
            proc.start()
            try:
                proc.wait_ready(port)
            except ServerStartError:
                proc.stop()
                if attempt + 1 < attempts and "in use" in proc.log_tail():
                    continue
                raise
            self._proc, self._port = proc, port
            return

    def stop(self) -> None:
        """Stop the process (group); the port is remembered for start(), not held meanwhile."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same configuration (a new process:
        in-memory session caches and random ticket keys are lost)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        return self._proc.log_tail(lines) if self._proc else "(not running)"


class RealServer(_RestartableServer):
    """A running server variant.  Connect to ``(host, port)`` with ``server_hostname =
    server_name``, send ``request`` and read until the bytes end with ``reply_end``."""

    def __init__(
        self,
        variant: Variant,
        workdir: Path,
        make_argv: Callable[[int], list[str]],
        *,
        port: int | None = None,
    ) -> None:
        super().__init__(workdir, port=port)
        self.variant: Variant = variant
        self.spec = VARIANTS[variant]
        self._make_argv = make_argv
        # Set by session-scoped fixtures: other tests rely on this instance, so restart() and
        # reload() refuse (use a private instance: the start_realserver fixture).
        self.shared = False

    # What a client needs --------------------------------------------------------------------
    @property
    def tls_versions(self) -> frozenset[ssl.TLSVersion]:
        return self.spec.tls_versions

    @property
    def resumes(self) -> frozenset[ssl.TLSVersion]:
        return self.spec.resumes

    @property
    def request(self) -> bytes:
        return self.spec.request

    @property
    def reply_end(self) -> bytes:
        return self.spec.reply_end

    @property
    def pid(self) -> int:
        """The pid (and process group id) of the main process (the nginx master)."""
        assert self._proc is not None, "not running"
        return self._proc.pid

    def __repr__(self) -> str:
        return f"<RealServer {self.variant} {self.host}:{self._port}>"

    # Life cycle -----------------------------------------------------------------------------
    def _new_process(self, port: int) -> _Process:
        return _Process(
            f"{self.variant}#{self.starts}",
            self._make_argv(port),
            self.workdir,
            self.workdir / f"{self.spec.binary}.log",
        )

    def restart(self) -> None:
        """As :meth:`_RestartableServer.restart`; refused on a shared instance."""
        self._check_private()
        super().restart()

    def reload(self) -> None:
        """nginx only: SIGHUP, then wait until the old workers are gone, so that every new
        connection meets the new configuration cycle (new random ticket keys, shared cache
        kept)."""
        if self.spec.after_reload is None or self._proc is None:
            raise NotImplementedError(f"{self.variant} cannot reload")
        self._check_private()
        master = self._proc.pid
        old = _children(master)
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            workers = _children(master)
            # Old workers stop accepting only when they get the master's QUIT; waiting for
            # them to exit (idle keep-alive connections are closed at once) removes the race.
            if len(workers) == NGINX_WORKERS and not workers & old:
                return
            if self._proc.exited() or time.monotonic() > deadline:
                raise ServerStartError(f"{self.variant} reload failed:\n{self.log_tail()}")
            time.sleep(0.01)  # no notification exists for "a worker of another process exited"

    def _check_private(self) -> None:
        if self.shared:
            raise RuntimeError(f"{self!r} is shared by other tests: start a private instance")


def _argv_factory(
    variant: Variant,
    binary: str,
    workdir: Path,
    certs: Certs,
    ticket_key: Path | None,
    echo_port: int | None,
) -> Callable[[int], list[str]]:
    """How to start ``variant`` on a given port (configuration files are rewritten each time,
    as the port may change between attempts)."""
    if variant.startswith("nginx-"):

        def nginx(port: int) -> list[str]:
            conf = workdir / "nginx.conf"
            conf.write_text(_nginx_conf(variant, workdir, port, certs, ticket_key))
            # -e: the error log used before the configuration is read.
            return [binary, "-p", str(workdir), "-c", str(conf), "-e", "stderr"]

        return nginx
    if variant.startswith("s_server-"):
        option = ["-no_ticket"] if variant == "s_server-no-ticket" else ["-num_tickets", "0"]

        def s_server(port: int) -> list[str]:
            # -www: one HTTP status page per connection, then close; connections are served
            # one at a time.  The page says "Reused" or "New" from the server's side.
            return [
                binary, "s_server", "-accept", f"{HOST}:{port}",
                "-cert", str(certs.cert_file), "-key", str(certs.key_file),
                "-www", *option,
            ]  # fmt: skip

        return s_server
    assert echo_port is not None
    if variant == "haproxy-echo":

        def haproxy(port: int) -> list[str]:
            conf = workdir / "haproxy.cfg"
            conf.write_text(_haproxy_conf(port, echo_port, certs))
            return [binary, "-db", "-f", str(conf)]  # -db: foreground, no daemon

        return haproxy

    def stunnel(port: int) -> list[str]:
        conf = workdir / "stunnel.conf"
        conf.write_text(_stunnel_conf(port, echo_port, certs))
        return [binary, str(conf)]

    return stunnel


@contextlib.contextmanager
def run_server(
    variant: Variant,
    certs: Certs,
    *,
    ticket_key: Path | None = None,
) -> Iterator[RealServer]:
    """Start ``variant`` in a new temporary directory; stop it and remove the directory on exit.

    ``ticket_key`` (nginx-fixed-key only): the key file to use; by default a new one is
    written.  Pass the same file to two instances to make them share tickets.
    Raises :class:`ServerUnavailable` when the binary is missing.
    """
    binary = require(variant)
    if variant != "nginx-fixed-key" and ticket_key is not None:
        raise ValueError("ticket_key applies to nginx-fixed-key only")
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(_watchdog.directory(f"aiotlspool-{variant}-"))
        if variant == "nginx-fixed-key" and ticket_key is None:
            ticket_key = write_ticket_key(workdir / "ticket.key")
        if variant.startswith("nginx-"):
            (workdir / "temp").mkdir()
        echo_port = None
        if VARIANTS[variant].request == ECHO_REQUEST:  # a TLS terminator in front of echo
            echo_port = stack.enter_context(_echo_server(workdir))
        server = RealServer(
            variant, workdir, _argv_factory(variant, binary, workdir, certs, ticket_key, echo_port)
        )
        stack.callback(server.stop)
        server.start()
        yield server


# What the fixtures of tests/interop/conftest.py hand out.
SharedRealServer = Callable[[Variant], RealServer]


class StartRealServer(Protocol):
    def __call__(self, variant: Variant, ticket_key: Path | None = None) -> RealServer: ...


@contextlib.contextmanager
def _echo_server(workdir: Path) -> Iterator[int]:
    """A plain TCP echo server on 127.0.0.1 (the backend of haproxy and stunnel)."""
    for attempt in range(3):
        port = _free_port()
        argv = [sys.executable, "-I", "-c", _ECHO_SCRIPT, str(port)]
        proc = _Process("echo", argv, workdir, workdir / "echo.log")
        proc.start()
        try:
            proc.wait_ready(port)
        except ServerStartError:
            proc.stop()
            if attempt < 2:
                continue
            raise
        try:
            yield port
        finally:
            proc.stop()
        return


@contextlib.contextmanager
def nginx_shared_key_pair(certs: Certs) -> Iterator[tuple[RealServer, RealServer]]:
    """Two nginx-fixed-key instances (different ports) reading one ticket key file."""
    with _watchdog.directory("aiotlspool-shared-key-") as tmp:
        key = write_ticket_key(tmp / "ticket.key")
        with (
            run_server("nginx-fixed-key", certs, ticket_key=key) as a,
            run_server("nginx-fixed-key", certs, ticket_key=key) as b,
        ):
            yield a, b


# --------------------------------------------------------------------------------------------
# A standard library client (blocking), for smoke tests and for comparison with the pool
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """What one request/response on a fresh TLS connection showed."""

    reply: bytes
    version: str | None
    session: ssl.SSLSession | None  # taken after the reply: TLS 1.3 tickets have arrived
    session_reused: bool
    has_ticket: bool


def exchange(
    server: RealServer,
    context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
    *,
    port: int | None = None,
    server_hostname: str | None = None,
    close_notify: bool = True,
    timeout: float = 5.0,
) -> Exchange:
    """Connect, offer ``session``, send ``server.request``, read the reply, close.

    ``close_notify=False`` closes the socket without a TLS close_notify, as a crashed or
    careless client would.
    """
    address = (server.host, server.port if port is None else port)
    with socket.create_connection(address, timeout=timeout) as raw:
        tls = context.wrap_socket(
            raw, server_hostname=server_hostname or server.server_name, session=session
        )
        try:
            tls.sendall(server.request)
            reply = b""
            while not reply.endswith(server.reply_end):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                reply += chunk
            taken = tls.session
            result = Exchange(
                reply=reply,
                version=tls.version(),
                session=taken,
                session_reused=bool(tls.session_reused),
                has_ticket=bool(taken and taken.has_ticket),
            )
            if close_notify:
                # A peer that already closed (s_server -www) makes this fail: that is fine.
                with contextlib.suppress(OSError, ValueError):
                    tls.unwrap()
        finally:
            tls.close()
    return result
