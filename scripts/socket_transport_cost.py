"""Client CPU per resumed TLS connect: asyncio's ``create_connection(ssl=)`` against the
socket transport (``aiotlspool.transports.open_socket_tls``).

Each connect: TCP + a resumed handshake, read the 1 byte the server sends, close with
close_notify (waiting for the server's). Servers run in another process on 127.0.0.1 (one per
TLS version, RSA-2048 from trustme); only this process's CPU time (``time.process_time``) is
counted. Rounds alternate between the variants; the figure is the median over rounds.

Sessions are offered two ways, each with both paths:

- ``stdlib``: ``session=`` (``wrap_bio(session=)`` through a duck-typed ``ssl=`` object for
  ``create_connection``; ``wrap_socket(session=)`` for the socket transport): a DER copy per
  connect on both paths;
- ``native``: the native engine's ``offer`` (no copy), as the pool does.

    .venv/bin/python scripts/socket_transport_cost.py [--connects 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiotlspool.engines.select import select_engine
from aiotlspool.transports import open_socket_tls

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
HOST, NAME = "127.0.0.1", "localhost"


# -- the servers (another process) ----------------------------------------------------------


def _serve(cert_file: str, key_file: str, ports: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"x")
            await reader.read()  # until the client's close_notify
        except OSError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        servers = []
        for name, version in VERSIONS.items():
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert_file, key_file)
            ctx.minimum_version = ctx.maximum_version = version
            server = await asyncio.start_server(handler, HOST, 0, ssl=ctx, backlog=512)
            servers.append(server)
            ports.put((name, server.sockets[0].getsockname()[1]))
        await asyncio.sleep(3600)

    asyncio.run(main())


# -- the client -------------------------------------------------------------------------------


class _Offering:
    """A duck-typed ``ssl=`` for create_connection: offers a session in ``wrap_bio``."""

    def __init__(self, ctx: ssl.SSLContext, offer: Callable[[Any], None]) -> None:
        self.ctx, self.offer = ctx, offer

    def wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool = False, **kw: Any) -> Any:
        obj = self.ctx.wrap_bio(incoming, outgoing, server_side=server_side, **kw)
        self.offer(obj)
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctx, name)


async def _batch(
    path: str, sessions: str, port: int, ca: trustme.CA, version: str, n: int
) -> float:
    """Client CPU seconds per connect over ``n`` resumed connects (after one warm-up)."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    engine = select_engine("native") if sessions == "native" else None
    # Warm up: one full handshake on the same path; its session is offered to every connect
    # after it (OpenSSL servers accept a TLS 1.3 ticket again).
    holder: dict[str, Any] = {}

    def offer(obj: Any) -> None:
        if "session" in holder:
            if engine is not None:
                assert engine.offer(obj, holder["session"])
            else:
                obj.session = holder["session"]

    def wrap(sock: socket.socket) -> ssl.SSLSocket:
        tls = ctx.wrap_socket(sock, server_hostname=NAME, do_handshake_on_connect=False)
        offer(tls)
        return tls

    async def connect() -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        if path == "bare":
            return await _bare(loop, port, wrap, engine, "session" not in holder)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport: Any
        if path == "socket":
            transport, _ = await open_socket_tls(loop, lambda: protocol, HOST, port, wrap=wrap)
        else:
            transport, _ = await loop.create_connection(
                lambda: protocol, HOST, port, ssl=_Offering(ctx, offer), server_hostname=NAME
            )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        assert await reader.readexactly(1) == b"x"
        obj = transport.get_extra_info("ssl_object")
        reused = bool(obj.session_reused)
        session = None
        if "session" not in holder:
            session = engine.capture(obj) if engine is not None else obj.session
        writer.close()
        await writer.wait_closed()
        return reused, session

    _, holder["session"] = await connect()
    if holder["session"] is None:
        raise RuntimeError(f"{path}/{sessions} {version}: no session to resume")
    reused = 0
    start = time.process_time()
    for _ in range(n):
        ok, _ = await connect()
        reused += ok
    cpu = time.process_time() - start
    if reused != n:
        raise RuntimeError(f"{path}/{sessions} {version}: only {reused} of {n} resumed")
    return cpu / n


