"""The issue's targets, judged from the medians of one run. Nothing here is typed in by hand."""

from __future__ import annotations

import math
from typing import Any

from .bare_report import targets as bare_targets
from .figures import POOL_ENGINES, Index, median
from .fleet_report import targets as fleet_targets
from .integrations_report import targets as integrations_targets
from .peers_report import targets as peers_targets

# Baselines the pool is compared with in the reconnect-heavy target.
BASELINES = ("raw", "aiohttp", "httpx")
# The targets (figures from the harness, not test assertions).
TARGET_RATIO = {"1.2": 3.0, "1.3": 1.7}
TARGET_OVERHEAD = 0.10
TARGET_IDLE_US = 10.0
TARGET_BURST8 = 7
TARGET_SAVED_RTT = 0.9


def compute_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per target of the issue, from this run's medians."""
    index = Index(results.get("reconnect", []))
    primary = results["meta"]["primary_server"]
    targets: list[dict[str, Any]] = []
    engines = [c for c in POOL_ENGINES if c in index.clients()]
    rows = index.rows(primary, "rsa")
    scope = (
        f"batches: {'/'.join(sorted({loop for _, loop, _ in rows}))}, "
        f"{'/'.join(str(t) for t in sorted({t for _, _, t in rows}))} tasks"
    )

    for tls, goal in TARGET_RATIO.items():
        for engine in engines:
            by_base: dict[str, list[float]] = {base: [] for base in BASELINES}
            for t, loop, tasks in index.rows(primary, "rsa"):
                if t == tls:
                    pool = index.get(primary, "rsa", tls, loop, tasks, engine)
                    for base in BASELINES:
                        by_base[base].append(
                            pool / index.get(primary, "rsa", tls, loop, tasks, base)
                        )
            target = _ratio_target(
                f"TLS {tls} reconnects/s, {engine} ≥ x{goal} vs each of raw/aiohttp/httpx "
                f"({scope})",
                goal,
                by_base,
            )
            if target is not None:
                targets.append(target)

    targets += _paired_targets(results)

    overheads, detail = [], []
    for tls, loop, tasks in index.rows(primary, "rsa"):
        pool = index.get(primary, "rsa", tls, loop, tasks, "pool-stdlib")
        hand = index.get(primary, "rsa", tls, loop, tasks, "handwritten")
        if math.isnan(pool) or math.isnan(hand):
            continue
        overhead = hand / pool - 1  # extra time per connection
        cpu = index.get(primary, "rsa", tls, loop, tasks, "pool-stdlib", metric="cpu_us_per_conn")
        hand_cpu = index.get(
            primary, "rsa", tls, loop, tasks, "handwritten", metric="cpu_us_per_conn"
        )
        overheads.append(overhead)
        detail.append(
            f"TLS {tls} {loop} {tasks} task(s): time {overhead:+.0%}, "
            f"CPU {cpu / hand_cpu - 1:+.0%} ({cpu - hand_cpu:+.0f} µs/conn)"
        )
    if overheads:
        targets.append(
            {
                "target": f"pool overhead vs the hand-written loop ≤ {TARGET_OVERHEAD:.0%} "
                f"({scope})",
                "measured": f"{min(overheads):+.0%} to {max(overheads):+.0%} "
                f"(median {median(overheads):+.0%})",
                "met": _verdict(sum(o <= TARGET_OVERHEAD for o in overheads), len(overheads)),
                "detail": detail,
            }
        )

    for idle in results.get("idle", []):
        if idle["loop"] != "uvloop":
            continue  # the target is for uvloop; asyncio's figure is in the table
        targets.append(
            {
                "target": f"idle checkout ≤ {TARGET_IDLE_US:.0f} µs ({idle['loop']})",
                "measured": f"{idle['pool_us']:.1f} µs (asyncio.Queue floor "
                f"{idle['queue_us']:.1f} µs)",
                "met": _verdict(int(idle["pool_us"] <= TARGET_IDLE_US), 1),
                "detail": [],
            }
        )

    for burst in results.get("burst", []):
        if burst["burst"] != 8:
            continue
        targets.append(
            {
                "target": f"burst of 8 after warm-up ≥ {TARGET_BURST8} resumed "
                f"({burst['client']}, TLS {burst['tls']}, {burst['loop']})",
                "measured": f"{burst['min_resumed']} (min), {burst['median_resumed']} (median) "
                f"of {burst['reps']} reps",
                "met": _verdict(int(burst["min_resumed"] >= TARGET_BURST8), 1),
                "detail": [],
            }
        )

    for lat in results.get("latency", []):
        if lat["tls"] != "1.2":
            continue
        targets.append(
            {
                "target": f"TLS 1.2 resumption saves ≥ {TARGET_SAVED_RTT} RTT at "
                f"{lat['rtt_ms']:.0f} ms RTT ({lat['loop']})",
                "measured": f"{lat['saved_rtt']:.2f} RTT ({lat['saved_ms']:.1f} ms)",
                "met": _verdict(int(lat["saved_rtt"] >= TARGET_SAVED_RTT), 1),
                "detail": [],
            }
        )
    return (
        targets
        + integrations_targets(results)
        + fleet_targets(results)
        + bare_targets(results)
        + peers_targets(results)
    )


