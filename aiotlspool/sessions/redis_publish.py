"""How this process's sessions reach Redis, for :class:`~aiotlspool.RedisSessionCache`
(:class:`Publisher`): written behind in batches by one task, or at once; the newest TLS 1.3
ticket of a key held back for this process's next connect until it lingers unused, a newer one
comes, ``flush()`` is called, or other processes wait for the key (the single flight,
:mod:`~aiotlspool.sessions.redis_flight`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter

from .redis_flight import Flights
from .redis_io import RedisIO
from .redis_local import Held, InProcess
from .redis_writer import Pending, Writer

__all__ = ["BATCH", "Publisher"]

BATCH = 64  # entries written per round trip


class Publisher:
    """One store's writing. ``lock`` and ``counts`` are the store's; ``hold_for`` 0 (or no
    local tier, or reused tickets): nothing is held."""

    def __init__(
        self,
        lock: threading.Lock,
        counts: Counter[str],
        here: InProcess,
        io: RedisIO,
        flights: Flights,
        *,
        hold_for: float,
        max_keys: int,
        ttl: float,
        describe: str,
    ) -> None:
        self.lock = lock
        self.counts = counts
        self.here = here
        self.io = io
        self.flights = flights
        self.hold_for = hold_for
        self.max_keys = max_keys
        self.ttl = ttl
        self.writer = Writer(self._write_step, describe)
        self._linger: asyncio.TimerHandle | None = None  # publishes held tickets

    def behind(self, item: Pending) -> None:
        """Queue ``item`` (or hold it, a ticket: see the module docstring); returns at once."""
        with self.lock:
            if self._may_hold(item):
                released = self.here.queue.hold(item, time.monotonic())
                if self._linger is None:
                    loop = asyncio.get_running_loop()
                    self._linger = loop.call_later(self.hold_for, self._publish_lingering)
            else:
                released = [item]
            self._enqueue(released)
        if released:
            self.writer.kick()

    async def now(self, item: Pending) -> None:
        """Write ``item`` before returning (raises if Redis fails)."""
        with self.lock:
            touches = self.here.take_touches()
            self._keep_copy(item)
        await self._write([item], touches)

    def release_held(self) -> None:
        """Publish every held ticket (``flush()``)."""
        with self.lock:
            released = self.here.queue.release_held(math.inf)
            self._enqueue(released)
        if released:
            self.writer.kick()

    def after_fork(self, lock: threading.Lock) -> None:
        """In a forked child: the store's new lock; the parent's task and timer are not ours."""
        self.lock = lock
        self.writer.reset()
        self._linger = None

    def _may_hold(self, item: Pending) -> bool:
        return (
            self.hold_for > 0
            and self.here.local is not None
            and item.name.tls13
            and item.single_use
            and not self.flights.publish_at_once(item.key_id)
        )

    def _keep_copy(self, item: Pending) -> None:
        """A ticket on its way to Redis: keep its parsed session for when this process wins
        it back (see :mod:`~aiotlspool.sessions.redis_local`)."""
        if item.single_use:
            self.here.hold(item.key_id, Held(item.session, item.deadline, item.name), False)

    def _enqueue(self, items: list[Pending]) -> None:
        """Queue ``items`` for writing (under the lock)."""
        for item in items:
            self._keep_copy(item)
            evicted, dropped = self.here.queue.add(item)
            self.counts["evicted"] += evicted
            self.counts["dropped"] += dropped

    def _publish_lingering(self) -> None:
        """The timer: publish the tickets held ``hold_for`` unused; again for the rest."""
        self._linger = None
        now = time.monotonic()
        with self.lock:
            released = self.here.queue.release_held(now - self.hold_for)
            self._enqueue(released)
            oldest = self.here.queue.oldest_held()
        if released:
            self.writer.kick()
        if oldest is not None:
            delay = max(0.0, oldest + self.hold_for - now)
            self._linger = asyncio.get_running_loop().call_later(delay, self._publish_lingering)

    async def _write_step(self) -> bool:
        """The writer's step: one batch (and the pending LRU updates); False if none."""
        with self.lock:
            batch, expired = self.here.queue.start_batch(asyncio.get_running_loop(), BATCH)
            self.counts["expired"] += expired
            touches = self.here.take_touches()
        if batch is None and not touches:
            return False
        try:
            await self._write([] if batch is None else batch.items, touches)
        except Exception:
            with self.lock:
                self.counts["dropped"] += 0 if batch is None else len(batch.items)
            raise
        finally:
            if batch is not None:
                with self.lock:
                    self.here.queue.end_batch(batch)
        return True

    async def _write(self, items: list[Pending], touches: dict[str, int]) -> None:
        replies = await self.io.put(items, touches, self.max_keys, self.ttl)
        released = []
        with self.lock:
            for item, reply in zip(items, replies, strict=True):
                self.counts["evicted"] += reply.evicted
                self.here.written(item, reply.names, reply.victims)
                if self.flights.written(item.key_id, reply.waited):  # others wait: share
                    released += self.here.queue.release_held(math.inf, item.key_id)
            self._enqueue(released)
        if released:
            self.writer.kick()
