"""``aiotlspool bench``: its settings, checked before any I/O, and the plan of the run.

:class:`BenchOptions` is what every load generator gets (it is pickled to worker processes:
plain values only). :func:`plan` cuts the run into slices: with ``--resume both`` the two
modes take turns, in the order off, on, on, off, off, on... (ABBA), so that a change in the
machine's load during the run affects both modes alike.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass
from typing import Literal

from ..endpoint import Endpoint
from .probe import make_context
from .target import ProbeInputError

Resume = Literal["off", "on"]
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
MAX_PROCESSES = 64
MAX_DEFAULT_WARMUP = 100  # warm-up connections per process and mode, unless --warmup says
MAX_ROUNDS = 30  # --duration: a round per second of it, at most this many
BATCH = 50  # --connections: connections per mode and round (at least 4 x --concurrency)


@dataclass(frozen=True)
class BenchOptions:
    """The command line's settings (see docs/cli.md); counts are totals over all processes."""

    host: str
    port: int
    server_name: str | None = None  # None: the host
    cafile: str | None = None
    verify: bool = True
    tls: str = "1.3"
    resume: str = "both"  # "off", "on" or "both"
    concurrency: int = 1
    processes: int = 1
    duration: float | None = 10.0  # seconds per mode; None when connections is given
    connections: int | None = None  # per mode
    rate: float | None = None  # connections per second (open loop); None: closed loop
    warmup: int | None = None  # per process and mode; None: the process's concurrency
    timeout: float = 5.0
    send: bytes = b""
    reply_bytes: int | None = None
    loop: str = "asyncio"

    @property
    def modes(self) -> tuple[Resume, ...]:
        if self.resume == "both":
            return ("off", "on")
        return ("on",) if self.resume == "on" else ("off",)

    def check(self) -> None:
        """ProbeInputError for settings that cannot go together (before any I/O)."""
        if (self.duration is None) == (self.connections is None):
            raise ProbeInputError("give one of --duration and --connections")
        if self.tls not in TLS_VERSIONS or self.resume not in ("off", "on", "both"):
            raise ProbeInputError(f"invalid --tls {self.tls!r} or --resume {self.resume!r}")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ProbeInputError(f"--processes must be from 1 to {MAX_PROCESSES}")
        if self.concurrency < self.processes:
            raise ProbeInputError(
                f"--concurrency {self.concurrency} is below --processes {self.processes}: "
                "each process needs at least one connection at a time"
            )
        if self.connections is not None and self.connections < self.processes:
            raise ProbeInputError(
                f"--connections {self.connections} is below --processes {self.processes}"
            )
        if self.reply_bytes is not None and not self.send:
            raise ProbeInputError("--reply-bytes needs a request: --send TEXT or --http")
        if self.server_name == "" and self.verify:
            raise ProbeInputError(
                "--servername '' sends no SNI and would skip the certificate's name check; "
                "give a name, or add --insecure"
            )

    def endpoint(self) -> Endpoint:
        try:
            return Endpoint.create(self.host, self.port, self.server_name)
        except (TypeError, ValueError) as exc:
            raise ProbeInputError(str(exc)) from None

    def context(self) -> ssl.SSLContext:
        """A client context for ``--tls`` only (ProbeInputError for an unreadable --cafile)."""
        return make_context(TLS_VERSIONS[self.tls], cafile=self.cafile, verify=self.verify)

    def share(self, total: int, worker: int) -> int:
        """Worker ``worker``'s part of ``total`` (split as evenly as whole numbers allow)."""
        return total // self.processes + (worker < total % self.processes)

    def worker_concurrency(self, worker: int) -> int:
        return self.share(self.concurrency, worker)

    def worker_rate(self) -> float | None:
        return None if self.rate is None else self.rate / self.processes

    def worker_warmup(self, worker: int) -> int:
        if self.warmup is not None:
            return self.warmup
        return min(self.worker_concurrency(worker), MAX_DEFAULT_WARMUP)


@dataclass(frozen=True)
class Slice:
    """One mode's turn: for ``duration`` seconds, or ``connections`` connections (all
    processes together)."""

    mode: Resume
    duration: float | None
    connections: int | None


def plan(options: BenchOptions) -> list[Slice]:
    """The slices of the measured run, modes taking turns ABBA."""
    modes = options.modes
    budgets: list[tuple[float | None, int | None]] = []
    if options.duration is not None:
        rounds = max(1, min(MAX_ROUNDS, round(options.duration)))
        budgets = [(options.duration / rounds, None)] * rounds
    else:
        assert options.connections is not None
        batch = max(BATCH, 4 * options.concurrency)
        left = options.connections
        while left > 0:
            budgets.append((None, min(batch, left)))
            left -= batch
    slices = []
    for number, (duration, connections) in enumerate(budgets):
        for mode in modes if number % 2 == 0 else modes[::-1]:
            slices.append(Slice(mode, duration, connections))
    return slices


def arrivals(duration: float | None, connections: int | None, rate: float) -> int:
    """How many connections an open-loop slice starts: one every 1/rate seconds."""
    if connections is not None:
        return connections
    assert duration is not None
    return max(1, math.ceil(duration * rate - 1e-9))


__all__ = ["BenchOptions", "Resume", "Slice", "arrivals", "plan"]
