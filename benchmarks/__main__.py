"""``python -m benchmarks [--quick] [--out DIR] [--sections ...]``: run the benchmarks and write
results.json, results.md, profile.txt and PNG charts (``make bench`` / ``make bench-quick``)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from . import charts, report, targets
from .certs import make_certs
from .clients import ALL_CLIENTS, Target, available_clients, default_engine
from .env import choose_pinning, machine_info, pin_self
from .figures import summarise_cell
from .plan import FULL, QUICK
from .runner import SECTIONS, Bench
from .server import NginxServer, PythonServer, Server
from .workloads import expected_resumed, is_flagged

RESULTS = Path(__file__).parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the < 3 minute subset")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default benchmarks/results, or benchmarks/results/quick)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--no-nginx", action="store_true", help="use the Python server even if nginx exists"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: re-derive flags, medians, targets, tables and charts from the "
        "raw figures in OUT/results.json (after a change to the reporting code)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = QUICK if args.quick else FULL
    sections = tuple(s for s in args.sections.split(",") if s)
    if args.sections == ",".join(SECTIONS):  # not named: the plan may leave some out
        sections = tuple(s for s in sections if s not in settings.skip_by_default)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"unknown sections: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        reinterpret(results)
        finish(results, out, Console())
        return 0
    console = Console()
    pinning = choose_pinning()
    started = time.monotonic()
    meta = machine_info(pinning, settings.mode)
    # Other work on a shared machine distorts everything: record how busy it was.
    meta["loadavg_start"] = os.getloadavg()
    meta["command"] = "make bench-quick" if args.quick else "make bench"
    if args.out or args.sections != ",".join(SECTIONS):
        meta["command"] = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    notes: list[str] = []
    nginx = None if args.no_nginx else shutil.which("nginx")
    if nginx is None:
        notes.append(
            "nginx not installed (scripts/install-servers.sh installs it): only the Python "
            "server was measured."
        )
    console.print(f"[bold]aiotlspool benchmarks ({settings.mode})[/bold] → {out}")
    console.print(
        f"{meta['cpu_model']}, Python {meta['python']}, {meta['openssl']}; {pinning.note}"
    )

    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="aiotlspool-bench-") as tmp:
        certs = {key: make_certs(Path(tmp), key) for key in settings.key_types}
        listeners = [
            ((key, tls), certs[key]) for key in settings.key_types for tls in ("1.2", "1.3")
        ]
        try:
            python_server = PythonServer(listeners, pinning.server_cpu, settings.lifetime)
            if nginx is not None:
                servers["primary"] = NginxServer(
                    nginx, listeners, Path(tmp) / "nginx", pinning.server_cpu, settings.lifetime
                )
                servers["secondary"] = python_server
            else:
                servers["primary"] = python_server
            # From here on this process is the client: keep it off the server CPU.
            pin_self(pinning.client_cpu)
            probe = Target(servers["primary"].ports[("rsa", "1.2")], certs["rsa"], "1.2")
            clients, missing = available_clients(probe)
            for name, why in missing.items():
                notes.append(f"client `{name}` not measured: {why}")
            bench = Bench(settings, servers, certs, clients, pinning, console, sections)
            results = bench.run()
        finally:
            for server in servers.values():
                server.stop()

    meta.update(
        default_engine=default_engine(),
        primary_server=servers["primary"].kind,
        servers=[s.kind for s in servers.values()],
        clients=clients,
        notes=notes,
        settings=bench.settings_dict(),
        elapsed_seconds=time.monotonic() - started,
        loadavg_end=os.getloadavg(),
    )
    results["meta"] = meta
    finish(results, out, console)
    return 1 if results["errors"] else 0


def reinterpret(results: dict[str, Any]) -> None:
    """Recompute what is derived from the raw figures: expected ranges, flags, medians."""
    for cell in results.get("reconnect", []):
        resumes = ALL_CLIENTS[cell["client"]].resumes
        for rep in cell["reps"]:
            rep["expected_min"], rep["expected_max"] = expected_resumed(
                resumes, cell["tls"], rep["count"], cell["concurrency"]
            )
            rep["flagged"] = is_flagged(rep)
        cell["median"] = summarise_cell(cell)


def finish(results: dict[str, Any], out: Path, console: Console) -> None:
    """Targets, charts and files."""
    results["targets"] = targets.compute_targets(results)
    out.mkdir(parents=True, exist_ok=True)
    drawn = charts.draw(results, out)
    report.write(results, out, drawn)
    meta = results["meta"]
    console.print(f"[bold]done in {meta['elapsed_seconds']:.0f} s[/bold]: {out / 'results.md'}")
    for target in results["targets"]:
        console.print(f"  {target['met']:>14}  {target['target']}: {target['measured']}")


if __name__ == "__main__":
    sys.exit(main())
