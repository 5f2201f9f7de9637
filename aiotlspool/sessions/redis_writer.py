"""Writing behind for :class:`~aiotlspool.RedisSessionCache`: puts wait in a bounded queue and
one task per store writes them in batches (one pipeline, one round trip), so that a connect
never waits on Redis to store a session.

Rules of the queue (the same as the ``PUT`` script's, applied early):

- per key at most ``tickets_per_endpoint`` TLS 1.3 tickets or one reusable session wait; the
  oldest beyond go (``evicted``), another TLS version replaces them all, and the same session
  is queued once;
- at most ``max_pending`` entries wait; beyond, the oldest is dropped (``dropped_puts``);
- a TLS 1.3 ticket still waiting - not yet sent to Redis - may be taken by this process's own
  next connect (it was never anywhere else: it stays single-use); one being written may not
  (it may already be in Redis), and a get for its key waits for the write to finish;
- the newest ticket of a key may be *held* (:meth:`WriteQueue.hold`): kept back from writing
  for this process's next connect, which then pays no round trip. A newer ticket sends the
  held one to the queue; so do lingering unused (:meth:`WriteQueue.release_held`) and
  ``flush()``. A held ticket is in no queue and not in Redis: whoever takes it is the only one;
- an entry whose lifetime ran out while waiting is dropped (``expired``).

A failed batch is dropped (it may have been written in part: never offered locally after
that), counted, and logged once per outage; the writer then pauses (1 s, doubling up to 30 s)
while the queue goes on filling, and from which the process's own connects keep taking tickets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from .cached import CachedSession
from .file_entries import EntryName

__all__ = ["Batch", "Pending", "WriteQueue", "Writer"]

logger = logging.getLogger("aiotlspool")

FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0


@dataclass(slots=True, eq=False)
class Pending:
    """One entry to write; sealed (``seal()``, ~100 us) only when it is written, so that a
    held ticket its own process takes back is never sealed."""

    key_id: str
    name: EntryName
    seal: Callable[[], bytes]  # the entry: its name, a newline, the sealed envelope
    session: CachedSession
    deadline: float  # epoch seconds
    keep: int  # entries kept per key (tickets_per_endpoint, or 1 for a reusable session)
    px: int  # PEXPIRE of the key's list, ms
    single_use: bool = False  # a ticket (this process keeps a copy of what it sends)
    sealed: bytes | None = None

    def element(self) -> bytes:
        if self.sealed is None:
            self.sealed = self.seal()
        return self.sealed


@dataclass(slots=True, eq=False)
class Batch:
    items: list[Pending]
    keys: set[str]
    done: asyncio.Future[None]


@dataclass
class WriteQueue:
    """The entries waiting, and the batch being written. Not thread-safe (the store's lock)."""

    max_pending: int
    pending: deque[Pending] = field(default_factory=deque)
    batch: Batch | None = None
    # key id -> (its newest ticket, held since: time.monotonic())
    held: dict[str, tuple[Pending, float]] = field(default_factory=dict)

    def hold(self, item: Pending, now: float) -> list[Pending]:
        """Hold ``item`` (a ticket) back from writing; what it replaces, and the oldest held
        beyond ``max_pending``, to be queued now."""
        out = []
        previous = self.held.get(item.key_id)
        if previous is not None:
            if previous[0].name.tag == item.name.tag:
                return []  # (the same session, held already)
            out.append(previous[0])
            del self.held[item.key_id]
        self.held[item.key_id] = (item, now)
        while len(self.held) > self.max_pending:
            out.append(self.held.pop(next(iter(self.held)))[0])
        return out

    def release_held(self, held_since: float, key_id: str | None = None) -> list[Pending]:
        """Stop holding the tickets held since ``held_since`` or before (of ``key_id`` only,
        if given); they are to be queued."""
        out = []
        for k, (item, since) in list(self.held.items()):
            if since <= held_since and (key_id is None or k == key_id):
                del self.held[k]
                out.append(item)
        return out

    def oldest_held(self) -> float | None:
        return min((since for _, since in self.held.values()), default=None)

    def add(self, item: Pending) -> tuple[int, int]:
        """Queue ``item``: (entries evicted by the per-key rules, entries dropped as over the
        bound)."""
        same = [p for p in self.pending if p.key_id == item.key_id]
        if any(p.name.tag == item.name.tag for p in same):
            return 0, 0
        evicted = 0
        for old in same:
            if old.name.tls13 != item.name.tls13:
                self.pending.remove(old)
                evicted += 1
        same = [p for p in same if p.name.tls13 == item.name.tls13]
        for old in same[: max(0, len(same) + 1 - item.keep)]:
            self.pending.remove(old)
            evicted += 1
        self.pending.append(item)
        dropped = 0
        while len(self.pending) > self.max_pending:
            self.pending.popleft()
            dropped += 1
        return evicted, dropped

    def take(self, key_id: str, now: float, single_use: bool) -> Pending | None:
        """The newest entry waiting for ``key_id`` (a held one first); a ticket
        (``single_use``) leaves the queue."""
        held = self.held.get(key_id)
        if held is not None:
            item = held[0]
            if item.deadline > now:
                if single_use:
                    del self.held[key_id]
                return item
            del self.held[key_id]  # (expired)
        for item in reversed(self.pending):
            if item.key_id == key_id and item.deadline > now:
                if single_use and item.name.tls13:
                    self.pending.remove(item)
                return item
        return None

    def forget(self, key_id: str, session: CachedSession | None, tag: str | None) -> int:
        def doomed(p: Pending) -> bool:
            return p.key_id == key_id and (
                session is None or p.session is session or p.name.tag == tag
            )

        gone = [p for p in self.pending if doomed(p)]
        for item in gone:
            self.pending.remove(item)
        held = self.held.get(key_id)
        if held is not None and doomed(held[0]):
            del self.held[key_id]
            gone.append(held[0])
        return len(gone)

    def start_batch(self, loop: asyncio.AbstractEventLoop, limit: int) -> tuple[Batch | None, int]:
        """The next batch (None if nothing waits) and how many waiting entries expired."""
        now, expired = time.time(), 0
        items: list[Pending] = []
        while self.pending and len(items) < limit:
            item = self.pending.popleft()
            if item.deadline <= now:
                expired += 1
            else:
                items.append(item)
        if not items:
            return None, expired
        self.batch = Batch(items, {item.key_id for item in items}, loop.create_future())
        return self.batch, expired

    def end_batch(self, batch: Batch) -> None:
        if self.batch is batch:
            self.batch = None
        if not batch.done.done():
            batch.done.set_result(None)

    def writing(self, key_id: str) -> Batch | None:
        """The batch being written, if it holds an entry of ``key_id``."""
        batch = self.batch
        return batch if batch is not None and key_id in batch.keys else None

    def unwritten(self) -> Iterator[Pending]:
        """Every entry not yet in Redis, in the order they will be written."""
        if self.batch is not None:
            yield from self.batch.items
        yield from self.pending
        yield from (item for item, _ in self.held.values())

    def clear(self) -> int:
        count = len(self.pending) + len(self.held)
        self.pending.clear()
        self.held.clear()
        return count


class Writer:
    """The task that runs ``step`` (write one batch; False when nothing was left) until
    nothing is left, pausing after a failure. ``describe`` names the store in logs."""

    def __init__(self, step: Callable[[], Awaitable[bool]], describe: str) -> None:
        self._step = step
        self._describe = describe
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._pause = FIRST_PAUSE
        self._resume_at = 0.0  # time.monotonic()

    @property
    def paused(self) -> bool:
        return self._failing and time.monotonic() < self._resume_at

    def kick(self) -> None:
        """Make sure the task runs (on the running loop)."""
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self) -> None:
        """Until the task has nothing left (or its loop ends)."""
        while (task := self._task) is not None and not task.done():
            await asyncio.wait([task])

    def reset(self) -> None:
        """In a forked child: the parent's task is not ours."""
        self._task = None
        self._failing, self._pause, self._resume_at = False, FIRST_PAUSE, 0.0

    async def _run(self) -> None:
        while True:
            wait = self._resume_at - time.monotonic()
            if self._failing and wait > 0:
                await asyncio.sleep(wait)
            try:
                if not await self._step():
                    return
            except Exception as exc:  # counted by the step; logged here, once per outage
                self._failed(exc)
            else:
                if self._failing:
                    self._failing, self._pause = False, FIRST_PAUSE
                    logger.info("%s: writing to Redis again", self._describe)

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "%s: could not write sessions to Redis (%s: %s); trying again in %.0f s, "
                "sessions wait in memory meanwhile",
                self._describe,
                type(exc).__name__,
                exc or "no answer",
                self._pause,
            )
        else:
            self._pause = min(self._pause * 2, LONGEST_PAUSE)
        self._resume_at = time.monotonic() + self._pause
