"""Whether a pooled connection may be handed out again: ``idle_timeout``, ``max_lifetime``,
the context it was made with, its socket; and the timer that closes expired idle connections
even when the pool goes quiet."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from .config import PoolConfig
from .connection import Connection
from .slots import Slot


class Lifetimes:
    """Expiry of idle connections, and one timer (the reaper) for the earliest expiry."""

    def __init__(self, config: PoolConfig, reap: Callable[[], None]) -> None:
        self.idle_timeout = config.idle_timeout
        self.max_lifetime = config.max_lifetime
        self.loop: asyncio.AbstractEventLoop | None = None  # the pool's, once it is known
        self._reap = reap
        self._timer: asyncio.TimerHandle | None = None

    def unusable(self, slot: Slot, now: float, context: ssl.SSLContext) -> bool:
        """Whether an idle slot's connection must be closed rather than handed out."""
        assert slot.record is not None
        conn = slot.record.connection
        if self.expired(slot, now) or conn.ssl_object.context is not context:
            return True  # (a connection made with a context since replaced)
        # Bytes that arrived while pooled mean the stream is out of step with its protocol.
        return conn.bytes_received != slot.received_at_release or not conn.is_reusable()

    def too_old(self, conn: Connection, now: float) -> bool:
        """Past ``max_lifetime``: not to be pooled again."""
        return self.max_lifetime is not None and now - conn.created_at >= self.max_lifetime

    def expired(self, slot: Slot, now: float) -> bool:
        when = self.expiry_time(slot)
        return when is not None and now >= when

    def expiry_time(self, slot: Slot) -> float | None:
        """Loop time at which an idle ``slot`` expires (None: never)."""
        when = None if self.idle_timeout is None else slot.released_at + self.idle_timeout
        if self.max_lifetime is not None and slot.record is not None:
            end_of_life = slot.record.connection.created_at + self.max_lifetime
            when = end_of_life if when is None else min(when, end_of_life)
        return when

    def watch(self, slot: Slot) -> None:
        """Make sure the reaper runs when the idle ``slot`` expires."""
        when = self.expiry_time(slot)
        if when is None or (self._timer is not None and self._timer.when() <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self.loop is not None
        self._timer = self.loop.call_at(when, self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._reap()
