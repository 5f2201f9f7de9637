"""The pool's state: every connection slot and every waiting acquire, and the one assignment rule.

A :class:`Slot` is one connection counted against the limits, from the reservation made before
connecting until the connection is closed; its :class:`SlotState` says where it is. Waiting
acquires queue per endpoint and are served first come, first served across endpoints.
:meth:`SlotTable.claim` is the one rule that gives an endpoint a slot; both the acquire fast
path and :meth:`SlotTable.assign` (serving waiters) go through it. Everything here is
synchronous: on the event loop each call is atomic, so no lock is needed, and no I/O happens
here - connections to close are returned to the caller.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from .config import PoolConfig
from .endpoint import Endpoint
from .record import ConnectionRecord


class SlotState(enum.Enum):
    CONNECTING = "connecting"  # reserved; its acquirer is opening the connection
    IDLE = "idle"
    IN_USE = "in use"
    REMOVED = "removed"  # no longer counted; its connection is closed or closing


@dataclass(eq=False, slots=True)
class Slot:
    """One connection counted against the limits, and the pool's bookkeeping for it."""

    endpoint: Endpoint
    state: SlotState
    record: ConnectionRecord | None = None  # set once connected
    released_at: float = 0.0  # loop time when it last became idle
    received_at_release: int = 0  # bytes received when it became idle: more means out of step


@dataclass(eq=False, slots=True)
class Waiter:
    """An acquire waiting for a slot. ``order`` is its place in the global FIFO."""

    endpoint: Endpoint
    future: asyncio.Future[Slot]
    order: int


@dataclass(eq=False, slots=True)
class _EndpointSlots:
    """The slots and waiters of one endpoint (an index over the table)."""

    count: int = 0  # slots of this endpoint in any state but REMOVED
    idle: list[Slot] = field(default_factory=list)  # most recently released last
    waiters: deque[Waiter] = field(default_factory=deque)


