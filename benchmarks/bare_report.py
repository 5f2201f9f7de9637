"""The ``bare`` section in ``results.md`` and its targets, from what :mod:`benchmarks.bare`
recorded: the pool's overhead over the hand-written loop, TLS 1.3 resumed ÷ full, and the
pool's resumed TLS 1.2 CPU against ``openssl s_time -reuse``."""

from __future__ import annotations

import math
import statistics
from typing import Any

GOAL_OVERHEAD = 0.10
GOAL_TLS13_RATIO = {"asyncio": 1.8, "uvloop": 2.0}  # resumed ÷ full, client CPU
GOAL_S_TIME = 3.0  # pool CPU per resumed TLS 1.2 connect ÷ s_time's, best path


def _cpu(section: dict[str, Any]) -> dict[tuple[str, str, str, str], float]:
    return {(r["loop"], r["tls"], r["mode"], r["variant"]): r["cpu_us"] for r in section["rows"]}


Cell = tuple[str, str, str, str]  # loop, TLS, mode, variant


def _paired(section: dict[str, Any], a: Cell, b: Cell) -> float:
    """Median over rounds of a ÷ b, each round's two batches run one after the other (a slow
    drift of a shared machine hits both); the ratio of medians if rounds are missing."""
    runs = {(r["loop"], r["tls"], r["mode"], r["variant"]): r["runs"] for r in section["rows"]}
    first, second = runs.get(a), runs.get(b)
    if not first or not second:
        return math.nan
    if len(first) != len(second):
        return float(statistics.median(first) / statistics.median(second))
    return float(statistics.median(x / y for x, y in zip(first, second, strict=True)))


def _cases(section: dict[str, Any]) -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for row in section["rows"]:
        if (row["loop"], row["tls"]) not in cases:
            cases.append((row["loop"], row["tls"]))
    return cases


