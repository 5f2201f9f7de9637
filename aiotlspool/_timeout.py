"""A deadline for a block of awaits that works on Python 3.10 and later, on any loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

if sys.version_info >= (3, 11):

    @asynccontextmanager
    async def deadline(seconds: float | None) -> AsyncIterator[None]:
        """Cancel the block after ``seconds`` and raise TimeoutError (no limit when None)."""
        async with asyncio.timeout(seconds):
            yield

else:  # pragma: no cover - exercised on Python 3.10 only

    @asynccontextmanager
    async def deadline(seconds: float | None) -> AsyncIterator[None]:
        """Cancel the block after ``seconds`` and raise TimeoutError (no limit when None).

        Unlike ``asyncio.wait_for`` on 3.10, the block runs in the caller's task, so a result
        that is ready when time runs out is never dropped (which would leak a connection).
        """
        if seconds is None:
            yield
            return
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(max(0.0, seconds), expire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()
