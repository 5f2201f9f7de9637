"""The counts of a :class:`~aiotlspool.RedisSessionCache` (a base class of it): what this
process's store found, dropped, refused and failed, like the file store's counts."""

from __future__ import annotations

import logging
import threading
from collections import Counter

__all__ = ["StoreCounts"]

logger = logging.getLogger("aiotlspool")


class StoreCounts:
    """Counts under a lock (which the store also holds for its in-process state)."""

    def __init__(self, namespace: str) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._namespace = namespace

    @property
    def expired(self) -> int:
        """Entries this process found expired (in Redis, or waiting to be written); Redis
        drops others silently (PEXPIRE)."""
        return self._counts["expired"]

    @property
    def evicted(self) -> int:
        """Entries dropped by the bounds by this process's writes (per key, ``max_keys``)."""
        return self._counts["evicted"]

    @property
    def skipped_puts(self) -> int:
        """Sessions not stored because they may not be (another engine's, a client
        certificate's)."""
        return self._counts["skipped"]

    @property
    def dropped_puts(self) -> int:
        """Sessions not written: the queue was full, or their batch failed."""
        return self._counts["dropped"]

    @property
    def failed_operations(self) -> int:
        """Redis calls that failed or timed out (a get raised; a batch was dropped)."""
        return self._counts["failed"]

    @property
    def rejected_entries(self) -> int:
        """Entries refused - corrupt, tampered, signed with an unknown key, moved under another
        key, bound to other settings, unusable - removed and never offered; :attr:`rejections`
        counts them by reason."""
        with self._lock:
            return sum(self._rejections.values())

    @property
    def rejections(self) -> Counter[str]:
        """Refused entries by reason (a copy): ``corrupt``, ``tampered``, ``foreign``,
        ``binding``, ``unusable`` (see :class:`~aiotlspool.EntrySealer`)."""
        with self._lock:
            return Counter(self._rejections)

    def counters(self) -> dict[str, int]:
        """Every count: ``local_hits`` (no round trip), ``remote_hits``, ``remote_misses``,
        ``expired``, ``evicted``, ``skipped``, ``dropped``, ``failed``, ``rejected``; the
        single flight's: ``flights_led`` (misses that made the full handshake for the
        fleet), ``flights_waited`` (gets that waited for another process's session),
        ``waits_in_vain`` (of those, the ones that got none)."""
        with self._lock:
            out = {n: self._counts[n] for n in ("local_hits", "remote_hits", "remote_misses")}
            out.update({n: self._counts[n] for n in ("flights_led", "flights_waited")})
            out["waits_in_vain"] = self._counts["waits_in_vain"]
            out.update({n: self._counts[n] for n in ("expired", "evicted", "skipped")})
            out.update(dropped=self._counts["dropped"], failed=self._counts["failed"])
            out["rejected"] = sum(self._rejections.values())
            return out

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def _count_failure(self) -> None:
        self._count("failed")

    def _refuse(self, key_id: str, reason: str) -> None:
        """Count (and log) a refused entry; the caller makes sure it leaves Redis."""
        logger.warning(
            "session store %s: refused an entry of key %s... (%s); deleted",
            self._namespace,
            key_id[:16],
            reason,
        )
        with self._lock:
            self._rejections[reason] += 1
