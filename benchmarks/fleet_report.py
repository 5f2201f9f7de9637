"""The ``fleet`` section in ``results.md`` and its targets, from what :mod:`benchmarks.fleet`
recorded."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .figures import fmt

# The goals: the Redis tier adds < 15 % to a resumed connect on its hot path.
TARGET_TIER_SHARE = 0.15
TICKETS_PER_FULL = 2  # TLS 1.3 tickets nginx (OpenSSL's default) sends after a full handshake
VARIANT_LABEL = {"cold": "all at once", "leader": "one first, then the others"}
STORE_LABEL = {"memory": "per-process MemorySessionCache", "redis": "shared RedisSessionCache"}
COST_LABEL = {
    "memory": "MemorySessionCache",
    "redis": "RedisSessionCache (in-process tier on: the hot path)",
    "redis-cold": "RedisSessionCache, local=False (every read from Redis)",
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _spread(values: list[Any], digits: int = 0, suffix: str = "") -> str:
    """One value if every repetition agrees, else the median and the range."""
    data = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not data:
        return "-"
    lo, hi = min(data), max(data)
    if lo == hi:
        return fmt(lo, digits, suffix)
    return f"{fmt(statistics.median(data), digits, suffix)} ({fmt(lo, digits)}-{fmt(hi, digits)})"


def _groups(section: dict[str, Any]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in section.get("runs", []):
        groups.setdefault((run["tls"], run["variant"], run["store"]), []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "cold", kv[0][2])))


def _ms(runs: list[dict[str, Any]], field: str, index: int | None = None) -> list[Any]:
    out = []
    for run in runs:
        value = run.get(field)
        if index is not None and value is not None:
            value = value[index]
        out.append(None if value is None else 1000 * value)
    return out


def markdown(section: dict[str, Any]) -> list[str]:
    n, k = section["processes"], section["per_process"]
    version = section.get("redis_server")
    out = [
        "## A fleet sharing sessions (`fleet`)",
        "",
        f"{n} worker processes (spawned, pinned to the client CPU; {section['loop']}), each "
        f'with a new `Pool(session_engine="native")` and a new store per run, make {k} '
        f"sequential connections each (connect, `GET /`, response, close) to the "
        f"{section['server']} server (RSA-2048). *All at once*: every process starts at the "
        "same moment, nothing warmed up. *One first*: one process makes one connection "
        f"(its sessions written), then the other {n - 1} start together. The Redis store: one "
        f"throwaway redis-server{' ' + version if version else ''} on 127.0.0.1 (no "
        "persistence), a new namespace per run. Counts: the client's (`pool.stats()`, "
        "`conn.session_reused`) / nginx's (`$ssl_session_reused`); several repetitions: "
        "median (range).",
        "",
    ]
    for name, why in section.get("unavailable", {}).items():
        out += [f"- **{name}: unavailable** - {why}", ""]
    rows = []
    for (tls, variant, store), runs in _groups(section).items():
        held = [r["held_at_start"] for r in runs if r.get("held_at_start") is not None]
        first = _spread([r["first_resumed"] for r in runs])
        first += f" of {runs[0]['first_connects']}"
        if held:
            first += f" ({_spread(held)} held)"
        timing = "-"
        if variant == "cold":
            timing = f"first full handshake done {_spread(_ms(runs, 'first_full_done'), 1)} ms"
            starts = _ms(runs, "first_starts", 1)
            if any(v is not None for v in starts):
                timing = f"all had started by {_spread(starts, 1)} ms; " + timing
            if store == "redis":
                timing += f"; first entry in Redis {_spread(_ms(runs, 'first_entry_seen'), 1)} ms"
        before = "-"
        if store == "redis" and variant == "cold":
            before = _spread([r["full_before_first_entry"] for r in runs])
        rows.append(
            [
                f"TLS {tls}",
                VARIANT_LABEL[variant],
                STORE_LABEL[store],
                str(runs[0]["connections"]),
                f"{_spread([r['full'] for r in runs])} / "
                f"{_spread([r['full_server'] for r in runs])}",
                f"{_spread([r['resumed'] for r in runs])} / "
                f"{_spread([r['resumed_server'] for r in runs])}",
                first,
                before,
                timing,
            ]
        )
    if rows:
        out += _table(
            [
                "TLS",
                "start",
                "store",
                "connections",
                "full (client / nginx)",
                "resumed (client / nginx)",
                "first connects resumed",
                "full before the first entry reached Redis",
                "timing (from the agreed start)",
            ],
            rows,
        )
    out += _cost_markdown(section.get("cost") or [])
    out += _file_markdown(section.get("file_store"))
    return out


def _cost_markdown(cost: list[dict[str, Any]]) -> list[str]:
    if not cost:
        return []
    out = [
        "What the Redis tier adds to a resumed connect: one process, one event loop, three "
        "pools taking turns in blocks (rotating order), every connection resumed. Client CPU "
        "per connection = getrusage over a block (the store's background writes and a flush "
        "at the end of the block included) ÷ its connections, median over blocks; "
        "`acquire()` = the connect with its resumed handshake (thread CPU and wall time, "
        "median per connection). Added = Redis block - memory block of the same round, "
        "median (interquartile range); share = added ÷ the memory pool's `acquire()` CPU "
        "(a resumed connect).",
        "",
    ]
    rows = []
    for row in cost:
        for variant, v in row["variants"].items():
            added = share = "-"
            if "added_cpu_us" in v:
                added = (
                    f"{v['added_cpu_us']:+,.0f} ({v['added_cpu_us_p25']:+,.0f} to "
                    f"{v['added_cpu_us_p75']:+,.0f})"
                )
                share = (
                    f"{v['added_of_acquire']:+.0%} (whole connection "
                    f"{v['added_of_connection']:+.0%})"
                )
            counters = v.get("counters") or {}
            tier = (
                f"{counters.get('local_hits', 0)} / {counters.get('remote_hits', 0)} / "
                f"{counters.get('remote_misses', 0)}"
                if counters
                else "-"
            )
            rows.append(
                [
                    f"TLS {row['tls']}",
                    COST_LABEL[variant],
                    fmt(v["cpu_us"]),
                    fmt(v["acquire_cpu_us"]),
                    fmt(v["acquire_wall_us"]),
                    added,
                    share,
                    f"{v['resumed']} / {v['connections']}",
                    tier,
                ]
            )
    pings = [fmt(row.get("ping_cpu_us") or math.nan) for row in cost]
    out += _table(
        [
            "TLS",
            "store",
            "client CPU per connection (µs)",
            "acquire() CPU (µs)",
            "acquire() wall (µs)",
            "added CPU per connect (µs)",
            "share of a resumed connect",
            "resumed",
            "local hits / Redis hits / Redis misses",
        ],
        rows,
    )
    return [
        *out,
        "For scale: one redis-py round trip (`PING`) cost "
        + " and ".join(f"{p} µs" for p in pings)
        + " of client CPU in the same runs (TLS 1.2, 1.3).",
        "",
    ]


def _file_markdown(files: dict[str, Any] | None) -> list[str]:
    if not files:
        return []
    n = len(files["processes"])
    out = [
        f"A restarted process with the file store: {n} fresh processes one after the other on "
        "one `FileSessionCache` directory, each making one connection per TLS version and "
        "exiting.",
        "",
    ]
    rows = [
        [
            f"TLS {tls}",
            str(n),
            "resumed" if files[tls]["first_process_resumed"] else "full",
            f"{files[tls]['restarted_resumed']} of {files['restarts']}",
            f"{files[tls]['full_server']} / {files[tls]['resumed_server']}",
        ]
        for tls in ("1.2", "1.3")
        if tls in files
    ]
    return out + _table(
        [
            "TLS",
            "processes",
            "first process",
            "later processes resumed on their first connection",
            "nginx full / resumed",
        ],
        rows,
    )


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The three goals of the fleet item, from this run's figures."""
    section = results.get("fleet")
    if not section:
        return []
    out = []
    groups = _groups(section)
    n = section["processes"]

    def fulls(tls: str, variant: str, store: str) -> list[int]:
        return [r["full"] for r in groups.get((tls, variant, store), [])]

    if fulls("1.2", "cold", "redis"):
        out.append(
            {
                "target": f"fleet of {n}, all starting at once, TLS 1.2: 1 full handshake for "
                "the whole fleet, resumption everywhere after it (Redis store)",
                "measured": f"{_spread(fulls('1.2', 'cold', 'redis'))} full with Redis "
                f"({_spread(fulls('1.2', 'cold', 'memory'))} with memory caches)",
                "met": _verdict(max(fulls("1.2", "cold", "redis")) <= 1),
                "detail": [],
            }
        )
    runs = groups.get(("1.3", "cold", "redis"), [])
    if runs:
        # A TLS 1.3 ticket resumes one connection: 8 processes connecting at once cannot all
        # resume on one full handshake's tickets. The goal is that the store's tickets are
        # used: the first connects wait for the first full handshake (the single flight) and
        # at least its tickets resume them, so fewer full handshakes than without sharing.
        memory = fulls("1.3", "cold", "memory")
        met = all(r["first_resumed"] >= TICKETS_PER_FULL for r in runs) and max(
            r["full"] for r in runs
        ) < min(memory, default=n + 1)
        out.append(
            {
                "target": f"fleet of {n}, all starting at once, TLS 1.3: the tickets the store "
                f"holds are used (at least the {TICKETS_PER_FULL} of the first full handshake "
                "resume first connects; fewer full handshakes than with memory caches)",
                "measured": f"{_spread([r['first_resumed'] for r in runs])} of "
                f"{runs[0]['first_connects']} first connects resumed; "
                f"{_spread([r['full'] for r in runs])} full with Redis "
                f"({_spread(memory)} with memory caches)",
                "met": _verdict(met),
                "detail": [],
            }
        )
    runs = groups.get(("1.2", "leader", "redis"), [])
    if runs:
        met = all(r["full"] == 1 and r["resumed"] == r["connections"] - 1 for r in runs)
        out.append(
            {
                "target": f"fleet of {n}, one process first: 1 full handshake, then TLS 1.2 "
                "resumption everywhere (Redis store)",
                "measured": f"{_spread([r['full'] for r in runs])} full, "
                f"{_spread([r['resumed'] for r in runs])} of {runs[0]['connections'] - 1} "
                f"resumed (memory caches: {_spread(fulls('1.2', 'leader', 'memory'))} full)",
                "met": _verdict(met),
                "detail": [],
            }
        )
    runs = groups.get(("1.3", "leader", "redis"), [])
    if runs:
        # (more may resume: the tickets of their resumptions are published while others wait)
        met = all(
            r["first_resumed"] >= min(r["first_connects"], r["held_at_start"] or 0) for r in runs
        )
        out.append(
            {
                "target": f"fleet of {n}, one process first, TLS 1.3: at least as many first "
                "connects resume as the store holds tickets (Redis store)",
                "measured": f"{_spread([r['first_resumed'] for r in runs])} of "
                f"{runs[0]['first_connects']} resumed, "
                f"{_spread([r['held_at_start'] for r in runs])} held; "
                f"{_spread([r['full'] for r in runs])} full in all",
                "met": _verdict(met),
                "detail": [],
            }
        )
    for row in section.get("cost") or []:
        v = row["variants"].get("redis")
        if v is None or "added_of_acquire" not in v:
            continue
        out.append(
            {
                "target": f"Redis tier adds < {TARGET_TIER_SHARE:.0%} to a resumed connect "
                f"(client CPU, hot path, TLS {row['tls']})",
                "measured": f"{v['added_cpu_us']:+,.0f} µs per connect, "
                f"{v['added_of_acquire']:+.0%}",
                "met": _verdict(v["added_of_acquire"] < TARGET_TIER_SHARE),
                "detail": [],
            }
        )
    missing = "; ".join(section.get("unavailable", {}).values())
    if missing:
        out.append(
            {
                "target": "fleet goals with the Redis store (cold start, Redis tier's cost)",
                "measured": missing,
                "met": "not measured",
                "detail": [],
            }
        )
    files = section.get("file_store")
    if files:
        counts = {tls: files[tls]["restarted_resumed"] for tls in ("1.2", "1.3") if tls in files}
        out.append(
            {
                "target": "a restarted process resumes on its first connection (file store)",
                "measured": "; ".join(
                    f"TLS {tls} {c} of {files['restarts']}" for tls, c in counts.items()
                ),
                "met": _verdict(all(c == files["restarts"] for c in counts.values())),
                "detail": [],
            }
        )
    return out
