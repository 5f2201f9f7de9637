"""Turns the results into ``results.md``, ``summary.md``, ``results.json`` and ``profile.txt``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import bare_report, fleet_report, integrations_report, memory_report, peers_report
from .figures import POOL_ENGINES, Index
from .figures import fmt as _fmt
from .figures import ratio as _ratio


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def markdown(results: dict[str, Any], charts: list[str]) -> str:
    meta = results["meta"]
    index = Index(results.get("reconnect", []))
    clients = index.clients()
    out: list[str] = [
        "# aiotlspool benchmark results",
        "",
        f"`{meta['command']}` ({meta['mode']}), {meta['date']}, {meta['elapsed_seconds']:.0f} s; "
        f"aiotlspool at {meta.get('revision') or 'an unknown revision'}.",
        "",
        f"- Machine: {meta['cpu_model']}, {meta['cpu_count']} CPUs ({meta['platform']}); "
        f"{meta['pinning']}.",
        f"- Load average (1 min) {meta['loadavg_start'][0]:.1f} at the start, "
        f"{meta['loadavg_end'][0]:.1f} at the end, on {meta['cpu_count']} CPUs"
        + (
            " - **the machine was busy with other work: treat these figures with care**."
            if max(meta["loadavg_start"][0], meta["loadavg_end"][0]) > meta["cpu_count"]
            else "."
        ),
        f"- Python {meta['python']}, {meta['openssl']}; loops: {', '.join(meta['loops'])}; "
        f"nginx: {meta['nginx'] or 'not installed'}.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items() if v)}.",
        f"- `Pool()` picks the {meta.get('default_engine', '?')!r} session engine here; the "
        "pool-stdlib and pool-native columns name theirs explicitly.",
        "- Medians of repeated runs; all clients side by side against the same server in the "
        "same run. The machine is shared and noisy: compare ratios, not absolute numbers.",
        "",
        "## Targets",
        "",
    ]
    out += _table(
        ["Target", "Measured", "Verdict"],
        [[t["target"], t["measured"], t["met"]] for t in results["targets"]],
    )

    for server, key in index.groups():
        rows = index.rows(server, key)
        reps = {len(c["reps"]) for k, c in index.cells.items() if k[:2] == (server, key)}
        out += [
            f"## Reconnect-heavy: {server} server, {key.upper()} certificate",
            "",
            f"Connects per second, median of {'/'.join(map(str, sorted(reps)))} timed batches per "
            "client (connect → GET → response → close; all clients on one event loop, warmed "
            "up, taking turns batch by batch). ⚑ = a batch whose resumed-handshake count "
            "(counted by the server) is outside what the client's mode expects.",
            "",
        ]
        table = []
        for tls, loop, tasks in rows:
            cells = []
            for client in clients:
                cell = index.cells.get((server, key, tls, loop, tasks, client))
                if cell is None:
                    cells.append("-")
                    continue
                flag = " ⚑" if cell["median"]["flagged"] else ""
                cells.append(_fmt(cell["median"]["cps"]) + flag)
            busy = max(
                (
                    index.get(server, key, tls, loop, tasks, c, metric="server_busy")
                    for c in clients
                ),
                default=math.nan,
            )
            table.append([f"TLS {tls}", loop, str(tasks), *cells, _fmt(100 * busy, 0, " %")])
        out += _table(["TLS", "loop", "tasks", *clients, "server CPU (max)"], table)

        out += ["Client CPU per connection (µs, median):", ""]
        table = []
        for tls, loop, tasks in rows:
            table.append(
                [f"TLS {tls}", loop, str(tasks)]
                + [
                    _fmt(index.get(server, key, tls, loop, tasks, c, metric="cpu_us_per_conn"))
                    for c in clients
                ]
            )
        out += _table(["TLS", "loop", "tasks", *clients], table)

        out += [
            "Ratios of connects/s (pool ÷ other). Pool overhead = handwritten ÷ pool-stdlib - 1 "
            "(the same stdlib session seam without the pool).",
            "",
        ]
        table = []
        others = [c for c in ("raw", "aiohttp", "httpx", "pool-nocache") if c in clients]
        engines = [c for c in POOL_ENGINES if c in clients]
        for tls, loop, tasks in rows:
            hand = index.get(server, key, tls, loop, tasks, "handwritten")
            for engine in engines:
                pool = index.get(server, key, tls, loop, tasks, engine)
                overhead = "-"
                if engine == "pool-stdlib" and not math.isnan(hand / pool):
                    overhead = f"{hand / pool - 1:+.0%}"
                table.append(
                    [f"TLS {tls}", loop, str(tasks), engine]
                    + [_ratio(pool / index.get(server, key, tls, loop, tasks, c)) for c in others]
                    + [overhead]
                )
        out += _table(
            ["TLS", "loop", "tasks", "pool", *(f"÷ {c}" for c in others), "pool overhead"], table
        )

    if results.get("paired"):
        out += _paired_markdown(results["paired"])

    if results.get("integrations"):
        out += integrations_report.markdown(results["integrations"])
    if results.get("fleet"):
        out += fleet_report.markdown(results["fleet"])
    out += bare_report.markdown(results.get("bare"))
    if results.get("peers"):
        out += peers_report.markdown(results["peers"])

    if results.get("burst"):
        out += [
            "## Burst after warm-up",
            "",
            "The warm-up opens connections at the same time (so that each leaves a TLS 1.3 "
            "ticket; the cache keeps 8 per endpoint), then a burst of new connections starts at "
            "once. Resumed as counted by the server.",
            "",
        ]
        out += _table(
            [
                "client",
                "TLS",
                "loop",
                "warm-up",
                "burst",
                "resumed (min / median)",
                "expected",
                "cached",
            ],
            [
                [
                    b["client"],
                    f"TLS {b['tls']}",
                    b["loop"],
                    str(b["warmup"]),
                    str(b["burst"]),
                    f"{b['min_resumed']} / {b['median_resumed']}",
                    str(b["expected"]),
                    str(b["cache_size_before"]),
                ]
                for b in results["burst"]
            ],
        )

    if results.get("idle"):
        out += [
            "## Idle checkout",
            "",
            "One idle connection, checked out and given back; µs per cycle, median of runs "
            f"(session engine {results['idle'][0].get('engine', '?')}; it plays no part here):",
            "",
        ]
        out += _table(
            ["loop", "acquire + release", "async with pool.connection()", "asyncio.Queue floor"],
            [
                [
                    i["loop"],
                    _fmt(i["pool_us"], 1),
                    _fmt(i["context_us"], 1),
                    _fmt(i["queue_us"], 1),
                ]
                for i in results["idle"]
            ],
        )

    if results.get("latency"):
        out += [
            "## Connect latency with an injected RTT",
            "",
            "Through the harness's delay proxy; `pool.acquire()` time, medians. The client's TCP "
            "handshake is with the local proxy, so a real network adds one RTT to both columns.",
            "",
        ]
        out += _table(
            ["TLS", "loop", "RTT", "request (≈ RTT)", "full", "resumed", "saved", "saved RTT"],
            [
                [
                    f"TLS {lat['tls']}",
                    lat["loop"],
                    f"{lat['rtt_ms']:.0f} ms",
                    _fmt(lat["request_ms"], 1, " ms"),
                    _fmt(lat["full_ms"], 1, " ms"),
                    _fmt(lat["resumed_ms"], 1, " ms"),
                    _fmt(lat["saved_ms"], 1, " ms"),
                    _fmt(lat["saved_rtt"], 2),
                ]
                for lat in results["latency"]
            ],
        )

    out += memory_report.markdown(results.get("memory"))

    if results.get("seam"):
        out += ["## Cost of the standard library's session seam", "", "µs per call:", ""]
        out += _table(
            ["TLS", "SSLObject.session read", "wrap_bio()", "wrap_bio(session=)"],
            [
                [
                    f"TLS {s['tls']}",
                    _fmt(s["session_read_us"], 0),
                    _fmt(s["wrap_bio_us"], 0),
                    _fmt(s["wrap_bio_session_us"], 0),
                ]
                for s in results["seam"]
            ],
        )

    profiles = results.get("profiles", [])
    if profiles:
        out += [
            "## Profiles (cProfile)",
            "",
            "Own time per connection (per cycle for idle checkout) by category, µs; sequential, "
            "asyncio's loop (its Python code is visible to the profiler), wall-clock timer, "
            "time blocked in epoll shown apart. cProfile inflates Python-level code: use for "
            "attribution only. Full listings: `profile.txt`.",
            "",
        ]
        names = [f"{p['client']} TLS {p['tls']}" for p in profiles]
        categories: list[str] = []
        for p in profiles:
            categories += [c for c in p["categories_us"] if c not in categories]
        table = [
            [category] + [_fmt(p["categories_us"].get(category, 0.0)) for p in profiles]
            for category in categories
        ]
        table.append(["**total profiled**"] + [_fmt(p["profiled_us_per_unit"]) for p in profiles])
        table.append(["function calls"] + [_fmt(p["calls_per_unit"]) for p in profiles])
        out += _table(["µs per unit", *names], table)

    notes = list(meta.get("notes", []))
    for cell in results.get("reconnect", []):
        flagged = [rep for rep in cell["reps"] if rep["flagged"]]
        if flagged:
            notes.append(
                f"⚑ {cell['server']} {cell['key']} TLS {cell['tls']} {cell['loop']} "
                f"{cell['concurrency']} task(s) {cell['client']}: {len(flagged)} of "
                f"{len(cell['reps'])} batches; resumed (server) "
                f"{[rep['resumed_server'] for rep in flagged]} of "
                f"{[rep['count'] for rep in flagged]}, client saw "
                f"{[rep['resumed_client'] for rep in flagged]}, expected "
                f"{flagged[0]['expected_min']}-{flagged[0]['expected_max']}"
            )
        errors = sum(rep["errors"] for rep in cell["reps"])
        if errors:
            last = next(rep["last_error"] for rep in reversed(cell["reps"]) if rep["errors"])
            notes.append(
                f"{cell['client']} TLS {cell['tls']} {cell['loop']} {cell['concurrency']} "
                f"task(s): {errors} failed connection(s), last {last}"
            )
    notes += results.get("errors", [])
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if charts:
        out += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    return "\n".join(out)


def _paired_markdown(rows: list[dict[str, Any]]) -> list[str]:
    clients = list(rows[0]["clients"])
    out = [
        "## Sequential reconnects, paired",
        "",
        f"All clients on one event loop, taking turns connection by connection "
        f"({rows[0]['count']} rounds); median per connection. Connects/s = 1 / median time; "
        "CPU = this thread's CPU time per connection.",
        "",
    ]
    table = []
    for row in rows:
        flag = " ⚑" if row["flagged"] else ""
        table.append(
            [f"TLS {row['tls']}", row["loop"]]
            + [
                f"{_fmt(row['clients'][c]['cps'])} ({_fmt(row['clients'][c]['cpu_us'])} µs)"
                for c in clients
            ]
            + [f"{row['resumed_server']} / {row['expected_resumed']}{flag}"]
        )
    out += _table(["TLS", "loop", *clients, "resumed (server / expected)"], table)
    return out


def write(results: dict[str, Any], out: Path, charts: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    profiles = results.get("profiles", [])
    if any("text" in p for p in profiles):  # not kept in results.json (--report-only)
        with open(out / "profile.txt", "w") as f:
            for p in profiles:
                f.write(f"==== {p['client']} TLS {p['tls']} per {p['unit']} ({p['units']})\n")
                f.write(p["text"])
    slim = dict(results)
    slim["profiles"] = [{k: v for k, v in p.items() if k != "text"} for p in profiles]
    (out / "results.json").write_text(json.dumps(slim, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(results, charts))
    (out / "summary.md").write_text(summary(results))


# Row labels of the short summary (the README table).
_SUMMARY_LABELS = {
    "pool-native": "aiotlspool, native session engine",
    "pool-stdlib": "aiotlspool, stdlib session engine",
    "pool-nocache": "aiotlspool, no resumption",
    "handwritten": "hand-written resumption loop (stdlib)",
    "raw": "asyncio.open_connection",
    "aiohttp": "aiohttp (force_close)",
    "httpx": "httpx (no keep-alive)",
    "tcp": "no TLS at all (plain TCP, the floor)",
}


def summary(results: dict[str, Any]) -> str:
    """A short table for the README: sequential reconnects/s from the paired comparison."""
    meta = results["meta"]
    rows = [r for r in results.get("paired", []) if r["key"] == "rsa"]
    loop = "uvloop" if any(r["loop"] == "uvloop" for r in rows) else "asyncio"
    by_tls = {r["tls"]: r for r in rows if r["loop"] == loop}
    if not by_tls:
        return ""
    versions = sorted(by_tls)
    out = [
        f"Sequential reconnects (connect → GET → response → close), one task, {loop}, "
        f"{meta['primary_server']} on 127.0.0.1, RSA-2048; connects/s and ratio to "
        f"`asyncio.open_connection`. `{meta['command']}`, {meta['date'][:10]}, "
        f"aiotlspool {meta.get('revision') or '?'}, "
        f"{meta['cpu_model']} ({meta['cpu_count']} shared CPUs), Python {meta['python']}, "
        f"{meta['openssl']}.",
        "",
    ]
    table = []
    for client, label in _SUMMARY_LABELS.items():
        if client not in by_tls[versions[0]]["clients"]:
            continue
        cells = []
        for tls in versions:
            clients = by_tls[tls]["clients"]
            ratio = clients[client]["cps"] / clients["raw"]["cps"] if "raw" in clients else math.nan
            cells.append(f"{_fmt(clients[client]['cps'])} ({_ratio(ratio)})")
        table.append([label, *cells])
    out += _table(["client", *(f"TLS {tls}" for tls in versions)], table)
    out += peers_report.summary_lines(results.get("peers"))
    out += bare_report.summary_lines(results.get("bare"))
    return "\n".join(out)
