"""The ``peers`` section: cell summaries, its table in ``results.md`` and its targets (the pool's
requests/s ÷ curl_cffi's, issue 13 item 4), from the blocks :mod:`benchmarks.peers` recorded."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .figures import fmt, ratio
from .peers import CURL, GOAL, LEAN, POOL


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def _variant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    count = sum(b["count"] for b in blocks)
    rates = [b["count"] / b["seconds"] for b in blocks]
    p25, rps, p75 = _quartiles(rates)
    resumed = sum(b["resumed_server"] for b in blocks)
    kept = [b["kept_alive"] for b in blocks]
    client = [b["resumed_client"] for b in blocks]
    row = {
        "blocks": len(blocks),
        "count": count,
        "rps": rps,
        "rps_p25": p25,
        "rps_p75": p75,
        "cpu_us": statistics.median(1e6 * b["cpu"] / b["count"] for b in blocks)
        if blocks
        else math.nan,
        # /proc counts in clock ticks (10 ms): over all blocks, not a median of blocks.
        "server_cpu_us": 1e6 * sum(b["server_cpu"] for b in blocks) / count if count else math.nan,
        "full_server": sum(b["full_server"] for b in blocks),
        "resumed_server": resumed,
        "kept_alive": None if None in kept else sum(kept),
        "resumed_client": None if None in client else sum(client),
    }
    row["flagged"] = (
        resumed != count
        or bool(row["kept_alive"])
        or (row["resumed_client"] is not None and row["resumed_client"] != resumed)
    )
    return row


def summarise(tls: str, loop: str, mode: str, tasks: int, raw: dict[str, Any]) -> dict[str, Any]:
    """One (TLS version, loop, mode) cell: each variant's medians and counts, and the pool ÷
    curl_cffi ratio round by round."""
    blocks = raw["blocks"]
    variants = {name: _variant(found) for name, found in blocks.items() if found}
    by_round = {name: {b["round"]: b for b in found} for name, found in blocks.items()}

    def per_round(name: str) -> tuple[float, float, float]:
        """``name`` ÷ curl_cffi, requests/s, round by round: quartiles."""
        ours, curl = by_round.get(name, {}), by_round.get(CURL, {})
        return _quartiles(
            [
                (ours[r]["count"] / ours[r]["seconds"]) / (curl[r]["count"] / curl[r]["seconds"])
                for r in sorted(ours.keys() & curl.keys())
            ]
        )

    p25, value, p75 = per_round(POOL)
    cell: dict[str, Any] = {
        "tls": tls,
        "loop": loop,
        "mode": mode,
        "tasks": tasks,
        "threads": raw["threads"],
        "variants": variants,
        "ratio": value,
        "ratio_p25": p25,
        "ratio_p75": p75,
        "goal": GOAL[tls],
        "met": bool(value >= GOAL[tls]),
        "raw_blocks": blocks,
    }
    if POOL in variants and CURL in variants:
        cell["ratio_of_medians"] = variants[POOL]["rps"] / variants[CURL]["rps"]
        cell["cpu_ratio"] = variants[POOL]["cpu_us"] / variants[CURL]["cpu_us"]
    if LEAN in variants and CURL in variants:
        cell["lean_p25"], cell["lean_ratio"], cell["lean_p75"] = per_round(LEAN)
    return cell


def console_line(label: str, cell: dict[str, Any]) -> str:
    parts = [
        f"{name} {row['rps']:.0f}/s {row['cpu_us']:.0f} µs" + (" ⚑" if row["flagged"] else "")
        for name, row in cell["variants"].items()
    ]
    lean = f", lean ÷ curl_cffi x{cell['lean_ratio']:.2f}" if "lean_ratio" in cell else ""
    return f"{label}: " + ", ".join(parts) + f"; pool ÷ curl_cffi x{cell['ratio']:.2f}{lean}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _counts(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    own = f" ({row['resumed_client']})" if row["resumed_client"] is not None else ""
    kept = "?" if row["kept_alive"] is None else str(row["kept_alive"])
    flag = " ⚑" if row["flagged"] else ""
    return f"{row['resumed_server']} / {row['count']}{own}, kept alive {kept}{flag}"


def markdown(section: dict[str, Any]) -> list[str]:
    out = [
        "## The pool against libcurl: reconnect-heavy HTTPS (`peers`)",
        "",
        f"A new connection for every request ({section['server']} server, RSA-2048): connect, "
        "`GET /` with `Connection: close`, read the whole response, close. `pool-native`: "
        '`Pool(session_engine="native")`, HTTP/1.1 by hand on `conn.reader`/`conn.writer`, '
        "`await conn.aclose()`; `lean` (a reference, `benchmarks/peers_floor.py`): the pool's "
        "TLS work - native session offered and watched, `SSLSocket` - in one callback, no "
        "streams, no pool, close_notify sent but not awaited; `curl_cffi`: libcurl (BoringSSL) "
        "through `AsyncSession` on the same event loop, `CURLOPT_FORBID_REUSE`, resuming with "
        "its own session cache. "
        f"Sequential: one task; concurrent: {section['concurrent']} tasks (curl_cffi: one "
        f"`AsyncSession`, `max_clients={section['concurrent']}`). They take turns in blocks "
        f"(sequential {section['block']} requests). Requests/s: median over blocks; in brackets "
        "client CPU per request (getrusage of the whole process over a block ÷ its requests, "
        "median over blocks, µs). Pool ÷ curl_cffi: the median of the per-round ratios (blocks "
        "of a round run back to back), interquartile range in brackets; lean ÷ curl_cffi the "
        "same for the reference. Pool CPU at the goal: "
        "curl_cffi's CPU per request ÷ the goal, what the pool's would have to be when the "
        "client's CPU is what limits the rate.",
        "",
    ]
    for name, why in section.get("unavailable", {}).items():
        out += [f"- **{name}: unavailable** - {why}"]
    for error in section.get("errors", []):
        out += [f"- a block failed (left out): {error}"]
    if section.get("unavailable") or section.get("errors"):
        out += [""]
    cells = section.get("cells", [])
    if not cells:
        return [*out, "Nothing measured.", ""]

    def rate(row: dict[str, Any] | None) -> str:
        return f"{fmt(row['rps'])}/s ({fmt(row['cpu_us'])})" if row else "-"

    rows = []
    for c in cells:
        v = c["variants"]
        verdict = "met" if c["met"] else "missed"
        rows.append(
            [
                f"TLS {c['tls']}",
                c["loop"],
                c["mode"],
                rate(v.get(POOL)),
                rate(v.get(LEAN)),
                rate(v.get(CURL)),
                f"{ratio(c['ratio'])} ({ratio(c['ratio_p25'])}-{ratio(c['ratio_p75'])})",
                ratio(c["cpu_ratio"]) if "cpu_ratio" in c else "-",
                f"{ratio(c['lean_ratio'])} ({ratio(c['lean_p25'])}-{ratio(c['lean_p75'])})"
                if "lean_ratio" in c
                else "-",
                fmt(v[CURL]["cpu_us"] / c["goal"]) if CURL in v else "-",
                f"x{c['goal']:.2f}: {verdict}",
            ]
        )
    out += _table(
        [
            "TLS",
            "loop",
            "mode",
            POOL,
            LEAN,
            CURL,
            "pool ÷ curl_cffi",
            "CPU/request ÷",
            "lean ÷ curl_cffi",
            "pool CPU at the goal",
            "goal",
        ],
        rows,
    )
    out += [
        "Server's count (nginx `$ssl_session_reused`): resumed handshakes / requests (the pool's "
        "own count in brackets); kept alive = requests that came on a connection used before "
        "(`$connection_requests` > 1), must be 0; server CPU per request (µs, /proc, all "
        "blocks); threads in the client process at the end; ⚑ = not all resumed or a connection "
        "reused:",
        "",
    ]
    out += _table(
        ["TLS", "loop", "mode", POOL, LEAN, CURL, "server CPU pool / lean / curl", "threads"],
        [
            [
                f"TLS {c['tls']}",
                c["loop"],
                c["mode"],
                _counts(c["variants"].get(POOL)),
                _counts(c["variants"].get(LEAN)),
                _counts(c["variants"].get(CURL)),
                " / ".join(
                    fmt(c["variants"][n]["server_cpu_us"]) if n in c["variants"] else "-"
                    for n in (POOL, LEAN, CURL)
                ),
                str(c["threads"]),
            ]
            for c in cells
        ],
    )
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per TLS version: pool ÷ curl_cffi ≥ the goal in every (loop, mode) cell."""
    section = results.get("peers")
    if not section or not section.get("cells"):
        return []
    out = []
    for tls, goal in GOAL.items():
        cells = [c for c in section["cells"] if c["tls"] == tls and not math.isnan(c["ratio"])]
        if not cells:
            continue
        met = sum(c["met"] for c in cells)
        verdict = "met" if met == len(cells) else "missed" if met == 0 else f"partly ({met} of "
        if verdict.startswith("partly"):
            verdict += f"{len(cells)})"
        out.append(
            {
                "target": f"TLS {tls}: pool-native requests/s ≥ x{goal} curl_cffi's (peers: new "
                "connection per request, sequential and concurrent, both loops)",
                "measured": "; ".join(
                    f"{c['loop']} {c['mode']} {ratio(c['ratio'])}" for c in cells
                ),
                "met": verdict,
                "detail": [],
            }
        )
    return out


def summary_lines(section: dict[str, Any] | None) -> list[str]:
    """The README's short table: pool and curl_cffi requests/s, their ratio, the goal."""
    cells = (section or {}).get("cells", [])
    if not cells:
        return []
    out = [
        "",
        "Reconnect-heavy HTTPS against libcurl (`peers`): a new connection per request, "
        "requests/s, the pool's ratio to curl_cffi (median of per-round ratios) and the goal:",
        "",
        "| TLS | loop | tasks | aiotlspool | curl_cffi | ratio | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        v = c["variants"]
        tasks = "1" if c["mode"] == "sequential" else str(section.get("concurrent", "-"))
        pool = fmt(v[POOL]["rps"]) if POOL in v else "-"
        curl = fmt(v[CURL]["rps"]) if CURL in v else "-"
        verdict = "met" if c["met"] else "missed"
        out.append(
            f"| {c['tls']} | {c['loop']} | {tasks} | {pool} | {curl} | {ratio(c['ratio'])} "
            f"| x{c['goal']:.2f}: {verdict} |"
        )
    return out
