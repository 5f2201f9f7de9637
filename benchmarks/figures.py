"""Medians and look-ups over the raw reconnect figures, and how numbers are printed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

POOL_ENGINES = ("pool-stdlib", "pool-native")


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=4, method="inclusive")[round(q * 4) - 1]


def summarise_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repetitions of one (server, key, tls, loop, tasks, client) cell."""
    reps = cell["reps"]
    return {
        "cps": median(r["cps"] for r in reps),
        "cps_min": min((r["cps"] for r in reps), default=math.nan),
        "cps_max": max((r["cps"] for r in reps), default=math.nan),
        "cps_p25": _quantile([r["cps"] for r in reps], 0.25),
        "cps_p75": _quantile([r["cps"] for r in reps], 0.75),
        "cpu_us_per_conn": median(r["cpu_us_per_conn"] for r in reps),
        "server_busy": median(r["server_busy"] for r in reps),
        "resumed_server": [r["resumed_server"] for r in reps],
        "count": [r["count"] for r in reps],
        "flagged": sum(1 for r in reps if r["flagged"]),
    }


class Index:
    """Look-ups of reconnect medians by (server, key, tls, loop, tasks, client)."""

    def __init__(self, cells: list[dict[str, Any]]) -> None:
        self.cells = {
            (c["server"], c["key"], c["tls"], c["loop"], c["concurrency"], c["client"]): c
            for c in cells
        }

    def get(self, *key: Any, metric: str = "cps") -> float:
        cell = self.cells.get(tuple(key))
        return math.nan if cell is None else float(cell["median"][metric])

    def groups(self) -> list[tuple[str, str]]:
        # nginx first (the primary server when installed), RSA before ECDSA.
        return sorted(
            {(k[0], k[1]) for k in self.cells}, key=lambda g: (g[0] != "nginx", g[1] != "rsa", g)
        )

    def rows(self, server: str, key: str) -> list[tuple[str, str, int]]:
        return sorted({(k[2], k[3], k[4]) for k in self.cells if k[0] == server and k[1] == key})

    def clients(self) -> list[str]:
        seen: list[str] = []
        for k in self.cells:
            if k[5] not in seen:
                seen.append(k[5])
        return seen


def fmt(value: float, digits: int = 0, suffix: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"x{value:.2f}"
