"""What ``aiotlspool bench`` measures: HDR histograms, one load generator's results per slice
and warm-up, and their totals per mode, merged across slices and processes.

Latencies go into HDR histograms (the ``hdrhistogram`` package, from the ``bench-cli``
extra): microseconds from 1 us to an hour at 3 significant digits, so a percentile is exact to
0.1% whatever the spread, and histograms of several processes merge exactly. Results cross
process boundaries as plain values (histograms encoded as bytes).
"""

from __future__ import annotations

import importlib
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    TLSHandshakeError,
)

HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_FIGURES = 3
HISTOGRAMS = ("handshake", "connect", "latency")


def missing_dependency() -> str | None:
    """The module the bench needs and cannot import (its extra is not installed), or None."""
    for module in ("hdrh.histogram", "rich"):
        try:
            importlib.import_module(module)
        except ImportError:
            return "hdrhistogram" if module.startswith("hdrh") else module
    return None


class Histogram:
    """An HDR histogram of durations (recorded in seconds, kept in microseconds)."""

    __slots__ = ("_hdr",)

    def __init__(self, encoded: bytes | None = None) -> None:
        hdr: Any = importlib.import_module("hdrh.histogram")  # no type hints: Any
        self._hdr: Any = hdr.HdrHistogram(1, HIGHEST_US, SIGNIFICANT_FIGURES)
        if encoded:
            self._hdr.decode_and_add(encoded)

    def record(self, seconds: float) -> None:
        self._hdr.record_value(min(max(1, round(seconds * 1e6)), HIGHEST_US))

    def add(self, encoded: bytes) -> None:
        """Merge a histogram sent as :meth:`encode` made it."""
        if encoded:
            self._hdr.decode_and_add(encoded)

    def encode(self) -> bytes:
        return bytes(self._hdr.encode()) if self.count else b""

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    def summary_ms(self) -> dict[str, Any]:
        """count, min, p50, p90, p99 and max in milliseconds (None when empty)."""
        empty = self.count == 0

        def ms(us: int) -> float | None:
            return None if empty else round(us / 1000, 3)

        hdr = self._hdr
        return {
            "count": self.count,
            "min": ms(hdr.get_min_value()),
            "p50": ms(hdr.get_value_at_percentile(50)),
            "p90": ms(hdr.get_value_at_percentile(90)),
            "p99": ms(hdr.get_value_at_percentile(99)),
            "max": ms(hdr.get_max_value()),
        }


class ReplyError(Exception):
    """The request after the handshake failed; ``kind`` says how."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def error_kind(exc: BaseException) -> str:
    """The kind of a failed connection, as counted in ``errors_by_kind`` (docs/cli.md)."""
    if isinstance(exc, ReplyError):
        return exc.kind
    if isinstance(exc, PoolTimeout):
        return "acquire_timeout"
    if isinstance(exc, ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, CertificateError):
        return "certificate"
    if isinstance(exc, TLSHandshakeError):
        return "tls_handshake"
    if isinstance(exc, ConnectError):
        cause = exc.__cause__
        if isinstance(cause, ConnectionRefusedError):
            return "refused"
        if isinstance(cause, socket.gaierror):
            return "resolve"
        return "connect_error"
    return f"other:{type(exc).__name__}"


@dataclass
class WarmUpResult:
    """One generator's warm-up for one mode (not counted in the measurement)."""

    mode: str
    connections: int = 0
    full: int = 0
    resumed: int = 0
    tickets_first: int | None = None  # sessions stored after the first, full handshake
    engine: str = ""


@dataclass
class SliceResult:
    """One generator's part of one slice."""

    mode: str
    worker: int
    connections: int = 0  # finished without error
    errors: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0  # cut short by Ctrl-C
    full: int = 0  # handshakes, also of connections whose request failed afterwards
    resumed: int = 0
    sessions_stored: int | None = None  # None: no session cache (resume off)
    rejected: int = 0  # sessions offered that the server refused
    misses: int = 0  # connects that found no session to offer
    arrivals: int = 0  # open loop: connections started on schedule
    elapsed: float = 0.0
    cpu: float = 0.0  # CPU seconds of the event loop's thread
    histograms: dict[str, bytes] = field(default_factory=dict)
    interrupted: bool = False


@dataclass
class ModeTotals:
    """Everything measured for one mode, all processes and slices together."""

    mode: str
    connections: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    full: int = 0
    resumed: int = 0
    sessions_stored: int | None = None
    rejected: int = 0
    misses: int = 0
    arrivals: int = 0
    elapsed: float = 0.0  # wall time: per slice, the slowest process
    cpu: float = 0.0
    worker_busy: dict[int, list[float]] = field(default_factory=dict)  # worker: [cpu, elapsed]
    machine: list[int] = field(default_factory=lambda: [0, 0])  # busy and total CPU ticks
    histograms: dict[str, Histogram] = field(default_factory=dict)
    warmup: WarmUpResult = field(default_factory=lambda: WarmUpResult(""))

    def __post_init__(self) -> None:
        self.histograms = {name: Histogram() for name in HISTOGRAMS}
        self.warmup.mode = self.mode

    def add_warmup(self, result: WarmUpResult) -> None:
        warm = self.warmup
        warm.connections += result.connections
        warm.full += result.full
        warm.resumed += result.resumed
        warm.engine = result.engine
        if result.tickets_first is not None:
            warm.tickets_first = max(warm.tickets_first or 0, result.tickets_first)

    def add_slice(self, results: list[SliceResult], machine: tuple[int, int] | None) -> None:
        """One slice of every process."""
        for result in results:
            self.connections += result.connections
            self.errors.update(result.errors)
            self.cancelled += result.cancelled
            self.full += result.full
            self.resumed += result.resumed
            self.arrivals += result.arrivals
            self.rejected += result.rejected
            self.misses += result.misses
            self.cpu += result.cpu
            if result.sessions_stored is not None:
                self.sessions_stored = (self.sessions_stored or 0) + result.sessions_stored
            busy = self.worker_busy.setdefault(result.worker, [0.0, 0.0])
            busy[0] += result.cpu
            busy[1] += result.elapsed
            for name, encoded in result.histograms.items():
                self.histograms[name].add(encoded)
        self.elapsed += max((result.elapsed for result in results), default=0.0)
        if machine is not None:
            self.machine[0] += machine[0]
            self.machine[1] += machine[1]

    @property
    def attempts(self) -> int:
        return self.connections + sum(self.errors.values())

    @property
    def handshakes(self) -> int:
        return self.full + self.resumed

    @property
    def per_second(self) -> float:
        return self.connections / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def resumed_share(self) -> float | None:
        return self.resumed / self.handshakes if self.handshakes else None

    @property
    def loop_busy(self) -> float | None:
        """The busiest process's event loop: its CPU time over its wall time."""
        shares = [cpu / wall for cpu, wall in self.worker_busy.values() if wall > 0]
        return max(shares) if shares else None

    @property
    def machine_busy(self) -> float | None:
        busy, total = self.machine
        return busy / total if total > 0 else None


def machine_ticks() -> tuple[int, int] | None:
    """Busy and total CPU time of the whole machine so far, in ticks (Linux /proc/stat; None
    elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    total = sum(fields[:8])  # guest time is already in user time
    return total - idle, total


def cpu_count() -> int:
    return os.cpu_count() or 1


__all__ = [
    "HISTOGRAMS",
    "Histogram",
    "ModeTotals",
    "ReplyError",
    "SliceResult",
    "WarmUpResult",
    "cpu_count",
    "error_kind",
    "machine_ticks",
    "missing_dependency",
]
