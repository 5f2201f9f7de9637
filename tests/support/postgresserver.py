"""A real PostgreSQL server on 127.0.0.1 for tests: ``initdb`` and ``postgres`` from
/usr/lib/postgresql/*/bin (Debian's ``postgresql``, see ``scripts/install-servers.sh``), run in a
temporary directory on a free port, TLS on (``ssl=on``) with trustme certificates, and ``trust``
authentication over TLS only (``hostssl``) for one user.

>>> with certificates() as certs, run_postgres(certs) as pg:       # doctest: +SKIP
...     conn = await asyncpg.connect(host=pg.host, port=pg.port, user=pg.user,
...                                  database=pg.database, ssl=ctx)

PostgreSQL refuses to run as root: when the tests do, ``initdb`` and ``postgres`` run as the
``postgres`` system user (the package creates it) through ``setpriv``, which ``exec``\\ s, so
the process started is the postmaster itself; the temporary directory is handed to that user.
Like the servers of :mod:`.realservers` (whose process machinery this uses) it stops at the
end of the ``with`` block, at interpreter exit, or through the watchdog if the test process
dies.  ``stop()`` asks for a fast shutdown (SIGINT: sessions are ended at once).

What PostgreSQL does with TLS sessions (src/backend/libpq/be-secure-openssl.c, ``be_tls_init``):
``SSL_OP_NO_TICKET`` and ``SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF)``, and
since the 2024 fix "Disable all TLS session tickets" (in every supported branch; Debian's 15.18
binary imports ``SSL_CTX_set_num_tickets``) ``SSL_CTX_set_num_tickets(context, 0)``: a TLS 1.3
client receives no ticket at all, a TLS 1.2 client a session with an empty session ID.  Nothing
can ever resume.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .realservers import (
    HOST,
    SERVER_NAME,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Certs,
    ServerStartError,
    ServerUnavailable,
    _free_port,
    _Process,
    _watchdog,
)

__all__ = ["PostgresServer", "postgres_bindir", "run_postgres"]

USER = "test"
DATABASE = "postgres"
READY = b"database system is ready to accept connections"
# The unprivileged account initdb and postgres run as when the tests run as root.
SERVER_ACCOUNT = "postgres"


def postgres_bindir() -> Path:
    """The directory of the newest installed ``initdb`` and ``postgres`` (Debian keeps them
    out of PATH, in /usr/lib/postgresql/<major>/bin); raises
    :class:`~.realservers.ServerUnavailable`."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            major = re.match(r"\d+", bindir.parent.name)
            found.append((int(major.group()) if major else 0, bindir))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb is not None and (Path(initdb).parent / "postgres").exists():
        return Path(initdb).parent
    raise ServerUnavailable("postgresql (initdb, postgres)")


def _as_server_user(argv: list[str]) -> tuple[list[str], pwd.struct_passwd | None]:
    """``argv`` run as the unprivileged account when we are root (exec'ing: same pid)."""
    if os.geteuid() != 0:
        return argv, None
    try:
        account = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise ServerUnavailable(f"the {SERVER_ACCOUNT!r} user (postgresql-common)") from None
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    prefix = [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
    return [*prefix, "--", *argv], account


class _Postmaster(_Process):
    def stop(self) -> None:
        # Fast shutdown through the postmaster; SIGTERM to the whole group (what _Process does)
        # would be a "smart" shutdown that waits for clients, and would hit its children too.
        popen = self.popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=STOP_TIMEOUT)
        super().stop()  # whatever is left: SIGTERM, SIGKILL; bookkeeping


