"""The ``Memory`` section of ``results.md``, from what the ``memory`` section recorded
(:mod:`benchmarks.memory`, :mod:`benchmarks.memory_long`, :mod:`benchmarks.memory_cache`)."""

from __future__ import annotations

import math
from typing import Any

from .figures import fmt

GOAL_LONG_GROWTH = 5e6  # bytes of RSS growth over 100,000 reconnects (issue 13)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:+.2f} MiB"


def markdown(memory: dict[str, Any] | None) -> list[str]:
    memory = memory or {}
    out: list[str] = []
    if memory.get("reconnects") or memory.get("long") or memory.get("cache_bound"):
        out += ["## Memory", ""]
    if memory.get("reconnects"):
        out += ["RSS over sequential reconnects (fresh process per row):", ""]
        out += _table(
            ["client", "TLS", "connections", "RSS growth", "bytes per connection (slope)"],
            [
                [
                    m["client"],
                    f"TLS {m['tls']}",
                    str(m["count"]),
                    fmt(m["growth_bytes"] / 1024, 0, " KiB"),
                    fmt(m["bytes_per_conn"]),
                ]
                for m in memory["reconnects"]
            ],
        )
    if memory.get("sessions"):
        out += [
            "Bytes per cached session, per session engine: RSS growth per capture kept "
            "(OpenSSL's allocations included), RSS growth per capture dropped at once (a leak "
            "if not 0), and the cache entry's Python objects (tracemalloc):",
            "",
        ]
        out += _table(
            ["TLS", "engine", "held per session", "leaked per capture", "cache entry (Python)"],
            [
                [
                    f"TLS {m['tls']}",
                    m["engine"],
                    fmt(m["held_bytes_per_session"]),
                    fmt(m["leaked_bytes_per_capture"]),
                    fmt(m["cache_entry_python_bytes"]),
                ]
                for m in memory["sessions"]
            ],
        )
    out += _long_markdown(memory.get("long", []))
    out += _bound_markdown(memory.get("cache_bound", []))
    return out


def _long_markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [
        "Long run: sequential pool reconnects (native engine, the loop's default transport) in "
        "a fresh process; RSS growth over the whole run, in the first 10,000 and after them; "
        "the growth of malloc's bytes in use (`mallinfo2`: heap and mmapped), the free bytes "
        "glibc keeps in its heap at the end, and the RSS growth left after `malloc_trim(0)`. "
        "Goal: at most 5 MB over 100,000.",
        "",
    ]
    out += _table(
        [
            "client",
            "TLS",
            "loop",
            "connections",
            "resumed",
            "RSS growth",
            "first 10k",
            "after 10k",
            "malloc in use",
            "heap free at end",
            "after malloc_trim",
            "goal",
        ],
        [
            [
                r["client"],
                f"TLS {r['tls']}",
                r["loop"],
                f"{r['count']:,}",
                f"{r['resumed']:,}",
                _mib(r["growth_bytes"]),
                _mib(r["growth_first_10k_bytes"]),
                _mib(r["growth_after_10k_bytes"]),
                _mib(r.get("live_growth_bytes")),
                "-" if r["heap_free_end_bytes"] is None else _mib(r["heap_free_end_bytes"])[1:],
                _mib(r["trimmed_growth_bytes"]),
                _goal(r),
            ]
            for r in rows
        ],
    )
    return out


def _goal(row: dict[str, Any]) -> str:
    if row["count"] < 100_000:
        return "- (fewer than 100,000)"
    return "met" if row["growth_bytes"] <= GOAL_LONG_GROWTH else "missed"


def _bound_markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [
        "Cache bound: real native sessions (`SSL_SESSION_dup` copies of what one full handshake "
        "left: 2 TLS 1.3 tickets or 1 TLS 1.2 session) put under distinct endpoints of one "
        "`MemorySessionCache(max_size=...)` in a fresh process; RSS growth until `max_size` "
        "keys are held, and after that:",
        "",
    ]
    out += _table(
        [
            "TLS",
            "endpoints",
            "max_size",
            "sessions held",
            "evicted",
            "RSS to the bound",
            "RSS after the bound",
            "malloc in use after the bound",
            "seconds",
        ],
        [
            [
                f"TLS {r['tls']}",
                f"{r['endpoints']:,}",
                f"{r['max_size']:,}",
                f"{r['cached_sessions']:,}",
                f"{r['evicted']:,}",
                _mib(r["growth_to_bound_bytes"]),
                _mib(r["growth_after_bound_bytes"]),
                _mib(r.get("live_after_bound_bytes")),
                fmt(r.get("seconds", math.nan), 0),
            ]
            for r in rows
        ],
    )
    for r in rows:
        curve = ", ".join(
            f"{p['done']:,}: {(p['rss'] - r['points'][0]['rss']) / 2**20:+.1f}"
            for p in r["points"][:: max(1, len(r["points"]) // 10)]
        )
        out += [f"RSS growth (MiB) by endpoints put, TLS {r['tls']}: {curve}.", ""]
    return out
