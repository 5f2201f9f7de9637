"""A deadline for a block of awaits that works on Python 3.10 and later, on any loop."""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any

if sys.version_info >= (3, 11):

    def deadline(seconds: float | None) -> asyncio.Timeout:
        """Cancel the block after ``seconds`` and raise TimeoutError (no limit when None)."""
        return asyncio.timeout(seconds)

else:  # pragma: no cover - exercised on Python 3.10 only

    class deadline:  # a class named like the function above, used the same way
        """Cancel the block after ``seconds`` and raise TimeoutError (no limit when None).

        Unlike ``asyncio.wait_for`` on 3.10, the block runs in the caller's task, so a result
        that is ready when time runs out is never dropped (which would leak a connection).
        """

        def __init__(self, seconds: float | None) -> None:
            self._seconds = seconds
            self._handle: asyncio.TimerHandle | None = None
            self._fired = False

        async def __aenter__(self) -> None:
            if self._seconds is None:
                return
            task = asyncio.current_task()
            assert task is not None

            def expire() -> None:
                self._fired = True
                task.cancel()

            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(max(0.0, self._seconds), expire)

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> Any:
            if self._handle is not None:
                self._handle.cancel()
            if self._fired and exc_type is asyncio.CancelledError:
                raise TimeoutError from None
            return None
