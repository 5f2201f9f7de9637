"""Runs the sections of a benchmark plan against running servers and collects raw results.

Runs are interleaved - every repetition goes through all clients, in a rotated order - so that
slow drifts of a noisy machine hit every client alike.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID

from . import bare, fleet, integrations, latency, memory, memory_long, micro, peers, profiling
from .certs import CertFiles
from .clients import ALL_CLIENTS, REFERENCE_CLIENTS, TICKETS_PER_ENDPOINT, Target
from .env import LoopFactory, Pinning, loop_factories
from .figures import POOL_ENGINES, summarise_cell
from .paired import run_paired
from .plan import Settings
from .proxy import DelayProxy
from .server import Server
from .workloads import run_burst, run_cell

SECTIONS = ("reconnect", "paired", "burst", "idle", "latency", "memory", "seam", "profile")
SECTIONS += ("integrations",)  # aiohttp / httpx with enable_resumption, curl_cffi
SECTIONS += ("fleet",)  # processes sharing sessions: Redis and file stores
SECTIONS += ("bare",)  # client CPU per connect: pool vs hand-written loop vs s_time
SECTIONS += ("peers",)  # the pool against libcurl (curl_cffi), reconnect-heavy HTTPS


class Bench:
    def __init__(
        self,
        settings: Settings,
        servers: dict[str, Server],  # role ("primary", "secondary") -> server
        certs: dict[str, CertFiles],
        clients: list[str],
        pinning: Pinning,
        console: Console,
        sections: tuple[str, ...],
    ) -> None:
        self.settings = settings
        self.servers = servers
        self.certs = certs
        self.clients = clients
        self.pinning = pinning
        self.console = console
        self.sections = sections
        self.factories = loop_factories()
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.progress = Progress(console=console, auto_refresh=False)
        self.task: TaskID | None = None

    # -- helpers ---------------------------------------------------------------------------

    def target(self, role: str, key: str, tls: str) -> Target:
        server = self.servers[role]
        return Target(server.ports[(key, tls)], self.certs[key], tls, server.plain_port)

    def loops(self, names: tuple[str, ...]) -> list[tuple[str, LoopFactory]]:
        chosen = [(n, self.factories[n]) for n in names if n in self.factories]
        return chosen or [("asyncio", self.factories["asyncio"])]

    def preferred_loop(self) -> tuple[str, LoopFactory]:
        name = "uvloop" if "uvloop" in self.factories else "asyncio"
        return name, self.factories[name]

    def step(self, description: str | None = None) -> None:
        # Redrawn here, between runs, never from a thread while a run is being timed.
        assert self.task is not None
        self.progress.update(self.task, advance=1, description=description)
        self.progress.refresh()

    def guarded(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one measurement; a failure is recorded and the benchmark goes on."""
        gc.collect()
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            message = f"{what} failed: {exc!r}"
            self.errors.append(message)
            self.console.print(f"[red]{message}[/red]")
            return None

    def _memory_clients(self) -> list[str]:
        return [c for c in self.settings.memory_clients if c in self.clients]

    def total_steps(self) -> int:
        s = self.settings
        steps = 0
        if "reconnect" in self.sections:
            for cell in s.cells:
                if cell.server in self.servers:
                    steps += (
                        len(cell.tls)
                        * len(self.loops(cell.loops))
                        * len(cell.concurrency)
                        * cell.reps
                        * len(self.clients)
                    )
        if "paired" in self.sections:
            steps += len(s.paired_tls) * len(self.loops(s.paired_loops))
        if "burst" in self.sections:
            engines = len([c for c in POOL_ENGINES if c in self.clients])
            steps += (
                2 * len(self.loops(s.burst_loops)) * len(s.burst_sizes) * s.burst_reps * engines
            )
        if "idle" in self.sections:
            steps += len(self.factories)
        if "latency" in self.sections:
            steps += 2 * len(self.loops(s.latency_loops))
        if "memory" in self.sections:
            engines = len([c for c in POOL_ENGINES if c in self.clients])
            steps += len(s.memory_tls) * (len(self._memory_clients()) + engines)
            steps += memory_long.steps(self)
        if "seam" in self.sections:
            steps += 2
        if "profile" in self.sections:
            steps += 2 * len(self._profiled_clients()) + 1
        if "integrations" in self.sections:
            steps += integrations.steps(self)
        if "fleet" in self.sections:
            steps += fleet.steps(self)
        if "bare" in self.sections:
            steps += bare.steps(self)
        if "peers" in self.sections:
            steps += peers.steps(self)
        return steps

    # -- sections ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        with self.progress:
            self.task = self.progress.add_task("starting", total=self.total_steps())
            for section in SECTIONS:
                if section in self.sections:
                    started = time.monotonic()
                    key = section if section != "profile" else "profiles"
                    results[key] = getattr(self, section)()
                    self.timings[section] = time.monotonic() - started
        results["errors"] = self.errors
        results["section_seconds"] = self.timings
        return results

    def reconnect(self) -> list[dict[str, Any]]:
        cells: list[dict[str, Any]] = []
        for cell in self.settings.cells:
            if cell.server not in self.servers:
                continue
            server = self.servers[cell.server]
            for tls in cell.tls:
                target = self.target(cell.server, cell.key, tls)
                for loop_name, factory in self.loops(cell.loops):
                    for tasks in cell.concurrency:
                        label = f"{server.kind} {cell.key} TLS {tls} {loop_name} {tasks} task(s)"
                        runs = self.guarded(
                            label,
                            run_cell,
                            server,
                            target,
                            self.clients,
                            factory,
                            count=max(cell.count, 3 * tasks),  # at least 3 waves
                            concurrency=tasks,
                            reps=cell.reps,
                            seconds=self.settings.seconds_cap,
                            after_batch=lambda name, rep, label=label, reps=cell.reps: self.step(
                                f"{label} {name} ({rep + 1}/{reps})"
                            ),
                        )
                        reps = {
                            c: [r.summary() for r in (runs or {}).get(c, [])] for c in self.clients
                        }
                        line = []
                        for client in self.clients:
                            data: dict[str, Any] = {
                                "server": server.kind,
                                "key": cell.key,
                                "tls": tls,
                                "loop": loop_name,
                                "concurrency": tasks,
                                "client": client,
                                "reps": reps[client],
                            }
                            if reps[client]:
                                data["median"] = summarise_cell(data)
                                cells.append(data)
                                flag = "⚑" if data["median"]["flagged"] else ""
                                line.append(f"{client} {data['median']['cps']:.0f}{flag}")
                        self.console.print(f"{label}: " + ", ".join(line) + " conn/s")
        return cells

    def paired(self) -> list[dict[str, Any]]:
        rows = []
        s = self.settings
        for tls in s.paired_tls:
            target = self.target("primary", "rsa", tls)
            for loop_name, factory in self.loops(s.paired_loops):
                row = self.guarded(
                    f"paired TLS {tls} {loop_name}",
                    run_paired,
                    self.servers["primary"],
                    target,
                    [*self.clients, *REFERENCE_CLIENTS],
                    loop_name,
                    factory,
                    count=s.paired_count,
                )
                self.step(f"paired sequential, TLS {tls}, {loop_name}")
                if row is not None:
                    rows.append(row)
                    self.console.print(
                        f"paired TLS {tls} {loop_name}: "
                        + ", ".join(
                            f"{name} {c['cps']:.0f}/s {c['cpu_us']:.0f} µs"
                            for name, c in row["clients"].items()
                        )
                        + (" ⚑" if row["flagged"] else "")
                    )
        return rows

    def burst(self) -> list[dict[str, Any]]:
        rows = []
        warmup = 2 * TICKETS_PER_ENDPOINT
        engines = [c for c in POOL_ENGINES if c in self.clients]
        for tls in ("1.2", "1.3"):
            target = self.target("primary", "rsa", tls)
            for loop_name, factory in self.loops(self.settings.burst_loops):
                for size in self.settings.burst_sizes:
                    for client in engines:
                        runs = []
                        for _ in range(self.settings.burst_reps):
                            run = self.guarded(
                                f"burst {size} TLS {tls} {loop_name} {client}",
                                run_burst,
                                self.servers["primary"],
                                target,
                                ALL_CLIENTS[client],
                                factory,
                                burst=size,
                                warmup=warmup,
                            )
                            if run is not None:
                                runs.append(run)
                            self.step(f"burst of {size}, TLS {tls}, {loop_name}, {client}")
                        if runs:
                            rows.append(_burst_row(client, tls, loop_name, runs))
                            self.console.print(
                                f"burst of {size} after {warmup} concurrent warm-up connects, "
                                f"TLS {tls}, {loop_name}, {client}: resumed "
                                f"{[r.resumed_server for r in runs]} (expected {runs[0].expected})"
                            )
        return rows

    def idle(self) -> list[dict[str, Any]]:
        rows = []
        target = self.target("primary", "rsa", "1.3")
        for loop_name, factory in self.factories.items():
            result = self.guarded(
                f"idle checkout {loop_name}",
                micro.run_idle,
                target,
                loop_name,
                factory,
                cycles=self.settings.idle_cycles,
                reps=self.settings.idle_reps,
            )
            self.step(f"idle checkout, {loop_name}")
            if result is not None:
                summary = result.summary()
                rows.append(summary)
                self.console.print(
                    f"idle checkout {loop_name}: pool {summary['pool_us']:.1f} µs, "
                    f"queue floor {summary['queue_us']:.2f} µs"
                )
        return rows

    def latency(self) -> list[dict[str, Any]]:
        rows = []
        s = self.settings
        for tls in ("1.2", "1.3"):
            target = self.target("primary", "rsa", tls)
            with DelayProxy(target.port, rtt=s.rtt, cpu=self.pinning.server_cpu) as proxy:
                for loop_name, factory in self.loops(s.latency_loops):
                    result = self.guarded(
                        f"latency TLS {tls} {loop_name}",
                        latency.run_latency,
                        target,
                        proxy.port,
                        loop_name,
                        factory,
                        rtt=s.rtt,
                        samples=s.latency_samples,
                    )
                    self.step(f"latency TLS {tls}, {loop_name}")
                    if result is not None:
                        summary = result.summary()
                        rows.append(summary)
                        self.console.print(
                            f"latency TLS {tls} {loop_name}: full {summary['full_ms']:.1f} ms, "
                            f"resumed {summary['resumed_ms']:.1f} ms, "
                            f"saved {summary['saved_rtt']:.2f} RTT"
                        )
        return rows

    def memory(self) -> dict[str, Any]:
        s = self.settings
        loop_name, _ = self.preferred_loop()
        cpu = self.pinning.client_cpu
        reconnects, sessions = [], []
        for tls in s.memory_tls:
            target = self.target("primary", "rsa", tls)
            for client in self._memory_clients():
                row = self.guarded(
                    f"memory {client} TLS {tls}",
                    memory.run_in_child,
                    memory.rss_over_reconnects,
                    target,
                    client,
                    loop_name,
                    s.memory_count,
                    s.memory_samples,
                    cpu=cpu,
                    timeout=60 + s.memory_count / 20,
                )
                self.step(f"memory, {client}, TLS {tls}")
                if row is not None:
                    reconnects.append(row)
                    self.console.print(
                        f"memory {client} TLS {tls}: {row['bytes_per_conn']:.0f} bytes per "
                        f"connection over {row['count']} reconnects"
                    )
            for client in POOL_ENGINES:
                if client not in self.clients:
                    continue
                engine = client.removeprefix("pool-")
                row = self.guarded(
                    f"session size TLS {tls} {engine}",
                    memory.run_in_child,
                    memory.session_size,
                    target,
                    engine,
                    s.session_captures,
                    cpu=cpu,
                    timeout=120,
                )
                self.step(f"session size, TLS {tls}, {engine} engine")
                if row is not None:
                    sessions.append(row)
        return {"reconnects": reconnects, "sessions": sessions, **memory_long.run_section(self)}

    def seam(self) -> list[dict[str, Any]]:
        rows = []
        _, factory = self.preferred_loop()
        for tls in ("1.2", "1.3"):
            target = self.target("primary", "rsa", tls)
            row = self.guarded(
                f"seam costs TLS {tls}",
                micro.run_seam_costs,
                target,
                factory,
                reps=self.settings.seam_reps,
            )
            self.step(f"session seam costs, TLS {tls}")
            if row is not None:
                rows.append(row)
        return rows

    def _profiled_clients(self) -> list[str]:
        return [c for c in ("pool-stdlib", "handwritten", "pool-native") if c in self.clients]

    def profile(self) -> list[dict[str, Any]]:
        """On the asyncio loop: its Python code is profiled, so the time the loop spends is
        attributed to the loop (uvloop's C code would be billed to whoever awaits it)."""
        rows = []
        factory = self.factories["asyncio"]
        count = self.settings.profile_count
        for tls in ("1.2", "1.3"):
            target = self.target("primary", "rsa", tls)
            for client in self._profiled_clients():
                row = self.guarded(
                    f"profile {client} TLS {tls}",
                    profiling.profile_reconnect,
                    target,
                    client,
                    factory,
                    count,
                )
                self.step(f"profile {client}, TLS {tls}")
                if row is not None:
                    rows.append(row)
        target = self.target("primary", "rsa", "1.3")
        row = self.guarded(
            "profile idle checkout",
            profiling.profile_idle,
            target,
            factory,
            self.settings.profile_idle_cycles,
        )
        self.step("profile idle checkout")
        if row is not None:
            rows.append(row)
        return rows

    def integrations(self) -> dict[str, Any]:
        """HTTP libraries without and with enable_resumption (benchmarks/integrations.py)."""
        return integrations.run_section(self)

    def fleet(self) -> dict[str, Any]:
        """Processes sharing sessions through Redis and files (benchmarks/fleet.py)."""
        return fleet.run_section(self)

    def bare(self) -> dict[str, Any]:
        """Client CPU per connect, pool vs hand-written loop (benchmarks/bare.py)."""
        return bare.run_section(self)

    def peers(self) -> dict[str, Any]:
        """The pool against curl_cffi, sequential and concurrent (benchmarks/peers.py)."""
        return peers.run_section(self)

    def settings_dict(self) -> dict[str, Any]:
        return asdict(self.settings)


def _burst_row(client: str, tls: str, loop: str, runs: list[Any]) -> dict[str, Any]:
    resumed = [r.resumed_server for r in runs]
    return {
        "client": client,
        "tls": tls,
        "loop": loop,
        "burst": runs[0].burst,
        "warmup": runs[0].warmup,
        "reps": len(runs),
        "resumed": resumed,
        "client_resumed": [r.resumed_client for r in runs],
        "median_resumed": statistics.median(resumed),
        "min_resumed": min(resumed),
        "expected": runs[0].expected,
        "cache_size_before": runs[0].cache_size_before,
    }


def _rotations(clients: list[str], reps: int) -> Iterator[list[str]]:
    """Each repetition starts with the next client, so no client always runs first."""
    for rep in range(reps):
        shift = rep % len(clients)
        yield clients[shift:] + clients[:shift]
