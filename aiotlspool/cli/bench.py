"""``aiotlspool bench``: new TLS connections as fast as allowed, through the pool.

:func:`run_bench_command` checks the settings (before any I/O), runs :func:`run_bench` with a
live progress view (on stderr, when it is a terminal), and prints the report: a table, or the
JSON document of docs/cli.md. The load generators run on event loops of their own
(:mod:`.bench_workers`); this module's thread coordinates them: first a warm-up per mode, not
counted, then the slices of :func:`~.bench_options.plan`. Ctrl-C stops them, prints the
partial report, and ends in KeyboardInterrupt (exit code 130).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..exceptions import CertificateError, ConnectError, ConnectTimeout, TLSHandshakeError
from .bench_args import options_from_args
from .bench_load import LIVE_FIELDS
from .bench_options import BenchOptions, Slice, plan
from .bench_report import LABELS, BenchReport, print_table
from .bench_stats import ModeTotals, cpu_count, machine_ticks, missing_dependency
from .bench_workers import Command, Worker, start_workers
from .loops import loop_factory
from .target import ProbeInputError

EXTRA = "pip install 'aiotlspool[bench-cli]'"
_ERRORS: dict[str, type[ConnectError]] = {
    cls.__name__: cls for cls in (ConnectError, ConnectTimeout, TLSHandshakeError, CertificateError)
}


def run_bench_command(args: argparse.Namespace, host: str, port: int, send: bytes) -> None:
    """The command: ProbeInputError for bad input or a missing extra, the pool's ConnectError
    when the warm-up cannot connect; KeyboardInterrupt after printing a partial report."""
    missing = missing_dependency()
    if missing is not None:
        raise ProbeInputError(f"needs {missing}, from the 'bench-cli' extra: {EXTRA}")
    options = options_from_args(args, host, port, send)
    options.check()
    if options.loop == "uvloop":
        try:
            loop_factory("uvloop")
        except ImportError:
            message = "--loop uvloop needs uvloop: pip install 'aiotlspool[uvloop]'"
            raise ProbeInputError(message) from None
    options.endpoint()
    options.context()  # an unreadable --cafile fails here, before any I/O
    report = run_bench(options)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_table(report, "aiotlspool bench")
    if report.interrupted:
        raise KeyboardInterrupt


def run_bench(options: BenchOptions, *, progress: bool = True) -> BenchReport:
    """Warm up, measure, and return the report (``interrupted`` after Ctrl-C)."""
    slices = plan(options)
    totals: dict[str, ModeTotals] = {mode: ModeTotals(mode) for mode in options.modes}
    report = BenchReport(
        options=options,
        server_name=options.endpoint().server_hostname,
        modes=totals,
        rounds=len(slices) // len(totals),
        cpus=cpu_count(),
    )
    started = time.perf_counter()
    workers = start_workers(options)
    steps = _Steps(workers, options, totals)
    try:
        with _progress_view(options, totals, steps, enabled=progress) as refresh:
            steps.refresh = refresh
            try:
                for mode in options.modes:
                    for result in steps.run("warmup", mode, _warmup_command(mode)):
                        totals[mode].add_warmup(result)
                for piece in slices:
                    offset = LIVE_FIELDS * options.modes.index(piece.mode)
                    ticks = machine_ticks()
                    command = _slice_command(options, piece, offset)
                    results = steps.run("slice", piece.mode, command)
                    totals[piece.mode].add_slice(results, _delta(ticks, machine_ticks()))
                    if any(result.interrupted for result in results):
                        report.interrupted = True
                        break
            except KeyboardInterrupt:
                report.interrupted = True
                steps.interrupt()
    finally:
        for worker in workers:
            worker.close()
    report.elapsed = time.perf_counter() - started
    report.engine = next((t.warmup.engine for t in totals.values() if t.warmup.engine), "")
    return report


def _warmup_command(mode: str) -> Callable[[int], Command]:
    return lambda worker: ("warmup", mode)


def _slice_command(options: BenchOptions, piece: Slice, offset: int) -> Callable[[int], Command]:
    def command(worker: int) -> Command:
        count = piece.connections
        share = None if count is None else options.share(count, worker)
        return ("slice", piece.mode, piece.duration, share, offset)

    return command


class _Steps:
    """Sends one command to every worker and collects the replies, refreshing the view."""

    def __init__(
        self, workers: list[Worker], options: BenchOptions, totals: dict[str, ModeTotals]
    ) -> None:
        self.workers = workers
        self.options = options
        self.totals = totals
        self.refresh: Callable[[str, float], None] = lambda mode, started: None
        self.current: tuple[str, str, float] | None = None  # kind, mode, start
        self._pending: dict[int, Worker] = {}
        self._results: list[Any] = []
        self._ticks: tuple[int, int] | None = None

    def run(self, kind: str, mode: str, command: Callable[[int], Command]) -> list[Any]:
        self.current = (kind, mode, time.perf_counter())
        self._ticks = machine_ticks()
        self._pending = dict(enumerate(self.workers))
        self._results = []
        for i, worker in enumerate(self.workers):
            worker.send(command(i))
        return self._collect(None)

    def _collect(self, limit: float | None) -> list[Any]:
        end = None if limit is None else time.perf_counter() + limit
        failure: tuple[Any, ...] | None = None
        assert self.current is not None
        kind, mode, started = self.current
        while self._pending and (end is None or time.perf_counter() < end):
            for i, worker in list(self._pending.items()):
                reply = worker.receive(0.1 / len(self._pending))
                if reply is None:
                    continue
                del self._pending[i]
                if reply[0] == "ok":
                    self._results.append(reply[1])
                elif failure is None:
                    failure = reply
                    for other in self._pending.values():
                        other.interrupt()  # no use going on: stop the others now
            self.refresh(mode, started if kind == "slice" else -1.0)
        if failure is not None:
            raise self._error(failure)
        return self._results

    def interrupt(self) -> None:
        """Ctrl-C: stop every worker, and add what the current step measured."""
        if self.current is None:
            return
        for worker in self.workers:
            worker.interrupt()
        kind, mode, _ = self.current
        results = self._collect(self.options.timeout + 5.0)
        if kind == "slice":
            self.totals[mode].add_slice(results, _delta(self._ticks, machine_ticks()))
        else:
            for result in results:
                self.totals[mode].add_warmup(result)

    def _error(self, reply: tuple[Any, ...]) -> Exception:
        if reply[0] == "connect_error":
            endpoint = self.options.endpoint()
            return _ERRORS.get(reply[1], ConnectError)(reply[2], endpoint)
        return RuntimeError(f"a load generator failed: {reply[1]}")


def _delta(before: tuple[int, int] | None, after: tuple[int, int] | None) -> tuple[int, int] | None:
    if before is None or after is None:
        return None
    return after[0] - before[0], after[1] - before[1]


@contextmanager
def _progress_view(
    options: BenchOptions, totals: dict[str, ModeTotals], steps: _Steps, *, enabled: bool
) -> Iterator[Callable[[str, float], None]]:
    """A live view on stderr (when it is a terminal): per mode, a bar and the counts so far."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(stderr=True)
    view = Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
    total = options.duration if options.duration is not None else options.connections
    tasks = {mode: view.add_task(LABELS[mode], total=total, info="warming up") for mode in totals}

    def refresh(current: str, started: float) -> None:
        now = time.perf_counter()
        for mode, task in tasks.items():
            offset = LIVE_FIELDS * options.modes.index(mode)
            ok, errors, resumed = (
                sum(worker.live[offset + k] for worker in steps.workers) for k in range(3)
            )
            elapsed = totals[mode].elapsed
            if mode == current and started >= 0:
                elapsed += now - started
            if ok + errors == 0:
                if started >= 0 and mode != current:
                    view.update(task, info="waiting for its turn")
                continue  # (or still warming up)
            done = elapsed if options.duration is not None else ok + errors
            rate = f"{ok / elapsed:,.0f}/s" if elapsed > 0 else "-"
            share = f"{resumed / ok:.0%} resumed" if ok else ""
            view.update(task, completed=done, info=f"{ok:,} ok  {errors} errors  {share}  {rate}")

    with view:
        yield refresh


__all__ = ["run_bench", "run_bench_command"]
