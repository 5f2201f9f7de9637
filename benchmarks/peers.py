"""The pool against libcurl on reconnect-heavy HTTPS (the ``peers`` section).

Every request on a new connection: TCP connect, TLS handshake, ``GET /``, read the whole
response, close. Against the primary server (nginx when installed), RSA-2048, on each loop and
TLS version, one task at a time (``sequential``) and ``CONCURRENT`` tasks at once:

- ``pool-native``: ``Pool(ctx, session_engine="native")``; each request ``acquire()`` ->
  write the request -> read the status line and headers, then Content-Length bytes of body
  (checked: 200, ``ok``) -> ``await conn.aclose()`` (close_notify, then the server's awaited,
  as the pool always closes). Concurrent: ``CONCURRENT`` asyncio tasks.
- ``curl_cffi``: libcurl (BoringSSL) through curl_cffi's ``AsyncSession`` on the running loop
  (its sockets on the loop's ``add_reader``/``add_writer``, no thread), with
  ``CURLOPT_FORBID_REUSE`` (libcurl closes the connection after each transfer) and its own
  TLS session cache (libcurl resumes by itself). Concurrent: ``CONCURRENT`` tasks sharing one
  session (``max_clients`` = the number of tasks).
- ``lean`` (a reference, :mod:`benchmarks.peers_floor`): the pool's TLS work with the least
  Python - what the pool could reach on this stack.

Both send the same request line and headers (``Connection: close``: a client that will not
reuse the connection says so; nginx then closes after the response), see ``HEADERS``.

Variants take turns block by block on one loop (the order alternates every round), each block
``block`` requests. Requests/s = requests of a block / its wall time (median over blocks);
client CPU per request = ``getrusage(RUSAGE_SELF)`` over the block (every thread of the
process) / its requests; the ratio pool ÷ curl_cffi is taken round by round (the two blocks of a
round ran back to back) and its median is the verdict's figure. nginx's access log says, per
block, how many handshakes resumed and how many requests came on a connection used before
(``$connection_requests`` > 1; must be 0).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from .certs import HOST
from .clients import Target, Unavailable, make_pool
from .env import LoopFactory, process_cpu, run_on
from .server import Server

CONCURRENT = 8
MODES = {"sequential": 1, "concurrent": CONCURRENT}
# The goal of issue 13 item 4: the pool's rate ÷ curl_cffi's.
GOAL = {"1.2": 1.3, "1.3": 1.15}
POOL, LEAN, CURL = "pool-native", "lean", "curl_cffi"
VARIANTS = (POOL, LEAN, CURL)  # lean: a reference, see benchmarks/peers_floor.py
MAX_ERRORS = 3
HEADERS = {"Connection": "close"}
BODY = b"ok"


def request_bytes(port: int) -> bytes:
    lines = ["GET / HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in HEADERS.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """The whole HTTP/1.1 response: status line and headers, then Content-Length bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {head[:40]!r}")
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError("response without Content-Length")
    return await reader.readexactly(int(head[at + 17 : head.index(b"\r\n", at + 17)]))


