"""The TLS servers, each in its own process pinned to the server CPU, so that the client's CPU
time is measured alone. Both answer a tiny HTTP/1.1 request on one port per (key type, TLS
version) and count full and resumed handshakes, so every client - even aiohttp and httpx, which
say nothing about resumption - is checked on the server side.

- :class:`PythonServer`: asyncio (uvloop when installed) in a ``multiprocessing`` child.
- :class:`NginxServer`: nginx, when the binary exists (``scripts/install-servers.sh``).

Both stop by themselves: the Python child after ``lifetime`` seconds or when its parent is gone,
nginx through ``timeout(1)``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from abc import ABC, abstractmethod
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any, cast

from .certs import HOST, CertFiles
from .env import children_of, pin_self, process_cpu_seconds, run_until_orphaned

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
BODY = b"ok"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + BODY
RESPONSE_CLOSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
Listener = tuple[str, str]  # (key type, TLS version)


class Server(ABC):
    """A running server: one TLS port per listener, one plain-HTTP port, handshake counts, CPU
    time used."""

    kind: str
    ports: dict[Listener, int]
    plain_port: int

    @abstractmethod
    def counts(self, port: int) -> tuple[int, int]:
        """(full, resumed) handshakes on ``port`` since the server started."""

    @abstractmethod
    def cpu_seconds(self) -> float:
        """CPU time the server processes have used so far."""

    @abstractmethod
    def stop(self) -> None: ...

    def wait_counted(self, port: int, total: int, timeout: float = 2.0) -> tuple[int, int]:
        """Counts once at least ``total`` handshakes are in; a server may log a little late."""
        stop_at = time.monotonic() + timeout
        while True:
            full, resumed = self.counts(port)
            if full + resumed >= total or time.monotonic() > stop_at:
                return full, resumed
            time.sleep(0.005)


def _server_context(listener: Listener, certs: CertFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.chain), str(certs.key))
    context.minimum_version = context.maximum_version = TLS_VERSIONS[listener[1]]
    # Defaults otherwise: OpenSSL's session cache and tickets, 2 TLS 1.3 tickets per handshake.
    return context


class _Responder(asyncio.Protocol):
    """Answers each request (headers only, no body) with a 2-byte body; counts the handshake."""

    def __init__(self, counts: Any, index: int) -> None:
        self.counts = counts
        self.index = index
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)
        # Called once the TLS handshake is complete (at once on the plain-TCP port).
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.counts[2 * self.index + (1 if ssl_object.session_reused else 0)] += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if b"connection: close" in head.lower():
                self.transport.write(RESPONSE_CLOSE)
                self.transport.close()
                return
            self.transport.write(RESPONSE)

    def eof_received(self) -> bool:
        return False  # close (with close_notify) when the client does


def _serve(
    listeners: list[tuple[Listener, CertFiles]],
    counts: Any,
    pipe: PipeEnd,
    cpu: int | None,
    lifetime: float,
) -> None:
    """Child process entry point."""
    pin_self(cpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()

    async def main() -> None:
        ports = []
        for index, (listener, certs) in enumerate(listeners):
            server = await loop.create_server(
                lambda i=index: _Responder(counts, i),  # type: ignore[misc]
                HOST,
                0,
                ssl=_server_context(listener, certs),
                backlog=1024,
            )
            ports.append(server.sockets[0].getsockname()[1])
        # Plain HTTP on one more port: the no-TLS floor of a connection's cost.
        plain = await loop.create_server(lambda: _Responder(counts, -1), HOST, 0, backlog=1024)
        ports.append(plain.sockets[0].getsockname()[1])
        pipe.send(ports)
        await run_until_orphaned(lifetime)

    loop.run_until_complete(main())


class PythonServer(Server):
    kind = "python"

    def __init__(
        self, listeners: list[tuple[Listener, CertFiles]], cpu: int | None, lifetime: float
    ) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._counts = spawn.RawArray("q", 2 * len(listeners))
        ours, theirs = spawn.Pipe()
        self._process = spawn.Process(
            target=_serve,
            args=(listeners, self._counts, theirs, cpu, lifetime),
            daemon=True,
            name="bench-python-server",
        )
        self._process.start()
        stop_at = time.monotonic() + 30
        while not ours.poll(0.1):
            if not self._process.is_alive() or time.monotonic() > stop_at:
                self.stop()
                raise RuntimeError("the Python TLS server did not start (see its traceback)")
        ports: list[int] = ours.recv()
        self.plain_port = ports.pop()
        self.ports = {listener: port for (listener, _), port in zip(listeners, ports, strict=True)}
        self._index = {port: i for i, port in enumerate(ports)}

    def counts(self, port: int) -> tuple[int, int]:
        i = self._index[port]
        return int(self._counts[2 * i]), int(self._counts[2 * i + 1])

    def cpu_seconds(self) -> float:
        pid = self._process.pid
        return process_cpu_seconds(pid) if pid is not None else 0.0

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)


def _free_port() -> int:
    # nginx needs its ports up front; the tiny race with another process is acceptable here.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    # One line per request: which port, whether the handshake resumed ("r") or not ("."), and
    # the request's number on its connection (1: a new connection).
    log_format bench '$server_port $ssl_session_reused $connection_requests';
    access_log {prefix}/access.log bench;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_timeout 10s;
    ssl_session_cache shared:bench:4m;
    ssl_session_timeout 10m;
    ssl_session_tickets on;
{servers}
    server {{
        listen {host}:{plain_port} backlog=1024;
        location / {{ default_type text/plain; return 200 "ok"; }}
    }}
}}
"""

