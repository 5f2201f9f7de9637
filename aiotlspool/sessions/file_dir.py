"""The directory of a :class:`~aiotlspool.FileSessionCache`: its key directories and entries,
the sweep that drops expired entries and keeps the store within bounds, and the counts of
what was dropped, refused or failed.

The sweep reads names and mtimes only, never contents. Expiry by name is only ever a reason
to drop an entry; whether an entry is *offered* is decided on its authenticated contents.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter

from . import private_files as files
from .file_entries import KEY_DIR, EntryName, parse_name

__all__ = ["LEDGER", "StoreDirectory"]

logger = logging.getLogger("aiotlspool")

# One byte per entry written, by every process: how a writer knows when the store may be
# over its bound without counting it (see StoreDirectory.written). Reset when it grows large.
LEDGER = ".writes"
LEDGER_RESET = 1 << 20


class StoreDirectory:
    """One store directory (created 0700, or checked: see ``private_directory``).

    ``counts`` holds ``expired``, ``evicted``, ``skipped`` and ``failed``; ``rejections``
    the refused files by reason. Thread-safe: counts change under a lock, and everything else
    is a file operation that is atomic on its own.
    """

    def __init__(self, path: str) -> None:
        self.path = files.private_directory(path)
        self.counts: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._ledger = files.Ledger(os.path.join(self.path, LEDGER))
        self._count_at_sweep = 0  # entries found by this process's last sweep
        self._ledger_at_sweep = 0  # the ledger's size then
        _live_directories.add(self)

    # -- listing ------------------------------------------------------------------------

    def key_dir(self, dir_name: str) -> str:
        return os.path.join(self.path, dir_name)

    def key_dirs(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            self.failed("list", exc)
            return []
        return [os.path.join(self.path, n) for n in names if KEY_DIR.fullmatch(n)]

    def entries_in(self, directory: str) -> list[EntryName]:
        """The entries of one key directory; other files in it are refused."""
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.failed("list", exc)
            return []
        found, temporaries = [], []
        for name in names:
            entry = parse_name(name)
            if entry is not None:
                found.append(entry)
            elif name.startswith((files.TEMP_PREFIX, files.CLAIM_PREFIX)):
                temporaries.append(name)
            else:
                self.reject(os.path.join(directory, name), "foreign file")
        if temporaries:
            files.remove_stale_temporaries(directory, temporaries)
        return found

    # -- bounds -------------------------------------------------------------------------

    def written(self, ttl: float, max_entries: int) -> None:
        """One entry more: sweep when the store may now hold more than ``max_entries``.

        Every writer appends a byte to the shared ledger file for each entry it writes, so
        the entries at this process's last sweep plus the ledger's growth since is an upper
        bound of the store's size that counts every process's writes, for two system calls
        (a write and an fstat of the open ledger).
        """
        with self.lock:
            ledger = self._ledger.add()
            due = (
                ledger is None  # (unreadable: count for real)
                or ledger < self._ledger_at_sweep  # (reset by a sweep elsewhere)
                or self._count_at_sweep + ledger - self._ledger_at_sweep > max_entries
            )
        if due:
            self.sweep(ttl, max_entries)

    def sweep(self, ttl: float, max_entries: int | None) -> int:
        """Drop expired entries and, given ``max_entries``, the least recently used beyond it
        (down to 15/16 of it, for room before the next sweep); how many entries remain."""
        ledger = self._ledger.size()
        if ledger > LEDGER_RESET:
            self._ledger.reset()
            ledger = 0
        now = time.time()
        live: list[tuple[int, int, str]] = []  # (last use, stored, path)
        for directory in self.key_dirs():
            for entry in self.entries_in(directory):
                path = os.path.join(directory, entry.file_name)
                if entry.expired(now, ttl):
                    self.drop(path, "expired")
                    continue
                try:
                    live.append((os.lstat(path).st_mtime_ns, entry.stored_ns, path))
                except OSError:
                    continue  # taken meanwhile
            files.rmdir(directory)  # (only if empty)
        if max_entries is not None and len(live) > max_entries:
            live.sort()
            target = max_entries - max_entries // 16
            for _, _, path in live[: len(live) - target]:
                self.drop(path, "evicted")
            live = live[len(live) - target :]
        with self.lock:
            # (Writes between reading the ledger and listing count twice: a sweep comes early.)
            self._count_at_sweep, self._ledger_at_sweep = len(live), ledger
        return len(live)

    # -- counting -----------------------------------------------------------------------

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def drop(self, path: str, why: str) -> None:
        """Remove an entry, counting it under ``why`` if this call removed it."""
        if files.remove(path):
            self.count(why)

    def reject(self, path: str, reason: str, detail: str = "") -> None:
        """Refuse a file: log, count and delete it."""
        logger.warning(
            "session store: refused %s (%s%s); deleted", path, reason, f": {detail}" * bool(detail)
        )
        with self.lock:
            self.rejections[reason] += 1
        files.remove(path)

    def failed(self, operation: str, exc: OSError) -> None:
        logger.warning("session store %s: %s failed: %s", self.path, operation, exc)
        self.count("failed")


_live_directories: weakref.WeakSet[StoreDirectory] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for directory in list(_live_directories):
        directory.lock = threading.Lock()  # one held by another thread at fork stays held


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
