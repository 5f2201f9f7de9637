"""The single flight of :class:`~aiotlspool.RedisSessionCache`: one full handshake per key for a
fleet that starts cold, and this process's side of it (:class:`Flights`).

When a take finds a key empty, the ``TAKE`` script makes the caller the key's *leader* (``SET
{ns}:flight:<key id> <token> NX PX <lease>``, in the same round trip): its get returns None, it
makes the full handshake, and its put (``PUT``) publishes the session and ends the flight. A
take that finds another process leading *waits*: it takes again every few milliseconds (2 ms,
growing to 10 ms) until an entry is there, for at most ``wait`` seconds; then it gives up (None:
a full handshake). A leader that dies or never puts holds the key for its ``lease`` at most:
the next take after it becomes the leader. A process that waited in vain does not wait for that
key again for :data:`NO_WAIT_AFTER` seconds (a server that gives no sessions makes no leader
deliver; its connects must not wait each time).

Held tickets (see :mod:`~aiotlspool.sessions.redis_writer`) meet the flight here: a process
keeps its newest TLS 1.3 ticket for its own next connect - unless others need it. So a leader
publishes every session of the key at once until its first write ends the flight, and a
process that waited, or whose write ended a flight others waited for, publishes the key's
tickets at once for :data:`SHARE_FOR` seconds: the tickets of the leader's handshake and of the
resumptions that follow go round the waiters instead of sitting in one process.

Not thread-safe: the store holds its lock around every call.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter

__all__ = ["NO_WAIT_AFTER", "SHARE_FOR", "Flights", "Waiting"]

FIRST_POLL = 0.002  # seconds between a waiter's takes, growing by half up to LAST_POLL
LAST_POLL = 0.010
NO_WAIT_AFTER = 10.0  # seconds a process does not wait for a key after waiting in vain
SHARE_FOR = 1.0  # seconds a key's tickets are published at once after a flight had waiters
_BOUND = 4096  # keys remembered per kind (then the expired ones go, or all)


class Flights:
    """This process's flights: which keys it leads, waited for, or must share; ``wait`` 0:
    no single flight."""

    def __init__(self, wait: float, lease: float) -> None:
        self.wait = wait
        self.lease = lease
        self.token = secrets.token_hex(8)  # this store in this process (a leader's own takes)
        self._leading: dict[str, float] = {}  # key id -> lease end (time.monotonic())
        self._sharing: dict[str, float] = {}  # key id -> publish tickets at once until
        self._no_wait: dict[str, float] = {}  # key id -> do not lead nor wait until

    def lease_for(self, key_id: str) -> float:
        """The lease a take of ``key_id`` asks for (0: no flight for it now)."""
        if self.wait <= 0 or _active(self._no_wait, key_id):
            return 0.0
        return self.lease

    def begin_wait(self, key_id: str, since: float, counts: Counter[str]) -> Waiting:
        """A take found another process leading ``key_id``'s flight: wait for its session
        until ``wait`` after ``since`` (when the get began), sharing the key's tickets."""
        counts["flights_waited"] += 1
        _set(self._sharing, key_id, time.monotonic() + SHARE_FOR)
        return Waiting(since + self.wait)

    def missed(self, key_id: str, led: bool, waited: bool, counts: Counter[str]) -> None:
        """A get found no session: its caller leads the flight (``led``), or has no flight;
        one that ``waited`` waited in vain (no more waiting for the key for a while)."""
        counts["remote_misses"] += 1
        if led:
            counts["flights_led"] += 1
            _set(self._leading, key_id, time.monotonic() + self.lease)
        if waited:
            counts["waits_in_vain"] += 1
            _set(self._no_wait, key_id, time.monotonic() + NO_WAIT_AFTER)

    def written(self, key_id: str, waited: int) -> bool:
        """An entry of ``key_id`` is in Redis (its flight is over): whether others waited
        for it (then the key's tickets are shared for a while)."""
        self._leading.pop(key_id, None)
        if waited > 0:
            _set(self._sharing, key_id, time.monotonic() + SHARE_FOR)
        return waited > 0

    def publish_at_once(self, key_id: str) -> bool:
        """Whether a ticket of ``key_id`` goes to Redis now rather than being held."""
        return _active(self._leading, key_id) or _active(self._sharing, key_id)

    def after_fork(self) -> None:
        """In a forked child: a token and flights of its own."""
        self.token = secrets.token_hex(8)
        for marks in (self._leading, self._sharing, self._no_wait):
            marks.clear()


class Waiting:
    """One waiter's clock: when to take again, and when to give up (``until``, monotonic)."""

    def __init__(self, until: float) -> None:
        self.until = until
        self._poll = FIRST_POLL

    def left(self) -> float:
        return max(0.0, self.until - time.monotonic())

    def next_poll(self) -> float | None:
        """Seconds to sleep before the next take, or None: time is up."""
        left = self.until - time.monotonic()
        if left <= 0:
            return None
        poll, self._poll = self._poll, min(self._poll * 1.5, LAST_POLL)
        return min(poll, left)


def _active(marks: dict[str, float], key_id: str) -> bool:
    until = marks.get(key_id)
    if until is None:
        return False
    if until <= time.monotonic():
        del marks[key_id]
        return False
    return True


def _set(marks: dict[str, float], key_id: str, until: float) -> None:
    if len(marks) >= _BOUND and key_id not in marks:
        now = time.monotonic()
        for k in [k for k, v in marks.items() if v <= now]:
            del marks[k]
        if len(marks) >= _BOUND:
            marks.clear()
    marks[key_id] = until