_NGINX_SERVER = """\
    server {{
        listen {host}:{port} ssl backlog=1024;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv{tls};
        location / {{ default_type text/plain; return 200 "ok"; }}
    }}
"""


class NginxServer(Server):
    """nginx with one worker, pinned like the Python server; counts come from its access log."""

    kind = "nginx"

    def __init__(
        self,
        binary: str,
        listeners: list[tuple[Listener, CertFiles]],
        prefix: Path,
        cpu: int | None,
        lifetime: float,
    ) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        self.ports = {listener: _free_port() for listener, _ in listeners}
        servers = "".join(
            _NGINX_SERVER.format(
                host=HOST,
                port=self.ports[listener],
                chain=certs.chain,
                key=certs.key,
                tls=listener[1],
            )
            for listener, certs in listeners
        )
        # As root, nginx would switch its worker to "nobody"; stay ourselves instead.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = prefix / "nginx.conf"
        self.plain_port = _free_port()
        conf.write_text(
            _NGINX_CONF.format(
                prefix=prefix, servers=servers, user=user, host=HOST, plain_port=self.plain_port
            )
        )
        self._log = prefix / "access.log"
        self._log_offset = 0
        self._totals: dict[int, list[int]] = {port: [0, 0, 0] for port in self.ports.values()}
        timeout_bin = shutil.which("timeout")
        command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        if timeout_bin is not None:
            # Stop by itself even if the harness dies without cleaning up.
            command = [timeout_bin, "-k", "5", str(int(lifetime)), *command]
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Workers inherit the affinity of the master.
            preexec_fn=(lambda: pin_self(cpu)) if cpu is not None else None,
            start_new_session=True,  # Ctrl-C in the terminal goes to the harness only
        )
        self._wrapped = timeout_bin is not None
        self._wait_listening(prefix)
        self._pids = self._server_pids()

    def _wait_listening(self, prefix: Path) -> None:
        stop_at = time.monotonic() + 15
        pending = {*self.ports.values(), self.plain_port}
        while pending:
            if self._proc.poll() is not None:
                stderr = self._proc.stderr.read().decode() if self._proc.stderr else ""
                log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                raise RuntimeError(f"nginx exited: {stderr.strip()} {log.strip()}")
            if time.monotonic() > stop_at:
                self.stop()
                raise RuntimeError("nginx did not listen within 15 s")
            for port in list(pending):
                with socket.socket() as sock:
                    if sock.connect_ex((HOST, port)) == 0:
                        pending.discard(port)
            time.sleep(0.05)

    def _server_pids(self) -> list[int]:
        """The master and its worker (CPU time is summed over both)."""
        stop_at = time.monotonic() + 5
        while True:
            # With timeout(1) in front, the master is its child.
            masters = children_of(self._proc.pid) if self._wrapped else [self._proc.pid]
            workers = [pid for master in masters for pid in children_of(master)]
            if (masters and workers) or time.monotonic() > stop_at:
                return masters + workers
            time.sleep(0.02)

    def counts(self, port: int) -> tuple[int, int]:
        with open(self._log, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        complete = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._log_offset += complete
        for line in data[:complete].splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0].isdigit() and int(fields[0]) in self._totals:
                totals = self._totals[int(fields[0])]
                totals[1 if fields[1] == b"r" else 0] += 1
                totals[2] += fields[2] != b"1"
        full, resumed, _ = self._totals[port]
        return full, resumed

    def kept_alive(self, port: int) -> int:
        """Requests on ``port`` so far that came on a connection used before (0 when every
        request opened its own connection)."""
        self.counts(port)
        return self._totals[port][2]

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self._pids)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()  # timeout(1) passes SIGTERM on to nginx
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
        if self._proc.stderr is not None:
            self._proc.stderr.close()