class SlotTable:
    """Every slot and waiter of one pool.

    ``unusable(slot)`` tells whether an idle slot's connection must be closed rather than handed
    out (expired, closed by the peer, made with a replaced context); ``removed(slot)`` is told
    of every slot the table stops counting.
    """

    def __init__(
        self,
        config: PoolConfig,
        *,
        unusable: Callable[[Slot], bool],
        removed: Callable[[Slot], None],
    ) -> None:
        self.max_connections = config.max_connections
        self.per_endpoint = config.per_endpoint_limit
        self.unusable = unusable
        self.removed = removed
        self.slots: set[Slot] = set()
        self.idle_count = 0
        self.waiting = 0
        self._endpoints: dict[Endpoint, _EndpointSlots] = {}
        self._order = itertools.count()

    def claim_unqueued(self, endpoint: Endpoint, to_close: list[ConnectionRecord]) -> Slot | None:
        """:meth:`claim` for an acquire that no waiter of its endpoint is queued before."""
        slots = self._endpoints.get(endpoint)
        if slots is not None and slots.waiters:
            return None
        return self.claim(endpoint, to_close)

    def state_counts(self) -> dict[SlotState, int]:
        """How many slots are in each state."""
        counts = dict.fromkeys(SlotState, 0)
        for slot in self.slots:
            counts[slot.state] += 1
        return counts

    def idle_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.state is SlotState.IDLE]

    # -- the assignment rule ------------------------------------------------------------------

    def claim(self, endpoint: Endpoint, to_close: list[ConnectionRecord]) -> Slot | None:
        """A slot for ``endpoint`` now, or None: its most recently used usable idle slot (now
        IN_USE), else a new CONNECTING slot if both limits allow, evicting the longest-idle
        connection of another endpoint when only the global limit is in the way. Unusable idle
        connections met on the way, and the evicted one, are appended to ``to_close``."""
        slots = self._endpoints.get(endpoint)
        while slots is not None and slots.idle:
            slot = slots.idle.pop()
            self.idle_count -= 1
            slot.state = SlotState.IN_USE
            if not self.unusable(slot):
                return slot
            self.remove(slot)
            assert slot.record is not None
            to_close.append(slot.record)
            slots = self._endpoints.get(endpoint)  # (the removal may have dropped its entry)
        if slots is not None and slots.count >= self.per_endpoint:
            return None
        if len(self.slots) >= self.max_connections:
            victim = self._longest_idle()
            if victim is None:
                return None
            self.remove(victim)
            assert victim.record is not None
            to_close.append(victim.record)
        return self._reserve(endpoint, slots)

    def assign(self) -> list[ConnectionRecord]:
        """Serve waiters in FIFO order while :meth:`claim` finds them a slot; return the
        connections to close."""
        to_close: list[ConnectionRecord] = []
        while self.waiting:
            waiter = self._oldest_servable_waiter()
            if waiter is None:
                break
            slot = self.claim(waiter.endpoint, to_close)
            if slot is None:  # its idle connections were all unusable, and no room: look again
                continue
            self._forget_waiter(waiter)
            waiter.future.set_result(slot)
        return to_close

    def _oldest_servable_waiter(self) -> Waiter | None:
        best: Waiter | None = None
        room = len(self.slots) < self.max_connections or self.idle_count > 0
        for slots in self._endpoints.values():
            while slots.waiters and slots.waiters[0].future.done():
                slots.waiters.popleft()  # gave up (cancelled or timed out)
                self.waiting -= 1
            if not slots.waiters:
                continue
            head = slots.waiters[0]
            servable = bool(slots.idle) or (slots.count < self.per_endpoint and room)
            if servable and (best is None or head.order < best.order):
                best = head
        return best

    def _longest_idle(self) -> Slot | None:
        oldest: Slot | None = None
        for slots in self._endpoints.values():
            if slots.idle and (oldest is None or slots.idle[0].released_at < oldest.released_at):
                oldest = slots.idle[0]
        return oldest

    # -- waiters ------------------------------------------------------------------------------

    def enqueue(self, endpoint: Endpoint, future: asyncio.Future[Slot]) -> Waiter:
        waiter = Waiter(endpoint, future, next(self._order))
        self._index(endpoint).waiters.append(waiter)
        self.waiting += 1
        return waiter

    def withdraw(self, waiter: Waiter) -> None:
        """A waiter left without being served (cancelled, timed out)."""
        self._forget_waiter(waiter)
        self._drop_index_if_empty(waiter.endpoint, self._endpoints.get(waiter.endpoint))

    def _forget_waiter(self, waiter: Waiter) -> bool:
        slots = self._endpoints.get(waiter.endpoint)
        if slots is None:
            return False
        with suppress(ValueError):
            slots.waiters.remove(waiter)
            self.waiting -= 1
            return True
        return False

    def fail_waiters(self, make_error: Callable[[Endpoint], BaseException]) -> None:
        for slots in self._endpoints.values():
            for waiter in slots.waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(make_error(waiter.endpoint))
            slots.waiters.clear()
        self.waiting = 0

    # -- state changes (the only places a slot changes state) ---------------------------------

    def _reserve(self, endpoint: Endpoint, slots: _EndpointSlots | None) -> Slot:
        """A new CONNECTING slot; ``slots``: the endpoint's index entry, if it has one."""
        slot = Slot(endpoint, SlotState.CONNECTING)
        self.slots.add(slot)
        if slots is None:  # (looked up by the caller: _index would look again)
            slots = self._endpoints[endpoint] = _EndpointSlots()
        slots.count += 1
        return slot

    def connected(self, slot: Slot, record: ConnectionRecord) -> None:
        assert slot.state is SlotState.CONNECTING
        slot.record = record
        slot.state = SlotState.IN_USE

    def make_idle(self, slot: Slot, now: float, *, keep_time: bool = False) -> None:
        assert slot.state is SlotState.IN_USE
        assert slot.record is not None
        slot.state = SlotState.IDLE
        if not keep_time:
            slot.released_at = now
        slot.received_at_release = slot.record.connection.bytes_received
        self._index(slot.endpoint).idle.append(slot)
        self.idle_count += 1

    def remove(self, slot: Slot) -> None:
        """Stop counting ``slot`` (its connection, if any, is the caller's to close)."""
        if slot.state is SlotState.REMOVED:
            return
        self.slots.discard(slot)
        slots = self._endpoints[slot.endpoint]
        slots.count -= 1
        if slot.state is SlotState.IDLE:
            slots.idle.remove(slot)
            self.idle_count -= 1
        slot.state = SlotState.REMOVED
        self._drop_index_if_empty(slot.endpoint, slots)
        self.removed(slot)

    def _index(self, endpoint: Endpoint) -> _EndpointSlots:
        slots = self._endpoints.get(endpoint)
        if slots is None:
            slots = self._endpoints[endpoint] = _EndpointSlots()
        return slots

    def _drop_index_if_empty(self, endpoint: Endpoint, slots: _EndpointSlots | None) -> None:
        """Forget ``endpoint``'s index entry ``slots`` (its caller has it at hand) once empty."""
        if slots is not None and slots.count == 0 and not slots.waiters:
            del self._endpoints[endpoint]
