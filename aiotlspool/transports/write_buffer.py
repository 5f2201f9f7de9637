"""What the application wrote that ``SSL_write`` has not taken yet, and its water marks.

``SSL_write`` on a non-blocking socket (CPython never sets ``SSL_MODE_ENABLE_PARTIAL_WRITE``)
takes all of a buffer or reports that it would block, having already sent part of it; the
retry must pass the same bytes. So the buffer keeps the chunk last passed (:attr:`pending`)
apart from what came after it, and counts both in :attr:`size` until ``SSL_write`` returns.
"""

from __future__ import annotations

import collections

HIGH_WATER = 64 * 1024  # asyncio's default for socket transports
CHUNK = 256 * 1024  # the most passed to one SSL_write


class WriteBuffer:
    """Queued application data, the chunk being written, and the flow-control limits."""

    __slots__ = ("high", "low", "pending", "queue", "size")

    def __init__(self) -> None:
        self.pending: bytes | memoryview | None = None  # retried as it is until written
        self.queue: collections.deque[bytes | memoryview] = collections.deque()
        self.size = 0  # bytes of pending and queue
        self.high = HIGH_WATER
        self.low = HIGH_WATER // 4

    def set_limits(self, high: int | None, low: int | None) -> None:
        """asyncio's rules: high alone gives low = high // 4, low alone gives high = 4 * low."""
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high, self.low = high, low

    def add(self, data: bytes | bytearray | memoryview, size: int) -> None:
        """Queue ``size`` bytes of ``data`` (copied unless ``bytes``: the caller may reuse it)."""
        self.queue.append(data if type(data) is bytes else bytes(data))
        self.size += size

    def start(self, data: bytes | bytearray | memoryview, size: int) -> None:
        """With nothing pending: ``data`` is the chunk to pass to SSL_write now."""
        self.pending = data if type(data) is bytes else bytes(data)
        self.size += size

    def chunk(self) -> bytes | memoryview | None:
        """The bytes to pass to SSL_write next: the pending chunk, else at most :data:`CHUNK`
        bytes from the queue (a slice of a big write, or small writes joined); None if empty."""
        if self.pending is not None or not self.queue:
            return self.pending
        queue = self.queue
        first = queue.popleft()
        if len(first) > CHUNK:
            view = memoryview(first)
            queue.appendleft(view[CHUNK:])
            self.pending = view[:CHUNK]
            return self.pending
        parts = [first]
        size = len(first)
        while queue and size + len(queue[0]) <= CHUNK:
            part = queue.popleft()
            parts.append(part)
            size += len(part)
        self.pending = first if len(parts) == 1 else b"".join(parts)
        return self.pending

    def written(self) -> None:
        """SSL_write took the pending chunk."""
        if self.pending is not None:
            self.size -= len(self.pending)
            self.pending = None

    def clear(self) -> None:
        self.pending = None
        self.queue.clear()
        self.size = 0
