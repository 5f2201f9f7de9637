"""A real ``redis-server`` on 127.0.0.1 for tests: TLS (trustme certificates) or plain TCP.

>>> with certificates() as certs, run_redis(certs) as server:     # doctest: +SKIP
...     client = redis.asyncio.Redis(host=server.host, port=server.port, ...)

The API is small on purpose (other tests build on it): :func:`run_redis` starts one server in a
temporary directory and stops it on exit; :class:`RedisServer` tells where it listens and can
``stop()``, ``start()`` and ``restart()`` it on the same port.  It is an in-memory server with
no persistence: a restart loses the data and, with TLS, the session cache and the ticket keys
(new random keys per process), so no session of the old process resumes on the new one.

Only 127.0.0.1 is ever bound: with TLS the plain port is off (``--port 0``) and only the TLS
port listens; no Unix socket.  Processes are run (and, if the test process dies, killed) by
the machinery of :mod:`.realservers`: their own process group, a stop at the end of the
``with`` block, an atexit hook, and the watchdog.  Install the binary with
``scripts/install-servers.sh`` (Debian's ``redis-server``).

What redis-server does with TLS sessions (src/tls.c, ``tlsConfigure``; seen with 7.0.15):

- ``tls-session-caching yes`` (the default) sets ``SSL_SESS_CACHE_SERVER`` with
  ``tls-session-cache-size`` (default 20480) and ``tls-session-cache-timeout`` (default 300 s,
  which OpenSSL also sends as the ticket lifetime hint); ``no`` sets ``SSL_SESS_CACHE_OFF``.
- It never sets ``SSL_OP_NO_TICKET`` nor ``SSL_CTX_set_num_tickets``: TLS 1.2 resumes by
  stateless ticket (1 per full handshake) and TLS 1.3 sends OpenSSL's default 2 stateless
  tickets per full handshake (1 after a resumption), with caching on or off.
- A TLS 1.2 session ID (a client without tickets) resumes only if redis-server closed the
  previous connection (after QUIT): ``connTLSClose`` calls ``SSL_shutdown`` only on a
  connection still "connected", and ``SSL_free`` without a sent close_notify removes the
  session from the cache.  So the cache is of little use to clients that close first.
- ``tls-protocols`` defaults to "TLSv1.2 TLSv1.3".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from .realservers import (
    HOST,
    Certs,
    _Process,
    _RestartableServer,
    _watchdog,
    find_binary,
)

__all__ = ["RedisServer", "redis_binary", "run_redis"]

TlsAuthClients = Literal["no", "optional", "yes"]


def redis_binary() -> str:
    """The path of ``redis-server``; raises :class:`~.realservers.ServerUnavailable`."""
    return find_binary("redis-server")


class RedisServer(_RestartableServer):
    """A ``redis-server`` process: connect to ``(host, port)``; with TLS (``tls`` true) send
    ``server_name`` ("localhost", which the certificate covers, as does "127.0.0.1").

    ``start()`` (on the same port as before, or else on a free one), ``stop()`` (SIGTERM, then
    SIGKILL), ``restart()`` (data, session cache and ticket keys are lost), ``port`` (the TLS
    port with TLS, kept across them) and ``running`` come from
    :class:`~.realservers._RestartableServer`."""

    def __init__(self, argv: Sequence[str], workdir: Path, *, tls: bool) -> None:
        super().__init__(workdir)
        self.tls = tls
        self._argv = list(argv)  # all but the port options

    @property
    def url(self) -> str:
        """``rediss://`` or ``redis://`` URL of database 0 (the name, not the address)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.server_name if self.tls else self.host}:{self.port}/0"

    def __repr__(self) -> str:
        return f"<RedisServer {'tls' if self.tls else 'tcp'} {self.host}:{self._port}>"

    def _new_process(self, port: int) -> _Process:
        ports = ["--port", "0", "--tls-port", str(port)] if self.tls else ["--port", str(port)]
        return _Process(
            f"redis-server#{self.starts}",
            [*self._argv, *ports],
            self.workdir,
            self.workdir / "redis.log",
        )

    def log_tail(self, lines: int = 30) -> str:
        """The log's last lines, also after stop()."""
        log = self.workdir / "redis.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def run_redis(
    certs: Certs | None = None,
    *,
    tls_protocols: str = "TLSv1.2 TLSv1.3",
    session_caching: bool = True,
    tls_auth_clients: TlsAuthClients = "no",
    extra_args: Sequence[str] = (),
) -> Iterator[RedisServer]:
    """Run ``redis-server`` for the ``with`` block: TLS with ``certs``, plain TCP without.

    ``tls_protocols``, ``session_caching`` and ``tls_auth_clients`` are redis-server's
    ``tls-protocols``, ``tls-session-caching`` and ``tls-auth-clients`` (client certificates
    must then be issued by ``certs.ca``).  ``extra_args``: more ``--name value`` options.
    Raises :class:`~.realservers.ServerUnavailable` when redis-server is not installed.
    """
    binary = redis_binary()
    with _watchdog.directory("aiotlspool-redis-") as workdir:
        argv = [
            binary,
            "--bind", HOST,
            "--dir", str(workdir),
            "--save", "",  # no RDB snapshots ...
            "--appendonly", "no",  # ... nor AOF: nothing survives a restart
            "--daemonize", "no",
            "--logfile", "",  # stdout: the log file of _Process
            "--loglevel", "notice",
        ]  # fmt: skip
        if certs is not None:
            argv += [
                "--tls-cert-file", str(certs.cert_file),
                "--tls-key-file", str(certs.key_file),
                "--tls-ca-cert-file", str(certs.ca_file),
                "--tls-auth-clients", tls_auth_clients,
                "--tls-protocols", tls_protocols,
                "--tls-session-caching", "yes" if session_caching else "no",
            ]  # fmt: skip
        argv += list(extra_args)
        server = RedisServer(argv, workdir, tls=certs is not None)
        try:
            server.start()
            yield server
        finally:
            server.stop()
