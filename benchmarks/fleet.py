"""A fleet of processes sharing TLS sessions (the ``fleet`` section).

Against the primary server (nginx when installed), RSA-2048, TLS 1.2 and 1.3:

- **Cold start** (``cold``): ``fleet_processes`` worker processes (spawned once, each pinned to
  the client CPU) start a run at the same moment, each with a new ``Pool(session_engine=
  "native")`` and a new store - its own ``MemorySessionCache``, or a ``RedisSessionCache`` on
  one throwaway ``redis-server`` (a new namespace per run) - and make ``fleet_connections``
  sequential connections each. Nothing warms anything up first. A thread of the harness
  watches Redis and notes when the run's first entry appears there; full handshakes that
  started before that moment could not have found a session.
- **One process first** (``leader``): one process makes one connection (and writes its
  sessions), then the others start together and make ``fleet_connections`` each.
- **The Redis tier's cost** (:mod:`benchmarks.fleet_cost`): client CPU per resumed connect
  with a ``MemorySessionCache`` vs a ``RedisSessionCache`` (its in-process tier on, and off:
  every read from Redis), in one process, taking turns block by block.
- **A restarted process with the file store**: a chain of fresh processes on one
  ``FileSessionCache`` directory, each making one connection per TLS version and exiting; every
  process after the first should resume on its first connection.

Handshakes are counted by the client (``conn.session_reused``, ``pool.stats()``) and by the
server (nginx's ``$ssl_session_reused``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import secrets
import tempfile
import threading
import time
import uuid
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

from . import fleet_cost, fleet_worker
from .memory import run_in_child
from .redis_server import RedisUnavailable, run_redis

START_MARGIN = 0.5  # seconds between the command and the agreed start: every worker is ready
STORES = ("memory", "redis")


class Workers:
    """``n`` spawned worker processes (:func:`benchmarks.fleet_worker.serve`), reused for every
    run; each run gives each a new context, pool and store."""

    def __init__(self, n: int, cpu: int | None, loop_name: str) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.pipes: list[PipeEnd] = []
        self.processes = []
        for i in range(n):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(
                target=fleet_worker.serve,
                args=(theirs, cpu, loop_name),
                daemon=True,
                name=f"bench-fleet-{i}",
            )
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)
        # Started (and their imports done) before the first run's clock starts.
        stop_at = time.monotonic() + 60
        for i, pipe in enumerate(self.pipes):
            if not pipe.poll(max(0.0, stop_at - time.monotonic())):
                self.stop()
                raise TimeoutError(f"fleet worker {i} did not start within 60 s")
            pipe.recv()

    def run(self, commands: dict[int, dict[str, Any]], timeout: float) -> dict[int, Any]:
        """Send each worker its command; wait for every answer."""
        for i, command in commands.items():
            self.pipes[i].send(command)
        answers = {}
        stop_at = time.monotonic() + timeout
        for i in commands:
            if not self.pipes[i].poll(max(0.0, stop_at - time.monotonic())):
                raise TimeoutError(f"fleet worker {i} did not answer within {timeout:.0f} s")
            status, value = self.pipes[i].recv()
            if status != "ok":
                raise RuntimeError(f"fleet worker {i} failed: {value}")
            answers[i] = value
        return answers

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(2)


class FirstEntry(threading.Thread):
    """Notes when the first list of entries of ``namespace`` appears in Redis (polled every
    millisecond with a synchronous client, until found or stopped)."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.pattern = "{" + namespace + "}:*"
        self.lru = ("{" + namespace + "}:lru").encode()
        self.seen: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            _, keys = self.client.scan(0, match=self.pattern, count=10_000)
            if any(key != self.lru for key in keys):
                self.seen = time.monotonic()
                return
            self.done.wait(0.001)

    def finish(self) -> float | None:
        self.done.set()
        self.join(5)
        self.client.close()
        return self.seen


