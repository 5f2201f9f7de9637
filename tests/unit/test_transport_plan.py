"""Which transport a connection gets, and whether it ends its own close (``transport_plan``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from aiotlspool.transports.choice import transport_plan


class _NarrowLoop(asyncio.SelectorEventLoop):
    """A loop whose create_connection is its own (it may not take ssl_shutdown_timeout)."""

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return await super().create_connection(*args, **kwargs)


@pytest.mark.parametrize(
    ("make_loop", "choice", "expected"),
    [
        (asyncio.SelectorEventLoop, "socket", (True, True)),
        (asyncio.SelectorEventLoop, "auto", (True, True)),
        (asyncio.SelectorEventLoop, "asyncio", (False, sys.version_info >= (3, 11))),
        (_NarrowLoop, "asyncio", (False, False)),  # the pool keeps its own close timer
    ],
)
def test_transport_plan(make_loop: Any, choice: str, expected: tuple[bool, bool]) -> None:
    loop = make_loop()
    try:
        assert transport_plan(choice, loop) == expected
    finally:
        loop.close()


def test_uvloop_ends_its_own_close() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert transport_plan("auto", loop) == (False, True)
    finally:
        loop.close()
