"""The load generator of ``aiotlspool bench``: new connections through the pool's public API,
on one event loop.

Each connection: ``pool.connection()`` (TCP connect and TLS handshake, offering a cached
session when the mode is ``on``), optionally the request and its reply, then ``await
conn.aclose()``, so no connection is ever reused. One pool per mode: ``session_cache=False``
for ``off``, the default memory cache for ``on``; ``max_connections`` is this process's
concurrency.

Closed loop (no ``--rate``): ``concurrency`` clients, each starting a connection when its last
one ended. Open loop (``--rate``): a connection is due every 1/rate seconds whether or not
earlier ones have ended; the latency histogram counts from that due time, so a server (or a
generator) falling behind shows up in it instead of slowing the arrivals down (no coordinated
omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, MutableSequence
from typing import Any

from .._timeout import deadline
from ..connection import Connection
from ..exceptions import ConnectError, ConnectTimeout, PoolTimeout
from ..pool import Pool
from .bench_options import BenchOptions, arrivals
from .bench_stats import (
    HISTOGRAMS,
    Histogram,
    ReplyError,
    SliceResult,
    WarmUpResult,
    error_kind,
)

LIVE_FIELDS = 3  # per mode in the live counters: connections, errors, resumed


class _Recorder:
    """Counts and histograms of one slice, and the live counters the progress view reads."""

    def __init__(self, result: SliceResult, live: MutableSequence[int], offset: int) -> None:
        self.result = result
        self.histograms = {name: Histogram() for name in HISTOGRAMS}
        self._live = live
        self._offset = offset

    def handshake(self, conn: Connection, intended: float) -> None:
        ready = time.perf_counter()
        if conn.session_reused:
            self.result.resumed += 1
            self._live[self._offset + 2] += 1
        else:
            self.result.full += 1
        self.histograms["handshake"].record(conn.handshake_seconds)
        self.histograms["connect"].record(conn.connect_seconds)
        self.histograms["latency"].record(ready - intended)

    def done(self) -> None:
        self.result.connections += 1
        self._live[self._offset] += 1

    def cancelled(self) -> None:
        self.result.cancelled += 1

    def error(self, exc: BaseException) -> None:
        kind = error_kind(exc)
        self.result.errors[kind] = self.result.errors.get(kind, 0) + 1
        self._live[self._offset + 1] += 1

    def finish(self) -> SliceResult:
        self.result.histograms = {name: h.encode() for name, h in self.histograms.items()}
        return self.result


class LoadGenerator:
    """One process's (or thread's) share of the load; runs on the event loop it is made on."""

    def __init__(self, options: BenchOptions, worker: int, live: MutableSequence[int]) -> None:
        self.options = options
        self.worker = worker
        self.concurrency = options.worker_concurrency(worker)
        self.rate = options.worker_rate()
        self._live = live
        self._endpoint = options.endpoint()
        self._pools: dict[str, Pool] = {}
        self._stopping = False
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Ctrl-C: end the current slice now (its finished connections are kept)."""
        self._stopping = True
        self._stop.set()

    def _pool(self, mode: str) -> Pool:
        if mode not in self._pools:
            timeout = self.options.timeout
            self._pools[mode] = Pool(
                self.options.context(),
                session_cache=None if mode == "on" else False,
                max_connections=self.concurrency,
                # Every connection is closed after use (conn.aclose()): none is ever idle.
                connect_timeout=timeout,
                # Open loop: a connection may wait for a free slot; closed loop: never.
                acquire_timeout=timeout if self.rate is not None else None,
                connect_retries=0,  # a failed connect is counted, not retried
                close_timeout=min(timeout, 2.0),
            )
        return self._pools[mode]

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()

    # -- one connection -----------------------------------------------------------------

    async def _one(self, pool: Pool, record: _Recorder, intended: float, strict: bool) -> None:
        """Connect, request, close; ``strict`` (the warm-up) raises what fails instead."""
        options = self.options
        try:
            async with pool.connection(
                options.host, options.port, server_hostname=options.server_name
            ) as conn:
                record.handshake(conn, intended)
                if options.send:
                    await self._exchange(conn)
                await conn.aclose()
        except asyncio.CancelledError:
            record.cancelled()  # Ctrl-C: neither finished nor failed
            raise
        except Exception as exc:
            if strict:
                self._warm_up_failed(exc)
            else:
                record.error(exc)
        else:
            record.done()

    async def _exchange(self, conn: Connection) -> None:
        """Send the request; read the reply until EOF, or ``reply_bytes`` of it."""
        options = self.options
        try:
            async with deadline(options.timeout):
                conn.writer.write(options.send)
                await conn.writer.drain()
                if options.reply_bytes is not None:
                    await conn.reader.readexactly(options.reply_bytes)
                else:
                    while await conn.reader.read(65536):
                        pass
        except TimeoutError:
            raise ReplyError("reply_timeout", "no end of the reply within --timeout") from None
        except asyncio.IncompleteReadError as exc:
            raise ReplyError("reply_incomplete", f"EOF after {len(exc.partial)} bytes") from None
        except OSError as exc:
            raise ReplyError("reply_error", str(exc)) from None

    def _warm_up_failed(self, exc: Exception) -> None:
        """A connect failure in the warm-up ends the bench (the probe's errors and exit codes);
        so does a reply that never ends. Other reply errors are left to the measurement."""
        if isinstance(exc, ConnectError):
            raise exc
        if isinstance(exc, PoolTimeout):
            raise ConnectTimeout(str(exc), self._endpoint) from None
        if isinstance(exc, ReplyError):
            if exc.kind != "reply_timeout":
                return
            raise ConnectTimeout(
                f"the reply from {self._endpoint} did not end within {self.options.timeout}s "
                "(a server that keeps the connection open after replying needs --reply-bytes N)",
                self._endpoint,
            ) from None
        raise exc

    # -- warm-up and slices ---------------------------------------------------------------

    async def warm_up(self, mode: str) -> WarmUpResult:
        """``warmup`` connections, not counted: the first alone (it checks the target and
        stores the first tickets), the rest at the slice's concurrency."""
        pool = self._pool(mode)
        total = self.options.worker_warmup(self.worker)
        record = _Recorder(SliceResult(mode, self.worker), [0] * LIVE_FIELDS, 0)
        result = WarmUpResult(mode, engine=pool.session_engine)

        async def connections() -> None:
            await self._one(pool, record, time.perf_counter(), True)
            if mode == "on":
                result.tickets_first = pool.stats().sessions_stored
            left = [total - 1]
            count = min(self.concurrency, left[0])
            await _all([self._client(pool, record, None, left, True) for _ in range(count)])

        await self._until_stopped(connections())
        stats = pool.stats()
        result.connections = stats.full_handshakes + stats.resumed_handshakes
        result.full, result.resumed = stats.full_handshakes, stats.resumed_handshakes
        return result

    async def run_slice(
        self, mode: str, duration: float | None, connections: int | None, offset: int
    ) -> SliceResult:
        """This generator's part of one slice; ``offset`` locates the mode's live counters."""
        pool = self._pool(mode)
        record = _Recorder(SliceResult(mode, self.worker), self._live, offset)
        before = pool.stats()
        cpu, started = time.thread_time(), time.perf_counter()
        if connections != 0:
            if self.rate is None:
                left = None if connections is None else [connections]
                end = None if duration is None else started + duration
                count = self.concurrency if left is None else min(self.concurrency, left[0])
                load = _all([self._client(pool, record, end, left, False) for _ in range(count)])
            else:
                load = self._arrivals(pool, record, arrivals(duration, connections, self.rate))
            record.result.interrupted = await self._until_stopped(load)
        result = record.finish()
        result.elapsed = time.perf_counter() - started
        result.cpu = time.thread_time() - cpu
        if mode == "on":
            after = pool.stats()
            result.sessions_stored = after.sessions_stored - before.sessions_stored
            result.rejected = after.rejected_sessions - before.rejected_sessions
            result.misses = after.cache_misses - before.cache_misses
        return result

    async def _client(
        self,
        pool: Pool,
        record: _Recorder,
        end: float | None,
        left: list[int] | None,
        strict: bool,
    ) -> None:
        """Closed loop: one connection after another, until ``end`` or ``left`` runs out."""
        while not self._stopping:
            if end is not None and time.perf_counter() >= end:
                return
            if left is not None:
                if left[0] <= 0:
                    return
                left[0] -= 1
            await self._one(pool, record, time.perf_counter(), strict)

    async def _arrivals(self, pool: Pool, record: _Recorder, count: int) -> None:
        """Open loop: connection i is due at start + i/rate, late or not."""
        assert self.rate is not None
        interval = 1.0 / self.rate
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        try:
            for i in range(count):
                due = start + i * interval
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                task = asyncio.ensure_future(self._one(pool, record, due, False))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                record.result.arrivals += 1
            while tasks:
                await asyncio.wait(set(tasks))
        finally:
            await _cancel(tasks)

    async def _until_stopped(self, load: Coroutine[Any, Any, None]) -> bool:
        """Run ``load`` until it ends or a stop is requested; whether it was stopped. A failure
        of ``load`` (the warm-up's) is raised."""
        task = asyncio.ensure_future(load)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            interrupted = not task.done()
            await _cancel({task})
        if not interrupted:
            task.result()
        return interrupted


async def _all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run them together; the first failure cancels the others and is raised."""
    tasks = {asyncio.ensure_future(coro) for coro in coros}
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [task for task in done if not task.cancelled() and task.exception()]
        if failed:
            failed[0].result()
    finally:
        await _cancel(tasks)


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel what is still running and wait until it has ended (its connections closed);
    the tasks' own failures are their owner's to report."""
    tasks = set(tasks)  # (done callbacks may remove them from the caller's set meanwhile)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(set(tasks))
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio logs no "never retrieved"


__all__ = ["LIVE_FIELDS", "LoadGenerator"]
