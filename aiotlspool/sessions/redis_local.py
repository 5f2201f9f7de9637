"""The in-process side of :class:`~aiotlspool.RedisSessionCache` (:class:`InProcess`): the
local tier of parsed sessions, this process's view of what Redis holds (for ``size()``), the
entries waiting to be written, and the keys it used.

The local tier holds two kinds of parsed sessions, each with its deadline (min(``ttl`` from
storing, the server's lifetime, 7 days), epoch seconds) and its entry's name:

- ``reusable``: per key, the newest session that may be used again (TLS 1.2, or any with
  ``reuse_tls13_tickets``), written or read by this process: offered without a round trip
  until it expires, is invalidated, or this process stores a newer one;
- ``copies``: TLS 1.3 tickets this process wrote, by key and entry name. A ticket is offered
  only after this process won it in Redis (the atomic pop of ``TAKE``); the copy then spares
  verifying and parsing the entry (~250 us). A copy is never offered on its own: the ticket is
  in Redis, where another process may take it.

Both are bounded (least recently used dropped first). Not thread-safe: the store holds its lock
around every call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

from .cached import CachedSession
from .file_entries import EntryName
from .key import SessionKey
from .redis_entries import apply_put, lru_score
from .redis_writer import Pending, WriteQueue

__all__ = ["Held", "InProcess", "LocalTier", "View"]

K = TypeVar("K")
V = TypeVar("V")
TOUCH_EVERY = 1.0  # seconds between two LRU updates of one key for local hits


@dataclass(slots=True)
class Held:
    session: CachedSession
    deadline: float  # epoch seconds: not offered from then on
    name: EntryName  # of its entry in Redis


class LocalTier:
    """The parsed sessions (see the module docstring), ``max_size`` of each kind."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.reusable: OrderedDict[str, Held] = OrderedDict()
        self.copies: OrderedDict[tuple[str, str, int, str], Held] = OrderedDict()

    def reusable_for(self, key_id: str, now: float) -> Held | None:
        held = self.reusable.get(key_id)
        if held is None:
            return None
        if held.deadline <= now:
            del self.reusable[key_id]  # (its entry in Redis is counted when found expired)
            return None
        self.reusable.move_to_end(key_id)
        return held

    def hold_reusable(self, key_id: str, held: Held) -> None:
        current = self.reusable.get(key_id)
        if current is not None and current.name.stored_ns > held.name.stored_ns:
            return  # (a newer one is held already)
        self.reusable[key_id] = held
        self.reusable.move_to_end(key_id)
        _bound(self.reusable, self.max_size)

    def hold_copy(self, key_id: str, held: Held) -> None:
        if held.name.tls13:
            self.reusable.pop(key_id, None)  # the server moved to TLS 1.3: the TLS 1.2 goes
        self.copies[_index(key_id, held.name)] = held
        _bound(self.copies, self.max_size)

    def copy_of(self, key_id: str, name: EntryName, taken: bool, now: float) -> Held | None:
        """The parsed session of an entry this process wrote (a ticket: that it just won)."""
        index = _index(key_id, name)
        held = self.copies.pop(index, None) if taken else self.copies.get(index)
        if held is None or held.deadline <= now:
            return None
        return held

    def forget(self, key_id: str, session: CachedSession | None, tag: str | None) -> None:
        """Drop ``session`` (by identity or tag) of a key, or all of the key's (None)."""
        held = self.reusable.get(key_id)
        if held is not None and (
            session is None or held.session is session or held.name.tag == tag
        ):
            del self.reusable[key_id]
        for index in [i for i in self.copies if i[0] == key_id]:
            copy = self.copies[index]
            if session is None or copy.session is session or copy.name.tag == tag:
                del self.copies[index]

    def clear(self) -> None:
        self.reusable.clear()
        self.copies.clear()


