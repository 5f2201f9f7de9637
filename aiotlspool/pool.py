"""The connection pool: the public API, and the I/O around the pool's state (the
:class:`~aiotlspool.slots.SlotTable`, synchronous and free of I/O). Connecting, storing
sessions and closing happen outside the table's calls; a close cut short by a cancellation
finishes in the background, and :meth:`Pool.aclose` waits for it."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from typing import Any, Literal

from ._timeout import deadline
from .background import Background
from .checkout import ConnectionBlock
from .config import PoolConfig
from .connection import Connection
from .endpoint import Endpoint
from .exceptions import ConnectError, PoolClosed, PoolTimeout
from .lifetimes import Lifetimes
from .pool_tls import PoolTLS
from .record import ConnectionRecord
from .sessions.store import SessionCache
from .slots import Slot, SlotState, SlotTable
from .stats import PoolStats
from .store_guard import flush_store

logger = logging.getLogger("aiotlspool")


class Pool(PoolTLS):
    """An asyncio pool of TLS connections that resumes TLS sessions on reconnect.

    Args:
        ssl_context: the context every connection uses (default
            ``ssl.create_default_context()``); its settings are never changed (the native
            engine adds OpenSSL's new-session callback: docs/usage.md). Sessions are bound to it
            and to its settings, read at every connect; replace it with :meth:`set_ssl_context`.
        session_cache: ``None`` for a private :class:`MemorySessionCache`, ``False`` to disable
            resumption, or any :class:`SessionCache` (which may be shared between pools).
        max_connections: connections open at once, all endpoints together (default 100).
        max_connections_per_endpoint: the same for one endpoint (default: no other limit).
        idle_timeout: seconds an idle connection is kept (default 30; None keeps it forever).
        max_lifetime: seconds after which a connection is not reused (default None: no limit).
        connect_timeout: seconds for TCP connect and TLS handshake together, retries included
            (default 10; None: no limit).
        acquire_timeout: seconds for a whole :meth:`acquire`: waiting for a free slot and
            connecting (default 30; None: no limit). Raises :class:`PoolTimeout`.
        connect_retries: further attempts after a transient connect failure (refused, reset;
            default 2), with jittered exponential backoff from ``retry_backoff`` seconds.
        require_resumption: raise :class:`ResumptionRejected` if the server refuses a session.
        share_sessions_across_ports: key sessions by context and server name only, so that all
            ports of a host share them (as the ScyllaDB driver does). Default: per port.
        close_timeout: seconds to wait for the server's close_notify when closing (default 2).
        store_timeout: seconds a custom ``session_cache`` may take per call (default 0.5); a
            call that fails or runs out is a miss, never a failed connect (:class:`PoolStats`).
        tls_transport: ``"socket"`` (TLS on a non-blocking ``SSLSocket``), ``"asyncio"`` (the
            loop's ``create_connection(ssl=)``) or ``"auto"`` (default: socket, but on uvloop).
        session_engine: ``"native"`` (libssl: no copies, every ticket as it arrives; needed for
            export/import), ``"stdlib"`` or ``"auto"`` (default: native if it works here).

    Use it as ``async with Pool(...) as pool`` or call :meth:`aclose` when done. A pool belongs
    to the event loop that first uses it.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        session_cache: SessionCache | Literal[False] | None = None,
        max_connections: int = 100,
        max_connections_per_endpoint: int | None = None,
        idle_timeout: float | None = 30.0,
        max_lifetime: float | None = None,
        connect_timeout: float | None = 10.0,
        acquire_timeout: float | None = 30.0,
        connect_retries: int = 2,
        retry_backoff: float = 0.05,
        require_resumption: bool = False,
        share_sessions_across_ports: bool = False,
        close_timeout: float = 2.0,
        store_timeout: float = 0.5,
        tls_transport: str = "auto",
        session_engine: str = "auto",
    ) -> None:
        # Every option is checked in one place.
        config = PoolConfig(
            max_connections=max_connections,
            max_connections_per_endpoint=max_connections_per_endpoint,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            connect_timeout=connect_timeout,
            acquire_timeout=acquire_timeout,
            connect_retries=connect_retries,
            retry_backoff=retry_backoff,
            require_resumption=require_resumption,
            share_sessions_across_ports=share_sessions_across_ports,
            close_timeout=close_timeout,
            store_timeout=store_timeout,
            tls_transport=tls_transport,
        )
        self._background = Background(self._close_connection)
        super().__init__(ssl_context, session_cache, session_engine, config, self._background)
        self._table = SlotTable(self.config, unusable=self._unusable, removed=self._removed)
        self._slot_of: dict[Connection, Slot] = {}  # the user's connections, by slot
        self._closing: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._lifetimes = Lifetimes(self.config, self._reap)
        # A connect started at once ends (ConnectTimeout) before acquire_timeout could: its
        # deadline would never fire, and setting it costs a timer per connect.
        connect, acquire = self.config.connect_timeout, self.config.acquire_timeout
        self._connect_ends_first = connect is not None and (acquire is None or connect < acquire)

    # -- checking out and in ----------------------------------------------------------------

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def connection(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> ConnectionBlock:
        """Check out a connection for the ``async with`` block, then give it back.

        If the block raises (or is cancelled), the connection is closed rather than pooled:
        whatever protocol exchange was under way is in an unknown state.
        """
        return ConnectionBlock(self, host, port, server_hostname)

    async def acquire(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> Connection:
        """Check out a connection to ``host:port``: an idle one, or a new one when a slot is free.

        ``server_hostname`` overrides the name sent as SNI and verified in the certificate (and
        under which sessions are cached). Waiters are served first come, first served. Give the
        connection back with :meth:`release` or close it with ``await conn.aclose()``.

        Raises :class:`PoolClosed`, :class:`PoolTimeout` (``acquire_timeout``), or a
        :class:`ConnectError` subclass naming the endpoint.
        """
        endpoint = self._endpoint_for(host, port, server_hostname)
        self._check_loop()
        if self._closed:
            raise PoolClosed(f"the pool is closed; cannot connect to {endpoint}")
        to_close: list[ConnectionRecord] = []
        slot = self._table.claim_unqueued(endpoint, to_close)  # (a waiter only when needed)
        self._background.close(to_close)
        if slot is not None and slot.record is not None:
            return self._hand_out(slot)  # an idle one: no deadline to set up
        if slot is not None and self._connect_ends_first:
            return await self._connect(slot)  # (raises ConnectError, never TimeoutError)
        try:
            async with deadline(self.config.acquire_timeout):
                if slot is None:
                    slot = await self._wait_for_slot(endpoint)
                if slot.record is None:
                    return await self._connect(slot)
                return self._hand_out(slot)
        except ConnectError:
            raise
        except TimeoutError:
            raise PoolTimeout(
                f"no connection to {endpoint} within "
                f"acquire_timeout={self.config.acquire_timeout}s ({self._describe_load()})",
                endpoint,
            ) from None

    async def release(self, conn: Connection) -> None:
        """Give a checked-out connection back to the pool for reuse.

        A connection that is closed, or past ``max_lifetime``, or made with a context since
        replaced, is closed instead. Releasing twice raises RuntimeError.
        """
        if (slot := self._checked_out_slot(conn, "release")) is None:
            return  # closed by the user after checkout: nothing left to give back
        record = slot.record
        assert record is not None  # (whether the socket has unread bytes is asked at checkout)
        now = self._now()
        reusable = (
            not self._closed
            and conn.is_reusable(ask_socket=False)
            and not self._lifetimes.too_old(conn, now)
            and conn.ssl_object.context is self._connector.ssl_context
        )
        if reusable:
            self._table.make_idle(slot, now)
            to_close = self._assign()
            self._lifetimes.watch(slot)
            # Cancel-safe without a shield (a task per call): see Connector.released.
            capture = self._connector.released(record)
            if capture is not None:
                await capture
        else:
            self._table.remove(slot)
            to_close = [record, *self._assign()]
        if to_close:
            await self._background.close_now(to_close)

    async def _close_checked_out(self, conn: Connection) -> None:
        """Close a connection the user holds, freeing its slot (``Connection.aclose``)."""
        slot = self._slot_of.get(conn)
        if slot is None:
            if not conn.closed:
                raise ValueError(f"{conn!r} belongs to another pool")
            return
        assert slot.record is not None
        self._table.remove(slot)
        if not self._table.waiting:  # (nothing to assign: no list of one to close)
            return await self._close_connection(slot.record)
        await self._background.close_now([slot.record, *self._assign()])

    def _checked_out_slot(self, conn: Connection, action: str) -> Slot | None:
        slot = self._slot_of.get(conn)
        if slot is None:
            if conn.closed:
                return None  # closed (by the user or the pool) after checkout
            raise ValueError(f"cannot {action} {conn!r}: it belongs to another pool")
        if slot.state is not SlotState.IN_USE:
            raise RuntimeError(f"cannot {action} {conn!r}: it is not checked out")
        return slot

    async def _wait_for_slot(self, endpoint: Endpoint) -> Slot:
        waiter = self._table.enqueue(endpoint, asyncio.get_running_loop().create_future())
        self._background.close(self._assign())
        try:
            return await waiter.future
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                # A slot was assigned as we were cancelled (or timed out): hand it on, or it is
                # lost forever (httpcore #1093, aiohttp #9670).
                self._give_back(future.result())
            elif not future.done() or future.cancelled():
                # Cancelling the task cancels the future it awaits; either way it was never
                # served. (A future failed with PoolClosed was already counted out.)
                future.cancel()
                self._table.withdraw(waiter)
            raise

    async def _connect(self, slot: Slot) -> Connection:
        try:
            record = await self._connector.connect(slot.endpoint, self._close_checked_out)
        except BaseException:
            self._table.remove(slot)
            self._background.close(self._assign())
            raise
        self._table.connected(slot, record)
        self._slot_of[record.connection] = slot
        if self._closed:
            self._table.remove(slot)
            self._background.close([record])
            raise PoolClosed(f"the pool was closed while connecting to {slot.endpoint}")
        return self._hand_out(slot)

    def _hand_out(self, slot: Slot) -> Connection:
        assert slot.record is not None
        conn = slot.record.connection
        conn.checkouts += 1
        return conn

    def _give_back(self, slot: Slot) -> None:
        """Undo an assignment whose acquirer left before taking it."""
        to_close: list[ConnectionRecord] = []
        if slot.record is not None and not self._closed:
            self._table.make_idle(slot, self._now(), keep_time=True)
        else:
            self._table.remove(slot)
            if slot.record is not None:
                to_close.append(slot.record)
        self._background.close(to_close + self._assign())

    def _assign(self) -> list[ConnectionRecord]:
        return self._table.assign() if self._table.waiting and not self._closed else []

    def _removed(self, slot: Slot) -> None:
        """Called by the table for every slot it stops counting."""
        if slot.record is not None:
            self._slot_of.pop(slot.record.connection, None)
        if self._drained is not None and not self._table.slots:
            self._drained.set()

    def _unusable(self, slot: Slot) -> bool:  # (an idle one: to close rather than hand out?)
        return self._lifetimes.unusable(slot, self._now(), self._connector.ssl_context)

    def _reap(self) -> None:
        """The reaper's timer: close idle connections that expired while the pool was quiet."""
        to_close: list[ConnectionRecord] = []
        for slot in self._table.idle_slots():
            if self._lifetimes.expired(slot, self._now()):
                assert slot.record is not None
                self._table.remove(slot)
                to_close.append(slot.record)
        self._background.close(to_close + self._assign())
        for slot in self._table.idle_slots():
            self._lifetimes.watch(slot)

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self, timeout: float | None = 10.0) -> None:
        """Close the pool: idle connections now, connections in use once released (after
        ``timeout`` seconds they are closed anyway, with a warning); then a store that writes
        behind finishes its writes (its ``flush()``, within ``timeout`` too). From the start,
        every acquire raises :class:`PoolClosed`. Safe to call more than once."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(timeout))
        await asyncio.shield(self._closing)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._closed

    def stats(self) -> PoolStats:
        """A snapshot of the counters and the current state (see :class:`PoolStats`)."""
        counts = self._table.state_counts()
        return PoolStats.of(
            self._counters,
            self.session_cache,
            in_use=counts[SlotState.IN_USE],
            idle=counts[SlotState.IDLE],
            connecting=counts[SlotState.CONNECTING],
            waiting=self._table.waiting,
        )

    async def _close(self, timeout: float | None) -> None:
        self._closed = True
        self._lifetimes.stop()
        self._table.fail_waiters(
            lambda endpoint: PoolClosed(f"the pool was closed while waiting for {endpoint}")
        )
        await self._background.close_now(self._remove_idle())
        if self._table.slots:
            self._drained = asyncio.Event()
            try:
                async with deadline(timeout):
                    await self._drained.wait()
            except TimeoutError:
                logger.warning(
                    "pool closed with %d connection(s) still in use after %ss; closing them",
                    len(self._table.slots),
                    timeout,
                )
                for slot in list(self._table.slots):
                    self._table.remove(slot)
                    if slot.record is not None:
                        self._connector.abort(slot.record)
        await self._background.drain(timeout)
        await flush_store(self._connector.cache, timeout)

    def _remove_idle(self) -> list[ConnectionRecord]:
        idle = self._table.idle_slots()
        for slot in idle:
            self._table.remove(slot)
        return [slot.record for slot in idle if slot.record is not None]

    # -- misc -------------------------------------------------------------------------------

    async def _close_connection(self, record: ConnectionRecord) -> None:
        try:
            await self._connector.close(record)
        except Exception:  # a failing custom cache must not break closing
            logger.exception("error while closing %r", record.connection)

    async def _close_idle(self) -> None:
        await self._background.close_now(self._remove_idle() + self._assign())

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._lifetimes.loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this Pool is bound to another event loop")

    def _describe_load(self) -> str:
        return (
            f"{len(self._table.slots)}/{self.config.max_connections} connections open, "
            f"{self._table.idle_count} idle, {self._table.waiting} waiting"
        )

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Like asyncio transports and aiohttp sessions: say so when sockets are left open.
        table = getattr(self, "_table", None)
        if not getattr(self, "_closed", True) and table is not None and table.slots:
            _warn(
                f"unclosed {self!r}: use 'async with Pool()' or 'await pool.aclose()'",
                ResourceWarning,
                source=self,
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Pool {state}: {self._describe_load()}>"
