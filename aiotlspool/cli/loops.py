"""Event loops for the demo: the factory behind ``--loop``, and running a coroutine on a loop
from a factory (the demo's client and its server process both use it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

LoopName = Literal["asyncio", "uvloop"]
T = TypeVar("T")


def loop_factory(name: LoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop factory for ``--loop`` (ImportError if uvloop is not installed)."""
    if name == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(coro: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop]) -> T:
    """``asyncio.run`` with a loop factory, on Python 3.10 too."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    loop = factory()  # pragma: no cover - Python 3.10
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


__all__ = ["LoopName", "loop_factory", "run"]
