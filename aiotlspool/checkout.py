"""``async with pool.connection(...)``: the block that checks a connection out and back in.

A class rather than ``contextlib.asynccontextmanager``: a generator-based context manager costs
an async generator, its first-iteration hook and two extra frames per connect, about 1 % of a
resumed connect's client CPU (benchmarks/bare.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from types import TracebackType
from typing import Protocol

from .connection import Connection


class _Checkouts(Protocol):
    """What the block needs from the pool."""

    async def acquire(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> Connection: ...

    def release(self, conn: Connection) -> Awaitable[None]: ...

    def _close_checked_out(self, conn: Connection) -> Awaitable[None]: ...


class ConnectionBlock:
    """Checks out a connection on entry; gives it back on a clean exit, closes it if the block
    raised (or was cancelled): whatever protocol exchange was under way is in an unknown state.
    An exception is never swallowed."""

    __slots__ = ("_conn", "_host", "_pool", "_port", "_server_hostname")

    def __init__(self, pool: _Checkouts, host: str, port: int, server_hostname: str | None) -> None:
        self._pool = pool
        self._host = host
        self._port = port
        self._server_hostname = server_hostname
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        if self._conn is not None:
            raise RuntimeError("a pool.connection() block cannot be entered twice")
        self._conn = await self._pool.acquire(
            self._host, self._port, server_hostname=self._server_hostname
        )
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        assert conn is not None
        if exc_type is None:
            await self._pool.release(conn)
        else:
            await self._pool._close_checked_out(conn)
