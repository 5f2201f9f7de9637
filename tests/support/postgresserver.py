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
    START_TIMEOUT,
    STOP_TIMEOUT,
    Certs,
    ServerStartError,
    ServerUnavailable,
    _Process,
    _RestartableServer,
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
    def start(self) -> None:
        # Where this process's lines begin: the log is appended to across restarts.
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        super().start()

    def wait_ready(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Listening is not enough: wait until the log says it accepts sessions."""
        super().wait_ready(port, timeout)
        deadline = time.monotonic() + timeout
        while True:
            with self.log.open("rb") as f:
                f.seek(self._log_offset)
                if READY in f.read():
                    return
            if self.exited() or time.monotonic() > deadline:
                raise ServerStartError(f"{self.name} did not get ready:\n{self.log_tail()}")
            time.sleep(0.01)  # no event for "a line was appended to a file"

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


class PostgresServer(_RestartableServer):
    """A running PostgreSQL: connect to ``(host, port)`` as ``user`` to ``database`` over TLS
    (the certificate covers ``server_name`` "localhost" and "127.0.0.1").

    ``start()`` (on the same port as before, or else on a free one), ``stop()`` (a fast
    shutdown; the data directory is kept), ``restart()``, ``port`` and ``running`` come from
    :class:`~.realservers._RestartableServer`."""

    user = USER
    database = DATABASE

    def __init__(self, argv: Sequence[str], workdir: Path) -> None:
        super().__init__(workdir)
        self._argv = list(argv)  # all but the port

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self._port}>"

    def _new_process(self, port: int) -> _Process:
        return _Postmaster(
            f"postgres#{self.starts}",
            [*self._argv, "-p", str(port)],
            self.workdir,
            self.workdir / "postgres.log",
        )


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
