"""Work the pool runs in the background - closing connections, storing sessions - and waits
for when it closes.

Closing is I/O (close_notify, and waiting for the server's), so it never runs inside the pool's
bookkeeping: connections to close are handed here, closed now by the caller that can wait, or
in a task otherwise. A close cut short by a cancellation finishes in the background too
(see :meth:`~aiotlspool.connector.Connector.close`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._timeout import deadline
from .record import ConnectionRecord

logger = logging.getLogger("aiotlspool")


class Background:
    """The pool's background tasks, and how it closes connections."""

    def __init__(self, close_one: Callable[[ConnectionRecord], Awaitable[None]]) -> None:
        self._close_one = close_one
        self._tasks: set[asyncio.Task[None]] = set()

    async def close_now(self, records: list[ConnectionRecord]) -> None:
        """Close ``records`` (concurrently) and return when they are closed."""
        if len(records) == 1:
            await self._close_one(records[0])  # the common case: no task for gather
        elif records:
            await asyncio.gather(*(self._close_one(record) for record in records))

    def close(self, records: list[ConnectionRecord]) -> None:
        """Close ``records`` in a background task."""
        if records:
            self.spawn(self.close_now(records))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task that :meth:`drain` waits for."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float | None) -> None:
        """Wait until every background task (and any they start) is done; after ``timeout``
        seconds cancel the rest (a custom session store that never answers must not hang the
        pool's close)."""
        try:
            async with deadline(timeout):
                while self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            logger.warning("cancelling %d background task(s) still running", len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
