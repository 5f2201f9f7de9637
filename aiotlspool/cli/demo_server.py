"""The demo's TLS echo server, and running it from the demo.

The server runs in a child process (``python -m aiotlspool.cli.demo_server``) so that its
handshake work does not share the client's CPU time slice in one interpreter. It listens on
127.0.0.1 only and stops by itself: when its stdin reaches EOF (the parent closed the pipe or
died) or after a deadline. trustme is imported only when :func:`demo_server` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from .loops import run

HOST = "127.0.0.1"
# The server exits on its own after this long even if its parent never closes the pipe
# (run_demo adds time for long runs).
SERVER_DEADLINE = 600.0


class DemoError(Exception):
    """The demo could not run (its server did not start, a connection failed, ...)."""


# -- the server (child process) -------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass  # the client went away: nothing to report in a demo
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _serve(context: ssl.SSLContext, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    # Resets by clients are normal here; keep the parent's terminal clean.
    loop.set_exception_handler(lambda loop, ctx: None)
    stop = asyncio.Event()
    server = await asyncio.start_server(_echo, HOST, 0, ssl=context, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)

    def wait_for_parent() -> None:
        # EOF on stdin: the parent closed the pipe or died.
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_parent, daemon=True).start()
    loop.call_later(deadline, stop.set)
    await stop.wait()
    # No wait_closed(): on 3.12+ it waits for every client; exiting closes the sockets anyway.
    server.close()


def serve_main(argv: list[str] | None = None) -> None:
    """Entry point of the server process: print the port, echo until told to stop."""
    parser = argparse.ArgumentParser(prog="python -m aiotlspool.cli.demo_server")
    parser.add_argument("--cert", required=True, help="PEM file: private key and chain")
    parser.add_argument("--deadline", type=float, default=SERVER_DEADLINE)
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):
        import uvloop  # the server's speed limits the client's: use the fastest loop

        loop_factory = uvloop.new_event_loop
    run(_serve(context, args.deadline), loop_factory)


# -- running the server from the parent -----------------------------------------------------


@dataclass(frozen=True)
class DemoServer:
    """A running demo server: where it listens and the CA file that verifies it."""

    port: int
    ca_file: str
    pid: int


@contextlib.contextmanager
def demo_server(
    *, deadline: float = SERVER_DEADLINE, startup_timeout: float = 30.0
) -> Iterator[DemoServer]:
    """Start the echo server in a child process with fresh trustme certificates; stop it after.

    The certificate is RSA-2048, the key type of most public servers.
    """
    import trustme

    with tempfile.TemporaryDirectory(prefix="aiotlspool-demo-") as tmp:
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
        cert = ca.issue_cert(HOST, "localhost", key_type=trustme.KeyType.RSA)
        ca_file = os.path.join(tmp, "ca.pem")
        cert_file = os.path.join(tmp, "server.pem")
        ca.cert_pem.write_to_path(ca_file)
        cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
        with open(os.path.join(tmp, "server.log"), "w+b") as log:
            command = [sys.executable, "-m", "aiotlspool.cli.demo_server", "--cert", cert_file]
            process = subprocess.Popen(
                [*command, "--deadline", str(deadline)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            try:
                port = _read_port(process, log, startup_timeout)
                yield DemoServer(port=port, ca_file=ca_file, pid=process.pid)
            finally:
                _stop(process)


def _read_port(process: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> int:
    stdout = process.stdout
    assert stdout is not None
    # A thread, because a blocking readline cannot time out and select() is not portable.
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if line and line[0].strip().isdigit():
        return int(line[0])
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    detail = lines[-1] if lines else f"no port within {timeout:.0f}s"
    raise DemoError(f"the demo server did not start: {detail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        assert process.stdin is not None
        process.stdin.close()  # the server's signal to exit
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


__all__ = ["HOST", "SERVER_DEADLINE", "DemoError", "DemoServer", "demo_server", "serve_main"]

if __name__ == "__main__":
    serve_main()
