"""The ``integrations`` section in ``results.md`` and its targets (with ÷ without resumption,
per library), from the rows :mod:`benchmarks.integrations` recorded."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .figures import fmt, ratio
from .integrations import GOAL, PAIRS

# Libraries the goal is stated for (curl_cffi is the peer, the pool a reference).
TARGET_LIBRARIES = ("aiohttp", "httpx")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _cells(section: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str], dict[Any, Any]]:
    rows = section.get("rows", [])
    cases: list[tuple[str, str]] = []
    variants: list[str] = []
    for row in rows:
        if (row["tls"], row["loop"]) not in cases:
            cases.append((row["tls"], row["loop"]))
        if row["client"] not in variants:
            variants.append(row["client"])
    by_key = {(row["tls"], row["loop"], row["client"]): row for row in rows}
    return cases, variants, by_key


def ratios(section: dict[str, Any]) -> list[dict[str, Any]]:
    """With ÷ without resumption, per library and (TLS version, loop)."""
    cases, _, by_key = _cells(section)
    out = []
    for tls, loop in cases:
        for library, without, with_ in PAIRS:
            base, resumed = by_key.get((tls, loop, without)), by_key.get((tls, loop, with_))
            if base is None or resumed is None:
                continue
            value = resumed["rps"] / base["rps"]
            # Round by round (the two blocks of a round ran one after the other): the spread.
            rounds = [
                b["seconds"] / r["seconds"]
                for b, r in zip(base["raw_blocks"], resumed["raw_blocks"], strict=False)
            ]
            spread = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else [value] * 3
            out.append(
                {
                    "library": library,
                    "tls": tls,
                    "loop": loop,
                    "ratio": value,
                    "round_p25": spread[0],
                    "round_p75": spread[2],
                    "cpu_ratio": resumed["cpu_us"] / base["cpu_us"],
                    "goal": GOAL[tls],
                    "met": value >= GOAL[tls],
                }
            )
    return out


def markdown(section: dict[str, Any]) -> list[str]:
    cases, variants, by_key = _cells(section)
    out = [
        "## Reconnect-heavy HTTPS through HTTP libraries (`integrations`)",
        "",
        f"Sequential `GET /` on a fresh connection each time ({section['server']} server, "
        "RSA-2048): aiohttp (`force_close=True`) and httpx (no keep-alive) without and with "
        "`aiotlspool.enable_resumption(ctx)` on the context they are given; curl_cffi "
        "(libcurl, `CURLOPT_FORBID_REUSE`), which resumes by itself, as the peer "
        "(`curl_cffi-noresume`: `CURLOPT_SSL_SESSIONID_CACHE=0`); the pool for reference (the "
        "pool against curl_cffi, sequential and concurrent, is the `peers` section). All "
        f"variants on one event loop, taking turns in blocks of {section['block']} requests. "
        "Requests/s = 1 / median time per request; in brackets CPU per request (µs), client "
        "(getrusage over a block ÷ its requests, median over blocks) + server (its "
        "processes' CPU time from /proc over all blocks ÷ requests). One request at a time: "
        "the client waits for the server's share.",
        "",
    ]
    for name, why in section.get("unavailable", {}).items():
        out += [f"- **{name}: unavailable** - {why}"]
    for error in section.get("errors", []):
        out += [f"- a block failed (left out): {error}"]
    if section.get("unavailable") or section.get("errors"):
        out += [""]
    if not cases:
        return [*out, "Nothing measured.", ""]
    out += _table(
        ["TLS", "loop", *variants],
        [
            [f"TLS {tls}", loop]
            + [
                f"{fmt(c['rps'])}/s ({fmt(c['cpu_us'])} + {fmt(c.get('server_cpu_us', math.nan))})"
                if (c := by_key.get((tls, loop, v)))
                else "-"
                for v in variants
            ]
            for tls, loop in cases
        ],
    )
    out += [
        "Resumed handshakes as counted by the server / requests (the context's own "
        "`resumption_stats().resumed` in brackets where there is one); ⚑ = not what the "
        "variant should give (all resumed with resumption, none without):",
        "",
    ]

    def resumed(row: dict[str, Any]) -> str:
        own = f" ({row['resumed_client']})" if row["resumed_client"] is not None else ""
        return f"{row['resumed_server']} / {row['count']}{own}" + (" ⚑" if row["flagged"] else "")

    out += _table(
        ["TLS", "loop", *variants],
        [
            [f"TLS {tls}", loop]
            + [resumed(c) if (c := by_key.get((tls, loop, v))) else "-" for v in variants]
            for tls, loop in cases
        ],
    )
    found = {(r["library"], r["tls"], r["loop"]): r for r in ratios(section)}
    libraries = [library for library, _, _ in PAIRS if any(k[0] == library for k in found)]
    table = []
    for tls, loop in cases:
        cells = []
        for library in libraries:
            r = found.get((library, tls, loop))
            if r is None:
                cells.append("-")
                continue
            verdict = ("met; " if r["met"] else "missed; ") if library in TARGET_LIBRARIES else ""
            cells.append(
                f"{ratio(r['ratio'])} ({verdict}rounds {ratio(r['round_p25'])}-"
                f"{ratio(r['round_p75'])}; CPU {r['cpu_ratio'] - 1:+.0%})"
            )
        peer = by_key.get((tls, loop, "curl_cffi"))
        vs_peer = [
            ratio(row["rps"] / peer["rps"])
            if peer is not None and (row := by_key.get((tls, loop, v)))
            else "-"
            for v in ("aiohttp+resumption", "httpx+resumption")
        ]
        table.append([f"TLS {tls}", loop, f"x{GOAL[tls]:.1f}", *cells, *vs_peer])
    out += [
        "Requests/s with ÷ without resumption, per library (goal: x2.0 on TLS 1.2, x1.5 on TLS "
        "1.3 for aiohttp and httpx; curl_cffi's own ratio for comparison); in brackets the "
        "interquartile range of the same ratio round by round (block time without ÷ with, "
        "the two blocks of a round run close together: the noise) and the change in client "
        "CPU per request; then the resuming libraries ÷ curl_cffi:",
        "",
    ]
    out += _table(
        [
            "TLS",
            "loop",
            "goal",
            *libraries,
            "aiohttp+resumption ÷ curl_cffi",
            "httpx+resumption ÷ curl_cffi",
        ],
        table,
    )
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per (library, TLS version): with ÷ without ≥ the goal on every loop."""
    section = results.get("integrations")
    if not section:
        return []
    found = ratios(section)
    out = []
    for library in TARGET_LIBRARIES:
        for tls, goal in GOAL.items():
            cases = [r for r in found if r["library"] == library and r["tls"] == tls]
            if not cases:
                continue
            met = sum(r["met"] for r in cases if not math.isnan(r["ratio"]))
            verdict = "met" if met == len(cases) else "missed" if met == 0 else "partly"
            out.append(
                {
                    "target": f"enable_resumption: {library} TLS {tls} requests/s with ÷ "
                    f"without ≥ x{goal} (integrations: sequential, new connection per "
                    "request)",
                    "measured": "; ".join(f"{r['loop']} {ratio(r['ratio'])}" for r in cases),
                    "met": verdict if verdict != "partly" else f"partly ({met} of {len(cases)})",
                    "detail": [],
                }
            )
    return out