def _div(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else math.nan


def _s_time(section: dict[str, Any], tls: str, mode: str) -> float | None:
    found = [
        r.get("total_cpu_us", r["cpu_us"])
        for r in section.get("s_time", [])
        if (r["tls"], r["mode"]) == (tls, mode)
    ]
    return found[0] if found else None


def overheads(section: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """(loop, TLS, mode, pool ÷ bare - 1) per cell measured."""
    out = []
    for loop, tls in _cases(section):
        for mode in ("full", "resumed"):
            ratio = _paired(section, (loop, tls, mode, "pool"), (loop, tls, mode, "bare"))
            if not math.isnan(ratio):
                out.append((loop, tls, mode, ratio - 1))
    return out


def speedup(section: dict[str, Any], loop: str, tls: str, variant: str) -> float:
    """Full ÷ resumed CPU per connect: how many times cheaper a resumed connect is."""
    return _paired(section, (loop, tls, "full", variant), (loop, tls, "resumed", variant))


def console_lines(section: dict[str, Any]) -> list[str]:
    cpu = _cpu(section)
    lines = []
    for loop, tls in _cases(section):
        parts = []
        for mode in ("full", "resumed"):
            bare, pool = cpu.get((loop, tls, mode, "bare")), cpu.get((loop, tls, mode, "pool"))
            paired = _paired(section, (loop, tls, mode, "pool"), (loop, tls, mode, "bare"))
            parts.append(
                f"{mode} bare {bare or math.nan:.0f} µs, pool {pool or math.nan:.0f} µs "
                f"({paired - 1:+.0%})"
            )
        lines.append(f"bare workload TLS {tls} {loop}: " + "; ".join(parts))
    for row in section.get("s_time", []):
        lines.append(
            f"openssl s_time -{row['mode']} TLS {row['tls']}: {row['per_user_sec']:.0f} "
            f"connections per user second ({row['cpu_us']:.0f} µs user, "
            f"{row.get('total_cpu_us', math.nan):.0f} µs user + system)"
        )
    return lines


def markdown(section: dict[str, Any] | None) -> list[str]:
    if not section or not section.get("rows"):
        return []
    cpu = _cpu(section)
    rounds = min(len(r["runs"]) for r in section["rows"])
    connects = section["rows"][0]["connects"]
    out = [
        "## Bare workload: client CPU per connect",
        "",
        "TCP + TLS connect, read the 1 byte the server sends, close with close_notify; RSA-2048, "
        "the Python server in another process (`benchmarks/bare.py`). Client CPU "
        f"(`time.process_time`) per connect, median of {rounds} batches of {connects} "
        "sequential connects, variants taking turns. `bare`: the hand-written loop on the "
        "pool's own path (asyncio: the socket transport; uvloop: `create_connection(ssl=)`) "
        'with the native engine\'s offer and watch; `pool`: `Pool(session_engine="native")`, '
        "a new connection per connect (full: `session_cache=False`). Overhead and full ÷ "
        "resumed: the median over rounds of each round's ratio (its batches ran back to back).",
        "",
        "| loop | TLS | full bare | full pool | overhead | resumed bare | resumed pool "
        "| overhead | full ÷ resumed (bare / pool) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for loop, tls in _cases(section):
        cells = [loop, tls]
        for mode in ("full", "resumed"):
            bare, pool = cpu.get((loop, tls, mode, "bare")), cpu.get((loop, tls, mode, "pool"))
            cells += [f"{bare:.0f} µs" if bare else "-", f"{pool:.0f} µs" if pool else "-"]
            paired = _paired(section, (loop, tls, mode, "pool"), (loop, tls, mode, "bare"))
            cells.append(f"{paired - 1:+.1%}")
        bare_x, pool_x = (speedup(section, loop, tls, v) for v in ("bare", "pool"))
        cells.append(f"x{bare_x:.2f} / x{pool_x:.2f}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += _floor_markdown(section)
    if section.get("s_time"):
        out += [
            "The C limit: `openssl s_time` against nginx, pinned to the client CPU. Its own "
            "figure counts user CPU only (1 / connections per user second); the Python "
            "clients' `process_time` includes system time, so the comparison uses s_time's "
            "user + system CPU per connection (the child's resource usage). TLS 1.3 `-reuse` "
            "offers the session of the first connection, whose ticket s_time may not have "
            "read: it does not resume.",
            "",
            "| TLS | mode | connections per user second | user CPU per connect "
            "| user + system CPU per connect |",
            "|---|---|---|---|---|",
        ]
        for row in section["s_time"]:
            out.append(
                f"| {row['tls']} | -{row['mode']} | {row['per_user_sec']:,.0f} "
                f"| {row['cpu_us']:.0f} µs | {row.get('total_cpu_us', math.nan):.0f} µs |"
            )
        out.append("")
    return out


def _floor_markdown(section: dict[str, Any]) -> list[str]:
    """OpenSSL's own handshake costs, and the resumed ÷ full ratio they allow on the bare
    workload once its fixed per-connect cost (everything but the TLS 1.2 resumed handshake,
    from the TLS 1.2 rows) is added to both."""
    floor = section.get("floor") or {}
    if not floor:
        return []
    cpu = _cpu(section)
    out = [
        "OpenSSL alone (`benchmarks/bare_floor.py`: memory BIOs, one thread, the client's calls "
        "timed, the native engine watching): handshake, then the read of what follows it "
        "(TLS 1.3 tickets and the 1-byte record). `fixed` = the bare loop's resumed TLS 1.2 "
        "connect minus OpenSSL's resumed TLS 1.2 handshake and read: what every connect costs "
        "besides TLS; `allows` = (fixed + full) ÷ (fixed + resumed), the best full ÷ resumed "
        "a client with that fixed cost can reach.",
        "",
        "| TLS | full | resumed | full ÷ resumed | fixed, allows (asyncio) "
        "| fixed, allows (uvloop) |",
        "|---|---|---|---|---|---|",
    ]
    base = floor.get("1.2")
    for tls, f in floor.items():
        full = f["full_handshake_us"] + f["full_after_us"]
        resumed = f["resumed_handshake_us"] + f["resumed_after_us"]
        cells = [tls, f"{full:.0f} µs", f"{resumed:.0f} µs", f"x{full / resumed:.2f}"]
        for loop in ("asyncio", "uvloop"):
            bare = cpu.get((loop, "1.2", "resumed", "bare"))
            if bare is None or base is None:
                cells.append("-")
                continue
            fixed = bare - base["resumed_handshake_us"] - base["resumed_after_us"]
            cells.append(f"{fixed:.0f} µs, x{(fixed + full) / (fixed + resumed):.2f}")
        out.append("| " + " | ".join(cells) + " |")
    return [*out, ""]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    section = results.get("bare")
    if not section or not section.get("rows"):
        return []
    out = []
    found = overheads(section)
    if found:
        met = sum(o <= GOAL_OVERHEAD for *_, o in found)
        out.append(
            {
                "target": f"bare workload: pool client CPU per connect ≤ +{GOAL_OVERHEAD:.0%} "
                "over the hand-written loop (same engine and transport)",
                "measured": "; ".join(f"{lp} {t} {m} {o:+.0%}" for lp, t, m, o in found),
                "met": _verdict(met, len(found)),
                "detail": [],
            }
        )
    cases = [
        (loop, goal) for loop, goal in GOAL_TLS13_RATIO.items() if (loop, "1.3") in _cases(section)
    ]
    for loop, goal in cases:
        pool = speedup(section, loop, "1.3", "pool")
        bare = speedup(section, loop, "1.3", "bare")
        out.append(
            {
                "target": f"bare workload: TLS 1.3 full ÷ resumed client CPU ≥ x{goal} ({loop})",
                "measured": f"pool x{pool:.2f}, hand-written loop x{bare:.2f}",
                "met": _verdict(int(pool >= goal), 1),
                "detail": [],
            }
        )
    limit = _s_time(section, "1.2", "reuse")
    cpu = _cpu(section)
    pools = {lp: cpu[(lp, "1.2", "resumed", "pool")] for lp, t in _cases(section) if t == "1.2"}
    pools = {lp: v for lp, v in pools.items() if v}
    if limit and pools:
        best = min(pools, key=lambda lp: pools[lp])
        ratio = pools[best] / limit
        out.append(
            {
                "target": f"resumed TLS 1.2 pool client CPU ≤ x{GOAL_S_TIME:.0f} openssl s_time "
                "-reuse's, user + system (best loop)",
                "measured": f"x{ratio:.2f} ({best} {pools[best]:.0f} µs vs {limit:.0f} µs)",
                "met": _verdict(int(ratio <= GOAL_S_TIME), 1),
                "detail": [],
            }
        )
    return out


def _verdict(met: int, total: int) -> str:
    if met == total:
        return "met"
    return "missed" if met == 0 else f"partly ({met} of {total})"


def summary_lines(section: dict[str, Any] | None) -> list[str]:
    """The README's short table: client CPU per connect, pool vs hand-written loop."""
    if not section or not section.get("rows"):
        return []
    cpu = _cpu(section)
    out = [
        "",
        "Client CPU per connect on the bare workload (`bare`: TCP + TLS, read 1 byte, close), "
        "the pool against the hand-written loop on the same engine and transport:",
        "",
        "| loop | TLS | full: loop / pool | resumed: loop / pool | pool overhead (full, resumed) |",
        "|---|---|---|---|---|",
    ]
    for loop, tls in _cases(section):
        cells, extra = [], []
        for mode in ("full", "resumed"):
            bare, pool = cpu.get((loop, tls, mode, "bare")), cpu.get((loop, tls, mode, "pool"))
            cells.append(f"{bare or math.nan:,.0f} / {pool or math.nan:,.0f} µs")
            paired = _paired(section, (loop, tls, mode, "pool"), (loop, tls, mode, "bare"))
            extra.append(f"{paired - 1:+.0%}")
        out.append(f"| {loop} | {tls} | {cells[0]} | {cells[1]} | {', '.join(extra)} |")
    for row in section.get("s_time", []):
        if (row["tls"], row["mode"]) == ("1.2", "reuse") and "total_cpu_us" in row:
            out += [
                "",
                f"`openssl s_time -reuse` (TLS 1.2, C): {row['total_cpu_us']:,.0f} µs user + "
                f"system CPU per resumed connect ({row['cpu_us']:,.0f} µs user).",
            ]
    return out