def _summarise_run(
    answers: dict[int, Any], leader: int | None, seen: float | None, start_at: float
) -> dict[str, Any]:
    """Per process and in total: full/resumed, first connects, timing of the first entry."""
    processes = []
    for i, answer in sorted(answers.items()):
        records = answer["records"]
        processes.append(
            {
                "worker": i,
                "leader": i == leader,
                "late": answer["late"],
                "full": answer["full"],
                "resumed": answer["resumed"],
                "first_resumed": bool(records and records[0][3]),
                "store_errors": answer["store_errors"],
                "store": answer["store"],
                # (started, connected, closed) relative to the agreed start, and resumed
                "connects": [
                    [round(a - start_at, 6), round(b - start_at, 6), round(c - start_at, 6), r]
                    for a, b, c, r in records
                ],
            }
        )
    followers = [p for p in processes if not p["leader"]]
    fulls = [c for p in processes for c in p["connects"] if not c[3]]
    counters: dict[str, int] = {}
    for p in processes:
        for name, value in p["store"].get("counters", {}).items():
            counters[name] = counters.get(name, 0) + value
    first_seen = None if seen is None else seen - start_at
    return {
        "processes": processes,
        "full": sum(p["full"] for p in processes),
        "resumed": sum(p["resumed"] for p in processes),
        "first_connects": len(followers),
        "first_resumed": sum(p["first_resumed"] for p in followers),
        "late": sum(p["late"] for p in followers),
        "store_errors": sum(p["store_errors"] for p in processes),
        "counters": counters,
        "first_entry_seen": first_seen,
        # full handshakes whose connect began before any entry was in Redis, and after
        "full_before_first_entry": None
        if first_seen is None
        else sum(1 for c in fulls if c[0] < first_seen),
        "full_after_first_entry": None
        if first_seen is None
        else sum(1 for c in fulls if c[0] >= first_seen),
        "first_full_done": min((c[1] for c in fulls), default=None),
        # when the followers began their first connect (relative to the agreed start)
        "first_starts": [
            min((p["connects"][0][0] for p in followers if p["connects"]), default=None),
            max((p["connects"][0][0] for p in followers if p["connects"]), default=None),
        ],
    }


def run_fleet(
    bench: Any, workers: Workers, redis_url: str | None, store: str, tls: str, variant: str
) -> dict[str, Any]:
    """One run (see the module docstring): ``variant`` is ``cold`` or ``leader``."""
    s = bench.settings
    server = bench.servers["primary"]
    target = bench.target("primary", "rsa", tls)
    namespace = f"fleet-{uuid.uuid4().hex[:12]}"
    spec: dict[str, Any] = {"kind": store}
    if store == "redis":
        spec.update(url=redis_url, secret=secrets.token_hex(32), namespace=namespace)
    base = {"certs": target.certs, "port": target.port, "store": spec}
    n = len(workers.pipes)
    before = server.counts(target.port)
    leader = None
    leader_answer: dict[int, Any] = {}
    held = None
    if variant == "leader":
        leader = 0
        leader_answer = workers.run(
            {0: {**base, "count": 1, "start_at": time.monotonic()}}, timeout=60
        )
        if store == "redis":
            held = leader_answer[0]["store"].get("size")
    start_at = time.monotonic() + START_MARGIN
    monitor = None
    if store == "redis" and variant == "cold":
        monitor = FirstEntry(str(redis_url), namespace)
        monitor.start()
    count = s.fleet_connections
    try:
        answers = workers.run(
            {i: {**base, "count": count, "start_at": start_at} for i in range(n) if i != leader},
            timeout=60 + count * n * 0.1,
        )
    finally:
        seen = monitor.finish() if monitor is not None else None
    answers.update(leader_answer)
    connections = count * (n - (leader is not None)) + (leader is not None)
    full_server, resumed_server = server.wait_counted(target.port, sum(before) + connections)
    row = _summarise_run(answers, leader, seen, start_at)
    row.update(
        store=store,
        tls=tls,
        variant=variant,
        processes_n=n,
        connections=connections,
        per_process=count,
        held_at_start=held,  # sessions in Redis when the others started (leader variant)
        full_server=full_server - before[0],
        resumed_server=resumed_server - before[1],
        namespace=namespace if store == "redis" else None,
    )
    return row


