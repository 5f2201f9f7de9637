"""Statistics of a context made resuming by :func:`aiotlspool.enable_resumption`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class ResumptionStats:
    """A snapshot of :func:`aiotlspool.resumption_stats`: totals since resumption was enabled.

    Only client connections with a server name count (without one nothing is offered or
    stored, so they are not seen at all):

    - ``full`` / ``resumed``: completed handshakes, by kind;
    - ``rejected``: offered sessions the server did not resume (each was dropped from the
      store); so ``hits == resumed + rejected`` once every offered handshake completed;
    - ``hits`` / ``misses``: connections that were / were not offered a session;
    - ``stored``: sessions handed to the store;
    - ``stale_dropped``: sessions dropped because the context's verification settings changed
      since they were obtained (never offered under the new settings);
    - ``store_errors``: store calls that raised (each a miss, or a session not stored: the
      connection goes on, logged once per run of failures).
    """

    full: int = 0
    resumed: int = 0
    rejected: int = 0
    hits: int = 0
    misses: int = 0
    stored: int = 0
    stale_dropped: int = 0
    store_errors: int = 0


_NAMES = tuple(field.name for field in fields(ResumptionStats))


class Counters:
    """The running totals; any thread may count (sync clients, OpenSSL's callback)."""

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(_NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def reinit_after_fork(self) -> None:
        self._lock = threading.Lock()  # one held by another thread at fork stays held

    def snapshot(self) -> ResumptionStats:
        with self._lock:
            return ResumptionStats(**self._values)
