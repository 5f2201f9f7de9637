"""The connect deadline (``aiotlspool.deadlines``): one timer for many blocks of one length,
behaving like ``asyncio.timeout`` for each block."""

from __future__ import annotations

import asyncio
import sys

import pytest

from aiotlspool.deadlines import Deadlines


async def test_a_block_past_its_time_raises_timeout_and_leaves_the_task_uncancelled() -> None:
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadlines.block():
        await asyncio.sleep(5)
    assert 0.04 <= loop.time() - started < 1.0
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left pending either


async def test_blocks_that_end_in_time_are_never_cancelled_and_share_one_timer() -> None:
    deadlines = Deadlines(0.2)
    timers = set()
    for _ in range(20):
        with deadlines.block():
            await asyncio.sleep(0.001)
        timers.add(id(deadlines._timer))
    assert len(timers) == 1  # armed once, for the first block; the FIFO is empty again
    assert not deadlines._open
    await asyncio.sleep(0.3)  # it fires once, finds nothing open and is not armed again
    assert deadlines._timer is None


async def test_only_the_blocks_whose_time_is_up_are_cancelled() -> None:
    # An older block still open, a younger one that ended (it waits in the FIFO behind the
    # older), a third still running when the older times out.
    deadlines = Deadlines(0.3)

    async def hold(seconds: float) -> str:
        with deadlines.block():
            await asyncio.sleep(seconds)
        return "done"

    older = asyncio.create_task(hold(5))  # times out at 0.3 s
    await asyncio.sleep(0.1)
    younger = asyncio.create_task(hold(0.001))
    await asyncio.sleep(0.02)
    assert younger.done() and len(deadlines._open) == 2  # ended, behind the older one
    third = asyncio.create_task(hold(0.25))  # ends at ~0.37 s, its deadline at ~0.42 s
    results = await asyncio.gather(older, third, return_exceptions=True)
    assert isinstance(results[0], TimeoutError)
    assert results[1] == "done"
    assert younger.result() == "done"
    assert not deadlines._open


async def test_a_cancel_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0)

    async def hold() -> None:
        with deadlines.block():
            await asyncio.sleep(5)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._open


async def test_a_deadline_with_an_outside_cancel_pending_stays_a_cancellation() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("Task.cancelling() is new in Python 3.11")
    deadlines = Deadlines(0.02)

    async def hold() -> None:
        with deadlines.block():
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:  # the deadline's; then someone else cancels too
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                raise

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(hold())


async def test_no_seconds_means_no_deadline() -> None:
    deadlines = Deadlines(None)
    with deadlines.block():
        await asyncio.sleep(0.01)
    assert deadlines._timer is None and not deadlines._open