def file_restarts(bench: Any, loop_name: str) -> dict[str, Any]:
    """A chain of fresh processes on one FileSessionCache directory (see the module
    docstring)."""
    s = bench.settings
    server = bench.servers["primary"]
    targets = {tls: bench.target("primary", "rsa", tls) for tls in ("1.2", "1.3")}
    ports = {tls: t.port for tls, t in targets.items()}
    before = {tls: server.counts(port) for tls, port in ports.items()}
    processes = []
    with tempfile.TemporaryDirectory(prefix="aiotlspool-bench-file-") as tmp:
        spec = {
            "kind": "file",
            "directory": str(Path(tmp) / "store"),
            "secret": secrets.token_hex(32),
        }
        for _ in range(s.fleet_restarts):
            processes.append(
                run_in_child(
                    fleet_worker.restarted_process,
                    targets["1.2"].certs,
                    ports,
                    spec,
                    loop_name,
                    cpu=bench.pinning.client_cpu,
                    timeout=60,
                )
            )
            bench.step("fleet: restarted process with the file store")
    out: dict[str, Any] = {"processes": processes, "restarts": len(processes) - 1}
    for tls, port in ports.items():
        full, resumed = server.wait_counted(port, sum(before[tls]) + len(processes))
        out[tls] = {
            "first_process_resumed": bool(processes and processes[0][tls]),
            "restarted_resumed": sum(bool(p[tls]) for p in processes[1:]),
            "full_server": full - before[tls][0],
            "resumed_server": resumed - before[tls][1],
        }
    return out


def run_section(bench: Any) -> dict[str, Any]:
    """Called by :class:`benchmarks.runner.Bench` (``--sections fleet``)."""
    s = bench.settings
    loop_name, _ = bench.preferred_loop()
    result: dict[str, Any] = {
        "server": bench.servers["primary"].kind,
        "loop": loop_name,
        "processes": s.fleet_processes,
        "per_process": s.fleet_connections,
        "runs": [],
        "unavailable": {},
    }
    redis_ok = True
    try:
        import redis  # noqa: F401
    except ImportError:
        redis_ok = False
        result["unavailable"]["redis"] = (
            "redis-py is not installed (pip install 'aiotlspool[redis]')"
        )
    result["file_store"] = bench.guarded("fleet file store", file_restarts, bench, loop_name)
    with contextlib.ExitStack() as stack:
        url = None
        if redis_ok:
            try:
                server = stack.enter_context(run_redis(bench.pinning.server_cpu, s.lifetime))
            except RedisUnavailable as exc:
                result["unavailable"]["redis-server"] = str(exc)
            else:
                result["redis_server"] = server.version
                url = server.url
        workers = Workers(s.fleet_processes, bench.pinning.client_cpu, loop_name)
        try:
            for rep in range(s.fleet_reps):
                for tls in ("1.2", "1.3"):
                    for variant in ("cold", "leader"):
                        for store in STORES:
                            label = f"fleet {variant} {store} TLS {tls} ({rep + 1})"
                            if store == "redis" and url is None:
                                bench.step(label)
                                continue
                            row = bench.guarded(
                                label, run_fleet, bench, workers, url, store, tls, variant
                            )
                            bench.step(label)
                            if row is not None:
                                result["runs"].append(row)
                                bench.console.print(_line(label, row))
        finally:
            workers.stop()
        if url is not None:
            result["cost"] = bench.guarded("fleet: Redis tier cost", fleet_cost.run, bench, url)
    return result


def _line(label: str, row: dict[str, Any]) -> str:
    extra = ""
    if row["full_before_first_entry"] is not None:
        extra = f", {row['full_before_first_entry']} full before the first entry reached Redis"
    if row["held_at_start"] is not None:
        extra += f", {row['held_at_start']} session(s) held when the others started"
    return (
        f"{label}: {row['full']} full / {row['resumed']} resumed (nginx "
        f"{row['full_server']} / {row['resumed_server']}); first connects resumed "
        f"{row['first_resumed']} of {row['first_connects']}{extra}"
    )


def steps(bench: Any) -> int:
    s = bench.settings
    return int(s.fleet_reps * 2 * 2 * len(STORES) + s.fleet_restarts + 2 * s.fleet_cost_rounds)