class View:
    """The entry names of each key's list as this process last saw them (in the replies of
    its scripts): what ``size()`` counts, without a round trip. Bounded to ``max_keys``."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.lists: OrderedDict[str, tuple[EntryName, ...]] = OrderedDict()

    def saw(self, key_id: str, names: tuple[EntryName, ...]) -> None:
        if names:
            self.lists[key_id] = names
            self.lists.move_to_end(key_id)
            _bound(self.lists, self.max_keys)
        else:
            self.lists.pop(key_id, None)


class InProcess:
    """What one store holds in this process; ``local_size`` None: no local tier."""

    def __init__(self, local_size: int | None, max_keys: int, max_pending: int) -> None:
        self.local = None if local_size is None else LocalTier(local_size)
        self.view = View(max_keys)
        self.queue = WriteQueue(max_pending)
        self.keys: OrderedDict[str, SessionKey] = OrderedDict()  # used by this process
        self.touches: dict[str, int] = {}  # key id -> LRU score of its last local hit
        self._touched_at: dict[str, float] = {}
        self._max_keys = max_keys

    def note(self, key_id: str, key: SessionKey) -> None:
        """A key this process used (what invalidate_where can name)."""
        self.keys[key_id] = key
        self.keys.move_to_end(key_id)
        _bound(self.keys, 4 * self._max_keys)

    def hit(self, key_id: str, now: float, reuse: bool, queued: bool) -> CachedSession | None:
        """A session for ``key_id`` without a round trip: a reusable one held, or (``queued``)
        the newest waiting to be written, which a ticket leaves for good."""
        held = None if self.local is None else self.local.reusable_for(key_id, now)
        if held is not None:
            return held.session
        if not queued:
            return None
        pending = self.queue.take(key_id, now, single_use=not reuse)
        if pending is None:
            return None
        if self.local is not None and pending.name.tls13 and not reuse:
            self.local.copy_of(key_id, pending.name, True, now)  # (drops the copy)
        return pending.session

    def hold(self, key_id: str, held: Held, reusable: bool) -> None:
        if self.local is not None:
            if reusable:
                self.local.hold_reusable(key_id, held)
            else:
                self.local.hold_copy(key_id, held)

    def touch(self, key_id: str, now: float) -> bool:
        """A local hit: note it for the LRU index, at most once a second per key (whether
        noted)."""
        if now - self._touched_at.get(key_id, 0.0) < TOUCH_EVERY:
            return False
        if len(self._touched_at) > 4 * self._max_keys:
            self._touched_at.clear()
        self._touched_at[key_id] = now
        self.touches[key_id] = lru_score()
        return True

    def take_touches(self) -> dict[str, int]:
        touches, self.touches = self.touches, {}
        return touches

    def written(self, item: Pending, names: tuple[EntryName, ...], victims: list[str]) -> None:
        """An entry is in Redis: its key's list is now ``names``; ``victims`` went."""
        self.view.saw(item.key_id, names)
        for victim in victims:
            self.view.saw(victim, ())
            if self.local is not None:
                self.local.forget(victim, None, None)

    def forget(self, key_id: str, session: CachedSession | None, tag: str | None) -> int:
        """Drop ``session`` (by identity or tag) or all of a key's; how many were waiting."""
        if self.local is not None:
            self.local.forget(key_id, session, tag)
        return self.queue.forget(key_id, session, tag)

    def clear(self) -> None:
        if self.local is not None:
            self.local.clear()
        self.queue.clear()
        self.view.lists.clear()
        self.touches.clear()
        self.keys.clear()

    def size(self, ttl: float) -> int:
        """The view, with what waits to be written applied, less what has expired."""
        lists = dict(self.view.lists)
        for item in self.queue.unwritten():
            lists[item.key_id], _ = apply_put(lists.get(item.key_id, ()), item.name, item.keep)
        now = time.time()
        return sum(not name.expired(now, ttl) for names in lists.values() for name in names)

    def after_fork(self) -> None:
        """In a forked child: entries waiting to be written are the parent's to write."""
        self.queue.clear()
        self.queue.batch = None
        self.touches.clear()


def _index(key_id: str, name: EntryName) -> tuple[str, str, int, str]:
    """A copy's index: its key and what names its entry (cheaper than the whole name)."""
    return key_id, name.writer, name.stored_ns, name.tag


def _bound(mapping: OrderedDict[K, V], size: int) -> None:
    while len(mapping) > size:
        mapping.popitem(last=False)