async def _bare(
    loop: asyncio.AbstractEventLoop,
    port: int,
    wrap: Callable[[socket.socket], ssl.SSLSocket],
    engine: Any,
    capture: bool,
) -> tuple[bool, Any]:
    """The floor: the same exchange as a bare coroutine (no transport, protocol, streams)."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await loop.sock_connect(sock, (HOST, port))
    tls = wrap(sock)
    try:
        await _step(loop, tls, tls.do_handshake)
        assert await _step(loop, tls, lambda: tls.read(1)) == b"x"
        reused, session = tls.session_reused, None
        if capture:
            session = engine.capture(tls) if engine is not None else tls.session
        await _step(loop, tls, tls.unwrap)
    finally:
        tls.close()
    return reused, session


async def _step(loop: asyncio.AbstractEventLoop, tls: ssl.SSLSocket, call: Any) -> Any:
    while True:
        try:
            return call()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            waiter = loop.create_future()
            writing = isinstance(exc, ssl.SSLWantWriteError)
            add, remove = (
                (loop.add_writer, loop.remove_writer)
                if writing
                else (loop.add_reader, loop.remove_reader)
            )
            add(tls.fileno(), waiter.set_result, None)
            try:
                await waiter
            finally:
                remove(tls.fileno())


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=200, help="per batch (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop rounds after")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--sessions", default="stdlib,native")
    parser.add_argument(
        "--paths",
        default="create_connection,socket",
        help="also 'bare': the exchange as a bare coroutine on an SSLSocket (the floor)",
    )
    args = parser.parse_args()
    ca = trustme.CA()
    cert = ca.issue_cert(NAME)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        mp = multiprocessing.get_context("spawn")
        ports_queue = mp.Queue()
        server = mp.Process(
            target=_serve, args=(str(cert_file), str(key_file), ports_queue), daemon=True
        )
        server.start()
        try:
            ports = dict(ports_queue.get(timeout=30) for _ in VERSIONS)
            _run(args, ca, ports)
        finally:
            server.terminate()
            server.join(10)


def _run(args: argparse.Namespace, ca: trustme.CA, ports: dict[str, int]) -> None:
    paths = args.paths.split(",")
    variants = [
        (loop, version, sessions, path)
        for loop in args.loops.split(",")
        for version in VERSIONS
        for sessions in args.sessions.split(",")
        for path in paths
    ]
    results: dict[tuple[str, ...], list[float]] = {v: [] for v in variants}
    deadline = time.monotonic() + args.max_seconds
    for round_ in range(args.rounds):
        if round_ and time.monotonic() > deadline:
            print(f"(stopped after {round_} rounds: --max-seconds)")
            break
        order = variants if round_ % 2 == 0 else variants[::-1]
        for variant in order:
            loop_kind, version, sessions, path = variant
            loop = _new_loop(loop_kind)
            try:
                cost = loop.run_until_complete(
                    _batch(path, sessions, ports[version], ca, version, args.connects)
                )
            finally:
                loop.close()
            results[variant].append(cost)
    rounds = len(results[variants[0]])
    print(
        f"client CPU per resumed connect, µs (median of {rounds} rounds x {args.connects} "
        "connects; connect, read 1 byte, close with close_notify)"
    )
    print(f"{'loop':8} {'TLS':8} {'session':8} " + " ".join(f"{p:>18}" for p in paths), "ratio")
    for loop_kind in args.loops.split(","):
        for version in VERSIONS:
            for sessions in args.sessions.split(","):
                costs = [
                    statistics.median(results[(loop_kind, version, sessions, p)]) for p in paths
                ]
                ratio = f"{costs[1] / costs[0]:.2f}" if len(costs) > 1 else ""
                cells = " ".join(f"{c * 1e6:18.0f}" for c in costs)
                print(f"{loop_kind:8} {version:8} {sessions:8} {cells} {ratio:>5}")


if __name__ == "__main__":
    main()