class PeerClient:
    name: str

    def __init__(self, target: Target, tasks: int) -> None:
        self.target = target
        self.tasks = tasks

    async def open(self) -> None: ...

    async def request(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None: ...

    def resumed_client(self) -> int | None:
        return None


class PoolPeer(PeerClient):
    name = POOL

    def __init__(self, target: Target, tasks: int) -> None:
        super().__init__(target, tasks)
        self.pool = make_pool(target.certs.client_context(), session_engine="native")
        self.payload = request_bytes(target.port)
        self.resumed = 0

    async def request(self) -> None:
        conn = await self.pool.acquire(HOST, self.target.port)
        try:
            conn.writer.write(self.payload)
            body = await read_response(conn.reader)
        finally:
            await conn.aclose()  # never back to the pool: one connection per request
        if body != BODY:
            raise RuntimeError(f"{self.name}: unexpected body {body[:20]!r}")
        self.resumed += conn.session_reused

    async def aclose(self) -> None:
        await self.pool.aclose()

    def resumed_client(self) -> int | None:
        return self.resumed


class CurlPeer(PeerClient):
    name = CURL

    def __init__(self, target: Target, tasks: int) -> None:
        super().__init__(target, tasks)
        try:
            from curl_cffi import CurlOpt
            from curl_cffi.requests import AsyncSession
        except ImportError as exc:
            raise Unavailable(f"curl_cffi cannot be imported ({exc})") from None
        self._session_class: Any = AsyncSession  # its stubs want verify: bool, not a CA path
        self.options = {CurlOpt.FORBID_REUSE: 1}  # a new connection for every request
        self.headers = dict(HEADERS)
        self.session: Any = None

    async def open(self) -> None:
        self.session = self._session_class(  # needs the running loop
            verify=str(self.target.certs.ca),
            max_clients=self.tasks,
            headers=self.headers,
            curl_options=self.options,
        )

    async def request(self) -> None:
        response = await self.session.get(self.target.url)
        if response.status_code != 200 or response.content != BODY:
            raise RuntimeError(f"{self.name}: unexpected response {response.status_code}")

    async def aclose(self) -> None:
        await self.session.close()


def classes() -> dict[str, type[PeerClient]]:
    from .peers_floor import LeanPeer  # (it builds on this module)

    return {POOL: PoolPeer, LEAN: LeanPeer, CURL: CurlPeer}


def available(target: Target) -> tuple[list[str], dict[str, str]]:
    """Variant names that can run here, and why the others cannot."""
    names, missing = [], {}
    for name in VARIANTS:
        try:
            client = classes()[name](target, 1)
        except Unavailable as exc:
            missing[name] = str(exc)
            continue
        if isinstance(client, PoolPeer):
            asyncio.run(client.pool.aclose())
        names.append(name)
    return names, missing


async def _run(client: PeerClient, count: int) -> None:
    """``count`` requests over ``client.tasks`` tasks (one task: in this one)."""
    if client.tasks == 1:
        for _ in range(count):
            await client.request()
        return

    async def worker(share: int) -> None:
        for _ in range(share):
            await client.request()

    shares = [count // client.tasks + (i < count % client.tasks) for i in range(client.tasks)]
    await asyncio.gather(*(worker(share) for share in shares))


async def _block(server: Server, client: PeerClient, count: int) -> dict[str, Any]:
    port = client.target.port
    kept = getattr(server, "kept_alive", None)
    before, kept_before = server.counts(port), kept(port) if kept else None
    seen = client.resumed_client()
    server_cpu, cpu, started = server.cpu_seconds(), process_cpu(), time.perf_counter()
    await _run(client, count)
    elapsed, cpu = time.perf_counter() - started, process_cpu() - cpu
    server_cpu = server.cpu_seconds() - server_cpu
    after = server.wait_counted(port, sum(before) + count)
    now = client.resumed_client()
    return {
        "count": count,
        "seconds": elapsed,
        "cpu": cpu,
        "server_cpu": server_cpu,
        "full_server": after[0] - before[0],
        "resumed_server": after[1] - before[1],
        "kept_alive": None if kept is None else kept(port) - kept_before,
        "resumed_client": None if now is None or seen is None else now - seen,
    }


def run_cell(
    server: Server,
    target: Target,
    names: list[str],
    loop_factory: LoopFactory,
    tasks: int,
    *,
    rounds: int,
    block: int,
    seconds: float,
    after_round: Callable[[int], None],
    failures: list[str],
) -> dict[str, Any]:
    """Every variant on one fresh loop: warm-up, then up to ``rounds`` rounds (fewer if
    ``seconds`` run out), each variant one block of ``block`` requests per round."""

    async def main() -> dict[str, Any]:
        clients = [classes()[name](target, tasks) for name in names]
        blocks: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        errors = dict.fromkeys(names, 0)
        try:
            for client in clients:
                await client.open()
                await _run(client, 4 * tasks + 8)  # imports, handles, caches: not timed
            stop_at = time.monotonic() + seconds
            for rnd in range(rounds):
                if time.monotonic() > stop_at:
                    break
                for client in clients if rnd % 2 == 0 else clients[::-1]:
                    try:
                        found = await _block(server, client, block)
                        blocks[client.name].append({**found, "round": rnd})
                    except Exception as exc:
                        failures.append(f"{client.name}: {exc!r}")
                        errors[client.name] += 1
                        if errors[client.name] >= MAX_ERRORS:
                            raise
                after_round(rnd)
        finally:
            for client in clients:
                await client.aclose()
        # Helper threads would do work the loop's thread does not see (getrusage counts them).
        return {"blocks": blocks, "threads": len(os.listdir("/proc/self/task"))}

    return run_on(loop_factory, main())


def _block_size(block: int, tasks: int) -> int:
    """Requests per block: ``block`` one at a time; twice as many, a multiple of the tasks,
    when concurrent (each task then makes several requests in a row)."""
    if tasks == 1:
        return block
    return max(2 * block // tasks, 2) * tasks


def run_section(bench: Any) -> dict[str, Any]:
    """Called by :class:`benchmarks.runner.Bench` (``--sections peers``)."""
    from .peers_report import console_line, summarise

    s = bench.settings
    server = bench.servers["primary"]
    names, missing = available(bench.target("primary", "rsa", "1.2"))
    result: dict[str, Any] = {
        "server": server.kind,
        "block": s.peers_block,
        "concurrent": CONCURRENT,
        "goal": GOAL,
        "unavailable": missing,
        "cells": [],
        "errors": [],
    }
    if POOL not in names or CURL not in names or not s.peers_rounds:
        return result
    for tls in ("1.2", "1.3"):
        target = bench.target("primary", "rsa", tls)
        for loop_name, factory in bench.loops(("asyncio", "uvloop")):
            for mode, tasks in MODES.items():
                label = f"peers TLS {tls} {loop_name} {mode}"
                failures: list[str] = []
                raw = bench.guarded(
                    label,
                    run_cell,
                    server,
                    target,
                    names,
                    factory,
                    tasks,
                    rounds=s.peers_rounds,
                    block=_block_size(s.peers_block, tasks),
                    seconds=s.peers_seconds,
                    after_round=lambda rnd, label=label: bench.step(
                        f"{label} ({rnd + 1}/{s.peers_rounds})"
                    ),
                    failures=failures,
                )
                result["errors"] += [f"{label}: {failure}" for failure in failures]
                if raw:
                    cell = summarise(tls, loop_name, mode, tasks, raw)
                    result["cells"].append(cell)
                    bench.console.print(console_line(label, cell))
    return result


def steps(bench: Any) -> int:
    """Progress steps: one per round of each (TLS version, loop, mode) cell."""
    loops = len(bench.loops(("asyncio", "uvloop")))
    return 2 * loops * len(MODES) * int(bench.settings.peers_rounds)
