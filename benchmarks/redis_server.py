"""A throwaway ``redis-server`` for the ``fleet`` section: 127.0.0.1 only, a random free port,
a temporary directory, no persistence (no RDB, no AOF), pinned to the server CPU.

The same approach as the tests' launcher (``tests/support/redisserver.py``), which benchmarks
do not import: it stops by itself under ``timeout(1)`` after ``lifetime`` seconds even if the
harness dies without cleaning up, and :meth:`RedisServer.stop` stops it at the end of the
``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .certs import HOST
from .env import pin_self


class RedisUnavailable(Exception):
    """``redis-server`` is not installed (``scripts/install-servers.sh`` installs it)."""


def _free_port() -> int:
    # redis-server needs its port up front; a tiny race with another process, retried below.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A running ``redis-server``: ``url``, ``port``, ``version``, ``stop()``."""

    def __init__(self, binary: str, workdir: Path, cpu: int | None, lifetime: float) -> None:
        self.workdir = workdir
        self.version = _version(binary)
        timeout_bin = shutil.which("timeout")
        for attempt in range(3):
            self.port = _free_port()
            argv = [
                binary,
                "--bind", HOST,
                "--port", str(self.port),
                "--dir", str(workdir),
                "--save", "",  # no RDB snapshots ...
                "--appendonly", "no",  # ... nor AOF: nothing is written to disk
                "--daemonize", "no",
                "--logfile", "",
                "--loglevel", "warning",
            ]  # fmt: skip
            if timeout_bin is not None:
                argv = [timeout_bin, "-k", "5", str(int(lifetime)), *argv]
            self._log = open(workdir / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
            self._proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: pin_self(cpu)) if cpu is not None else None,
                start_new_session=True,  # Ctrl-C in the terminal goes to the harness only
            )
            if self._wait_ready():
                return
            self.stop()
            tail = (workdir / "redis.log").read_text(errors="replace").strip()[-300:]
            if attempt == 2 or "in use" not in tail:
                raise RuntimeError(f"redis-server did not start: {tail or 'no output'}")

    def _wait_ready(self) -> bool:
        stop_at = time.monotonic() + 10
        while time.monotonic() < stop_at:
            if self._proc.poll() is not None:
                return False
            if _ping(self.port):
                return True
            time.sleep(0.02)
        return False

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()  # timeout(1) passes SIGTERM on
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
        self._log.close()


def _version(binary: str) -> str | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or None


@contextlib.contextmanager
def run_redis(cpu: int | None, lifetime: float) -> Iterator[RedisServer]:
    """A redis-server for the ``with`` block (RedisUnavailable when it is not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            "redis-server is not installed (scripts/install-servers.sh installs it)"
        )
    with tempfile.TemporaryDirectory(prefix="aiotlspool-bench-redis-") as tmp:
        server = RedisServer(binary, Path(tmp), cpu, lifetime)
        try:
            yield server
        finally:
            server.stop()
