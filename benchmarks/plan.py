"""What ``--quick`` and the full run measure: sizes chosen to fit their time budgets on a
2-core machine (quick < 3 min, full ~15 min)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """A block of the reconnect matrix: every client, every combination below."""

    server: str  # "primary" (nginx when installed) or "secondary" (the Python server)
    key: str  # "rsa" or "ecdsa"
    tls: tuple[str, ...]
    loops: tuple[str, ...]  # loops not installed are skipped
    concurrency: tuple[int, ...]
    reps: int
    count: int  # timed connections per batch, at least 3 x tasks (also bounded in time)


@dataclass(frozen=True)
class Settings:
    mode: str
    cells: tuple[Cell, ...]
    seconds_cap: float  # per timed run
    paired_count: int  # rounds of the paired sequential comparison (one connection per client)
    paired_tls: tuple[str, ...]
    paired_loops: tuple[str, ...]
    burst_sizes: tuple[int, ...]
    burst_reps: int
    burst_loops: tuple[str, ...]
    idle_cycles: int
    idle_reps: int
    rtt: float
    latency_samples: int
    latency_loops: tuple[str, ...]
    memory_clients: tuple[str, ...]
    memory_tls: tuple[str, ...]
    memory_count: int
    memory_samples: int
    session_captures: int  # per engine, for bytes per cached session
    seam_reps: int
    profile_count: int
    profile_idle_cycles: int
    lifetime: float  # servers and proxies stop by themselves after this many seconds
    # integrations: rounds per (TLS version, loop), requests per variant per round, time cap
    integrations_rounds: int
    integrations_block: int
    integrations_seconds: float
    # Sections left out unless named in --sections.
    skip_by_default: tuple[str, ...] = ()
    # fleet: worker processes, sequential connections each, repetitions of every run; fresh
    # processes in the file-store chain; the Redis tier's cost: rounds, block, time cap
    fleet_processes: int = 8
    fleet_connections: int = 20
    fleet_reps: int = 3
    fleet_restarts: int = 4
    fleet_cost_rounds: int = 60
    fleet_cost_block: int = 20
    fleet_cost_seconds: float = 40.0
    # memory: pool reconnects in the long run and its time cap; distinct endpoints put into
    # one MemorySessionCache for its bound, and that run's time cap
    memory_long_count: int = 3_000
    memory_long_seconds: float = 15.0
    cache_endpoints: int = 50_000
    cache_seconds: float = 10.0
    # bare: sequential connects per batch, rounds of every variant, seconds per s_time run
    bare_connects: int = 80
    bare_rounds: int = 8
    s_time_seconds: float = 4.0
    # peers: rounds per (TLS version, loop, mode) cell, sequential requests per block, time cap
    peers_rounds: int = 60
    peers_block: int = 30
    peers_seconds: float = 22.0

    @property
    def key_types(self) -> tuple[str, ...]:
        return tuple(sorted({cell.key for cell in self.cells}))


BOTH = ("1.2", "1.3")
LOOPS = ("asyncio", "uvloop")

QUICK = Settings(
    mode="quick",
    cells=(
        Cell("primary", "rsa", BOTH, LOOPS, (1, 8), reps=6, count=50),
        Cell("secondary", "rsa", BOTH, ("uvloop",), (1,), reps=4, count=50),
    ),
    seconds_cap=3.0,
    paired_count=60,
    paired_tls=BOTH,
    paired_loops=LOOPS,
    burst_sizes=(8, 64),
    burst_reps=3,
    burst_loops=("uvloop",),
    idle_cycles=3000,
    idle_reps=3,
    rtt=0.020,
    latency_samples=10,
    latency_loops=("uvloop",),
    memory_clients=("pool-stdlib", "pool-native", "raw"),
    memory_tls=("1.3",),
    memory_count=500,
    memory_samples=10,
    session_captures=1000,
    seam_reps=200,
    profile_count=100,
    profile_idle_cycles=2000,
    lifetime=600,
    integrations_rounds=8,
    integrations_block=10,
    integrations_seconds=12.0,
    # The libraries' reconnect section adds ~1 min, the fleet ~1: only when named.
    skip_by_default=("integrations", "fleet", "peers"),
    fleet_reps=1,
    fleet_restarts=3,
    fleet_cost_rounds=8,
    fleet_cost_seconds=8.0,
    bare_connects=40,
    bare_rounds=5,
    s_time_seconds=2.0,
    peers_rounds=20,
    peers_block=20,
    peers_seconds=9.0,
)

FULL = Settings(
    mode="full",
    cells=(
        Cell("primary", "rsa", BOTH, LOOPS, (1, 8, 64), reps=12, count=100),
        Cell("primary", "ecdsa", BOTH, LOOPS, (1, 8), reps=6, count=100),
        Cell("secondary", "rsa", BOTH, LOOPS, (1, 8), reps=6, count=100),
    ),
    seconds_cap=8.0,
    paired_count=300,
    paired_tls=BOTH,
    paired_loops=LOOPS,
    burst_sizes=(8, 64),
    burst_reps=5,
    burst_loops=LOOPS,
    idle_cycles=20000,
    idle_reps=5,
    rtt=0.020,
    latency_samples=30,
    latency_loops=LOOPS,
    memory_clients=("pool-stdlib", "pool-native", "pool-nocache", "handwritten", "raw"),
    memory_tls=BOTH,
    memory_count=2000,
    memory_samples=20,
    session_captures=3000,
    seam_reps=1000,
    profile_count=400,
    profile_idle_cycles=10000,
    lifetime=2400,
    integrations_rounds=30,
    integrations_block=20,
    integrations_seconds=40.0,
    memory_long_count=100_000,
    memory_long_seconds=180.0,
    cache_endpoints=1_000_000,
    cache_seconds=120.0,
)