def _paired_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratio and overhead targets judged on the paired sequential comparison."""
    rows = [r for r in results.get("paired", []) if r["key"] == "rsa"]
    if not rows:
        return []
    targets = []
    clients = rows[0]["clients"]
    for tls, goal in TARGET_RATIO.items():
        for engine in (c for c in POOL_ENGINES if c in clients):
            by_base: dict[str, list[float]] = {base: [] for base in BASELINES}
            for row in rows:
                if row["tls"] == tls:
                    pool = row["clients"][engine]["cps"]
                    for base in BASELINES:
                        if base in row["clients"]:
                            by_base[base].append(pool / row["clients"][base]["cps"])
            target = _ratio_target(
                f"TLS {tls} reconnects/s, {engine} ≥ x{goal} vs each of raw/aiohttp/httpx "
                "(paired sequential, both loops)",
                goal,
                by_base,
            )
            if target is not None:
                targets.append(target)
    overheads, detail = [], []
    for row in rows:
        pool, hand = row["clients"].get("pool-stdlib"), row["clients"].get("handwritten")
        if pool is None or hand is None:
            continue
        overhead = pool["wall_us"] / hand["wall_us"] - 1
        overheads.append(overhead)
        detail.append(
            f"TLS {row['tls']} {row['loop']}: time {overhead:+.0%} "
            f"({pool['wall_us'] - hand['wall_us']:+.0f} µs), CPU "
            f"{pool['cpu_us'] / hand['cpu_us'] - 1:+.0%} "
            f"({pool['cpu_us'] - hand['cpu_us']:+.0f} µs)"
        )
    if overheads:
        targets.append(
            {
                "target": f"pool overhead vs the hand-written loop ≤ {TARGET_OVERHEAD:.0%} "
                "(paired sequential)",
                "measured": f"{min(overheads):+.0%} to {max(overheads):+.0%}",
                "met": _verdict(sum(o <= TARGET_OVERHEAD for o in overheads), len(overheads)),
                "detail": detail,
            }
        )
    return targets


def _ratio_target(
    label: str, goal: float, by_base: dict[str, list[float]]
) -> dict[str, Any] | None:
    """Ratios of the pool to each baseline over several cases; met per baseline when every
    case reaches ``goal``."""
    ranges = {base: [r for r in values if not math.isnan(r)] for base, values in by_base.items()}
    ranges = {base: values for base, values in ranges.items() if values}
    if not ranges:
        return None
    met = [base for base, values in ranges.items() if min(values) >= goal]
    missed = [base for base in ranges if base not in met]
    if not missed:
        verdict = "met"
    elif not met:
        verdict = "missed"
    else:
        verdict = f"met vs {', '.join(met)}; missed vs {', '.join(missed)}"
    measured = "; ".join(
        f"{base} x{min(values):.2f}-x{max(values):.2f}" for base, values in ranges.items()
    )
    return {"target": label, "measured": measured, "met": verdict, "detail": []}


def _verdict(met: int, total: int) -> str:
    if total == 0:
        return "not measured"
    if met == total:
        return "met"
    if met == 0:
        return "missed"
    return f"partly ({met} of {total})"
