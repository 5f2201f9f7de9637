"""The report of ``aiotlspool bench``: its warnings, its JSON document (documented in
docs/cli.md) and its table (rich, from the ``bench-cli`` extra)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .bench_options import BenchOptions
from .bench_stats import ModeTotals
from .report import tool_json

SCHEMA_VERSION = 1
LOOP_SATURATED = 0.9  # an event loop this busy is the bottleneck: it cannot start more
MACHINE_SATURATED = 0.95  # the machine's CPUs this busy: client and server compete
TICKETS_KEPT = 8  # TLS 1.3 tickets the pool keeps per server (MemorySessionCache's default)
LABELS = {"off": "resume off", "on": "resume on"}


@dataclass
class BenchReport:
    """What a bench measured, per mode (``modes``, in the order they were asked)."""

    options: BenchOptions
    server_name: str
    modes: dict[str, ModeTotals]
    rounds: int
    cpus: int
    engine: str = ""
    interrupted: bool = False
    elapsed: float = 0.0  # the whole run, warm-up included
    notes: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """What makes the numbers less than they seem, in words."""
        options, found = self.options, []
        for mode, totals in self.modes.items():
            label = LABELS[mode]
            share = totals.resumed_share
            if mode == "on" and share is not None and share < 1:
                found.append(
                    f"{label}: {share:.1%} of the handshakes resumed ({totals.resumed} of "
                    f"{totals.handshakes}), not all: {self._why_not_resumed(totals)}"
                )
            if totals.errors:
                kinds = ", ".join(f"{n} {kind}" for kind, n in totals.errors.most_common())
                found.append(
                    f"{label}: {sum(totals.errors.values())} connection(s) failed: {kinds}"
                )
            busy = totals.loop_busy
            if busy is not None and busy >= LOOP_SATURATED:
                found.append(
                    f"{label}: the client's event loop was busy {busy:.0%} of the time: the "
                    "load generator, not the server, may be the limit (--processes P runs P "
                    f"loops; this machine has {self.cpus} CPUs)"
                )
            machine = totals.machine_busy
            if machine is not None and machine >= MACHINE_SATURATED:
                found.append(
                    f"{label}: this machine's CPUs were {machine:.0%} busy: the client (and "
                    "the server, if it runs here) had no spare CPU"
                )
            slow = options.rate is not None and totals.per_second < 0.95 * options.rate
            if slow and totals.elapsed > 0:
                found.append(
                    f"{label}: {totals.per_second:.0f} connections/s completed of the "
                    f"{options.rate:g}/s asked: the latency percentiles include the "
                    "waiting for a free slot and for the server"
                )
        return found

    def _why_not_resumed(self, totals: ModeTotals) -> str:
        if totals.resumed == 0:
            return "the server resumed no session (see 'aiotlspool probe')"
        why = []
        if totals.rejected:
            why.append(f"the server refused {totals.rejected} of the sessions offered")
        if totals.misses:
            missed = f"{totals.misses} connect(s) found no session to offer"
            per_process = self.options.worker_concurrency(0)
            if self.options.tls == "1.3" and per_process > TICKETS_KEPT:
                missed += (
                    f" (TLS 1.3 tickets are single-use and the pool keeps up to {TICKETS_KEPT} "
                    f"per server, for {per_process} connections at once per process)"
                )
            why.append(missed)
        return "; ".join(why) or "the server did not resume some sessions"

    def to_json(self) -> dict[str, Any]:
        """The documented JSON document (``schema_version`` 1)."""
        options = self.options
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "bench",
            "tool": tool_json(),
            "target": {"host": options.host, "port": options.port, "server_name": self.server_name},
            "settings": {
                "tls": options.tls,
                "resume": options.resume,
                "concurrency": options.concurrency,
                "processes": options.processes,
                "loop": options.loop,
                "duration": options.duration,
                "connections": options.connections,
                "rate": options.rate,
                "warmup": [options.worker_warmup(i) for i in range(options.processes)],
                "rounds": self.rounds,
                "verify": options.verify,
                "timeout": options.timeout,
                "request_bytes": len(options.send),
                "reply_bytes": options.reply_bytes,
                "session_engine": self.engine,
            },
            "interrupted": self.interrupted,
            "elapsed_seconds": round(self.elapsed, 3),
            "cpus": self.cpus,
            "modes": [_mode_json(totals) for totals in self.modes.values()],
            "warnings": self.warnings(),
        }


def _mode_json(totals: ModeTotals) -> dict[str, Any]:
    warm = totals.warmup
    share = totals.resumed_share
    per_connection = totals.cpu / totals.connections * 1000 if totals.connections else None
    return {
        "resume": totals.mode,
        "attempts": totals.attempts,
        "connections": totals.connections,
        "errors": sum(totals.errors.values()),
        "errors_by_kind": dict(sorted(totals.errors.items())),
        "cancelled": totals.cancelled,
        "full_handshakes": totals.full,
        "resumed_handshakes": totals.resumed,
        "resumed_share": None if share is None else round(share, 4),
        "sessions_stored": totals.sessions_stored,
        "sessions_rejected": totals.rejected if totals.mode == "on" else None,
        "cache_misses": totals.misses if totals.mode == "on" else None,
        "elapsed_seconds": round(totals.elapsed, 4),
        "connections_per_second": round(totals.per_second, 1),
        "arrivals": totals.arrivals,
        "handshake_ms": totals.histograms["handshake"].summary_ms(),
        "connect_ms": totals.histograms["connect"].summary_ms(),
        "latency_ms": totals.histograms["latency"].summary_ms(),
        "client_cpu": {
            "seconds": round(totals.cpu, 4),
            "per_connection_ms": None if per_connection is None else round(per_connection, 4),
            "loop_busy": _round(totals.loop_busy),
            "machine_busy": _round(totals.machine_busy),
        },
        "warmup": {
            "connections": warm.connections,
            "full_handshakes": warm.full,
            "resumed_handshakes": warm.resumed,
            "tickets_first_handshake": warm.tickets_first,
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def print_table(report: BenchReport, command: str) -> None:
    """The title, one column per mode, the notes, then the warnings (rich, on stdout)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    options, modes = report.options, list(report.modes.values())
    console = Console(highlight=False)
    name = f"[{options.host}]" if ":" in options.host else options.host
    title = f"{command} {name}:{options.port}"
    if not report.server_name:
        title += " (no server name: no SNI sent, name not checked)"
    elif report.server_name != options.host:
        title += f" (server name {report.server_name!r})"
    title += ", certificate " + ("verified" if options.verify else "NOT VERIFIED (--insecure)")
    console.print(title, markup=False, style=None if options.verify else "bold red")
    console.print(_settings_line(report), markup=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("")
    for totals in modes:
        table.add_column(LABELS[totals.mode], justify="right")
    for row in _rows(report, modes):
        table.add_row(*row)
    console.print(table)
    for note in _notes(report, modes):
        console.print(note, markup=False)
    if report.interrupted:
        console.print("INTERRUPTED (Ctrl-C): this is a partial report", style="bold red")
    for warning in report.warnings():
        console.print(f"WARNING: {warning}", markup=False, style="yellow")


def _settings_line(report: BenchReport) -> str:
    options = report.options
    amount = (
        f"{options.duration:g} s per mode"
        if options.duration is not None
        else f"{options.connections} connections per mode"
    )
    if len(report.modes) > 1:
        rounds = f"{report.rounds} round" + ("s" if report.rounds > 1 else "")
        amount += f", resume off and on taking turns in {rounds}"
    load = f"rate {options.rate:g}/s (open loop)" if options.rate else "closed loop"
    processes = f"{options.processes} process" + ("es" if options.processes > 1 else "")
    return (
        f"TLS {options.tls}, {amount}\nconcurrency {options.concurrency}, {load}, {processes}, "
        f"{options.loop} loop, {report.engine or '?'} session engine"
    )


def _rows(report: BenchReport, modes: list[ModeTotals]) -> list[list[str]]:
    def row(label: str, cell: Any) -> list[str]:
        return [label, *(str(cell(totals)) for totals in modes)]

    rows = [
        row("connections", lambda t: t.connections),
        row("connections/s", lambda t: f"{t.per_second:.0f}"),
        row("resumed", lambda t: f"{t.resumed} ({_percent(t.resumed_share)})"),
        row("sessions stored", lambda t: "-" if t.sessions_stored is None else t.sessions_stored),
        row("errors", lambda t: sum(t.errors.values())),
    ]
    kinds = sorted({kind for totals in modes for kind in totals.errors})
    rows += [row(f"  {kind}", lambda t, k=kind: t.errors.get(k, 0)) for kind in kinds]
    names = ["handshake", "connect"] + (["latency"] if report.options.rate else [])
    for name in names:
        summaries = [totals.histograms[name].summary_ms() for totals in modes]
        for key in ("p50", "p90", "p99", "max"):
            rows.append([f"{name} {key}", *(_ms(summary[key]) for summary in summaries)])
    rows += [
        row(
            "client CPU/connection",
            lambda t: _ms(t.cpu / t.connections * 1000 if t.connections else None),
        ),
        row("client loop busy", lambda t: _percent(t.loop_busy)),
        row("machine CPU busy", lambda t: _percent(t.machine_busy)),
    ]
    return rows


def _notes(report: BenchReport, modes: list[ModeTotals]) -> list[str]:
    options = report.options
    warmups = "; ".join(
        f"{LABELS[t.mode]} {t.warmup.full} full, {t.warmup.resumed} resumed" for t in modes
    )
    per_process = sorted({options.worker_warmup(i) for i in range(options.processes)})
    notes = [
        f"warm-up, not counted: {'/'.join(map(str, per_process))} connection(s) per process "
        f"and mode before measuring ({warmups})"
    ]
    on = report.modes.get("on")
    if on is not None and on.warmup.tickets_first is not None:
        stored = on.sessions_stored or 0
        per = f" ({stored / on.handshakes:.2f} per connection)" if on.handshakes else ""
        notes.append(
            f"tickets: the first full handshake gave {on.warmup.tickets_first} session(s) to "
            f"the pool ({report.engine} engine); {stored} were stored while measuring{per}"
        )
    request = "nothing sent"
    if options.send:
        until = f"{options.reply_bytes} bytes" if options.reply_bytes else "the server closed"
        request = f"{len(options.send)}-byte request, reply read until {until}"
    notes.append(
        f"each connection: TCP connect, TLS handshake, {request}, close. handshake = TLS "
        "handshake, connect = TCP connect + handshake, as the client saw them; percentiles "
        "from HDR histograms"
        + (
            "; latency = from each connection's due time (--rate) to its handshake's end"
            if options.rate
            else ""
        )
    )
    return notes


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


__all__ = ["BenchReport", "print_table"]
