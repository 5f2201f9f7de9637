"""Deadlines of one length for many blocks, on one timer: the pool's connect timeout.

``asyncio.timeout`` arms a timer for each block and cancels it at the end (on uvloop a libuv
handle started and closed again): work on every connect, for a timer that almost never fires
(docs/benchmarks.md, "The pool's own cost, counted"). The blocks of one pool's connects all
last the same ``seconds``, so their deadlines come in the order they start: the open blocks
wait in a FIFO and a single timer is armed for the oldest. When it fires it cancels the blocks
whose time is up and re-arms for the oldest left; a block that ends while it is the oldest
leaves the FIFO at once (connect after connect, the FIFO holds one block and the timer fires
once per ``seconds``). Nothing cancels the timer: once no block is open it fires one last time
and is not re-armed (it holds only the FIFO).

A block that times out behaves as under ``asyncio.timeout``: its task is cancelled, and the
block raises ``TimeoutError`` in place of the ``CancelledError`` (any other cancellation, from
outside, goes through unchanged).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from types import TracebackType

# The loop may run a timer up to its clock resolution early: a block whose deadline is this
# close is treated as due, rather than arming a timer again for a moment's time.
_EARLY = 1e-3


class Deadlines:
    """Hands out :meth:`block` s that each end ``seconds`` after they start (None: never)."""

    __slots__ = ("_open", "_timer", "seconds")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._open: deque[_Block] = deque()  # by deadline (the order they started in)
        self._timer: asyncio.TimerHandle | None = None

    def block(self) -> _Block:
        """A ``with`` block (in a task) that raises ``TimeoutError`` once ``seconds`` are over.

        A plain ``with``, not ``async with``: entering and leaving never wait, and an async
        context manager would make two coroutines per block."""
        return _Block(self)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        pending = self._open
        due = loop.time() + _EARLY
        while pending:
            block = pending[0]
            if not block.ended:
                if block.expires_at > due:
                    self._timer = loop.call_at(block.expires_at, self._fire, loop)
                    return
                block.expire()
            pending.popleft()


class _Block:
    __slots__ = ("_cancelling", "_owner", "ended", "expired", "expires_at", "task")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self.ended = False
        self.expired = False
        self.expires_at = 0.0
        self.task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def __enter__(self) -> None:
        owner = self._owner
        seconds = owner.seconds
        if seconds is None:
            self.ended = True
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # (given the loop: one running-loop lookup less)
        if task is None:
            raise RuntimeError("a deadline block must run inside a task")
        self.task = task
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        self.expires_at = loop.time() + seconds
        owner._open.append(self)
        if owner._timer is None:
            owner._timer = loop.call_at(self.expires_at, owner._fire, loop)

    def expire(self) -> None:
        self.expired = True
        assert self.task is not None
        self.task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.ended:
            return  # no deadline
        self.ended = True
        pending = self._owner._open
        while pending and pending[0].ended:  # (a block that ended behind an older one waits)
            pending.popleft()
        if not self.expired:
            return
        if sys.version_info >= (3, 11):
            # As asyncio.timeout: our cancel() is taken back; only a CancelledError that is
            # ours alone (no other cancel() pending) becomes a TimeoutError.
            assert self.task is not None
            if self.task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
        elif exc_type is asyncio.CancelledError:  # pragma: no cover - Python 3.10
            raise TimeoutError from exc