class PostgresServer:
    """A running PostgreSQL: connect to ``(host, port)`` as ``user`` to ``database`` over TLS
    (the certificate covers ``server_name`` "localhost" and "127.0.0.1")."""

    host = HOST
    server_name = SERVER_NAME
    user = USER
    database = DATABASE

    def __init__(self, argv: Sequence[str], workdir: Path) -> None:
        self.workdir = workdir
        self._argv = list(argv)  # all but the port
        self._port: int | None = None
        self._proc: _Postmaster | None = None
        self.starts = 0

    @property
    def port(self) -> int:
        assert self._port is not None, "never started"
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._proc.exited()

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self._port}>"

    def start(self) -> None:
        """Start on the same port as before, or else on a free one (retried if taken)."""
        if self.running:
            return
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            port = self._port if self._port is not None else _free_port()
            self.starts += 1
            log = self.workdir / "postgres.log"
            offset = log.stat().st_size if log.exists() else 0
            proc = _Postmaster(
                f"postgres#{self.starts}", [*self._argv, "-p", str(port)], self.workdir, log
            )
            proc.start()
            try:
                proc.wait_ready(port)  # listening; then wait until it accepts sessions
                self._wait_log(proc, log, offset)
            except ServerStartError:
                proc.stop()
                if attempt + 1 < attempts and "in use" in proc.log_tail():
                    continue
                raise
            self._proc, self._port = proc, port
            return

    @staticmethod
    def _wait_log(proc: _Process, log: Path, offset: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with log.open("rb") as f:
                f.seek(offset)
                if READY in f.read():
                    return
            if proc.exited() or time.monotonic() > deadline:
                raise ServerStartError(f"{proc.name} did not get ready:\n{proc.log_tail()}")
            time.sleep(0.01)  # no event for "a line was appended to a file"

    def stop(self) -> None:
        """Fast shutdown; the data directory and the port are kept for start()."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        return self._proc.log_tail(lines) if self._proc else "(not running)"


_HBA = f"""\
# TLS only, no password, one user; nothing but 127.0.0.1 ever reaches it (listen_addresses).
hostssl all {USER} 127.0.0.1/32 trust
"""


@contextlib.contextmanager
def run_postgres(
    certs: Certs,
    *,
    tls_versions: tuple[str, str] = ("TLSv1.2", "TLSv1.3"),
    settings: Mapping[str, str] | None = None,
) -> Iterator[PostgresServer]:
    """A new cluster (``initdb``) in a temporary directory, running for the ``with`` block.

    ``tls_versions``: ``ssl_min_protocol_version`` and ``ssl_max_protocol_version``;
    ``settings``: more ``-c name=value`` parameters.  Raises
    :class:`~.realservers.ServerUnavailable` when PostgreSQL is not installed.
    """
    bindir = postgres_bindir()
    with _watchdog.directory("aiotlspool-postgres-") as workdir:
        data = workdir / "data"
        # The server reads its key only if the server's account owns it (mode 0600).
        tls = workdir / "tls"
        tls.mkdir()
        shutil.copy(certs.cert_file, tls / "server.crt")
        shutil.copy(certs.key_file, tls / "server.key")
        (tls / "server.key").chmod(0o600)
        initdb, account = _as_server_user(
            [
                str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ]
        )  # fmt: skip
        if account is not None:
            for path in (workdir, tls, tls / "server.crt", tls / "server.key"):
                os.chown(path, account.pw_uid, account.pw_gid)
        done = subprocess.run(
            initdb, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
        if done.returncode != 0:
            raise ServerStartError(f"initdb failed:\n{done.stdout.decode(errors='replace')}")
        (data / "pg_hba.conf").write_text(_HBA)
        parameters = {
            "listen_addresses": HOST,
            "unix_socket_directories": "",  # TCP on 127.0.0.1 only
            "ssl": "on",
            "ssl_cert_file": str(tls / "server.crt"),
            "ssl_key_file": str(tls / "server.key"),
            "ssl_min_protocol_version": tls_versions[0],
            "ssl_max_protocol_version": tls_versions[1],
            "fsync": "off",  # a throwaway cluster
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "40",
            "logging_collector": "off",
            **(settings or {}),
        }
        argv = [str(bindir / "postgres"), "-D", str(data)]
        for name, value in parameters.items():
            argv += ["-c", f"{name}={value}"]
        server = PostgresServer(_as_server_user(argv)[0], workdir)
        try:
            server.start()
            yield server
        finally:
            server.stop()
