"""PNG charts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .figures import Index


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(results: dict[str, Any], out: Path) -> list[str]:
    """Draw every chart the results allow; return the file names written."""
    try:
        plt = _pyplot()
    except ImportError:
        return []
    written = []
    for name, function in (
        ("sequential.png", _paired),
        ("reconnect.png", _reconnect),
        ("cpu.png", _cpu),
        ("latency.png", _latency),
        ("memory.png", _memory),
    ):
        figure = function(plt, results)
        if figure is not None:
            figure.savefig(out / name, dpi=110)
            plt.close(figure)
            written.append(name)
    return written


def _bars(plt: Any, results: dict[str, Any], metric: str, ylabel: str, title: str) -> Any:
    index = Index(results["reconnect"])
    server = results["meta"]["primary_server"]
    clients = index.clients()
    tls_versions = sorted({row[0] for row in index.rows(server, "rsa")})
    if not tls_versions:
        return None
    figure, axes = plt.subplots(
        1,
        len(tls_versions),
        figsize=(7 * len(tls_versions) + 1.5, 4.4),
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / len(clients)
    for ax, tls in zip(axes[0], tls_versions, strict=True):
        groups = [(loop, tasks) for t, loop, tasks in index.rows(server, "rsa") if t == tls]
        for i, client in enumerate(clients):
            xs, ys, low, high = [], [], [], []
            for g, (loop, tasks) in enumerate(groups):
                cell = index.cells.get((server, "rsa", tls, loop, tasks, client))
                if cell is None:
                    continue
                value = cell["median"][metric]
                xs.append(g + (i - (len(clients) - 1) / 2) * width)
                ys.append(value)
                if metric == "cps":
                    low.append(value - cell["median"].get("cps_p25", value))
                    high.append(cell["median"].get("cps_p75", value) - value)
            errors = [low, high] if metric == "cps" and not any(map(math.isnan, ys)) else None
            ax.bar(xs, ys, width, yerr=errors, capsize=2, label=client)
        ax.set_xticks(range(len(groups)), [f"{loop}\n{tasks} task(s)" for loop, tasks in groups])
        ax.set_title(f"TLS {tls}")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.suptitle(
        f"{title} ({server} server, RSA-2048; median, bars = interquartile range of the batches)"
    )
    return figure


def _paired(plt: Any, results: dict[str, Any]) -> Any:
    rows = [r for r in results.get("paired", []) if r["key"] == "rsa"]
    if not rows:
        return None
    tls_versions = sorted({r["tls"] for r in rows})
    # The no-TLS floor is 4-6 times faster: it would flatten the bars; it goes in the title.
    clients = [c for c in rows[0]["clients"] if c != "tcp"]
    figure, axes = plt.subplots(
        1,
        len(tls_versions),
        figsize=(6 * len(tls_versions) + 1.5, 4.4),
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / len(clients)
    for ax, tls in zip(axes[0], tls_versions, strict=True):
        loops = [r for r in rows if r["tls"] == tls]
        floor = ", ".join(
            f"{r['loop']} {r['clients']['tcp']['cps']:,.0f}/s"
            for r in loops
            if "tcp" in r["clients"]
        )
        for i, client in enumerate(clients):
            ax.bar(
                [g + (i - (len(clients) - 1) / 2) * width for g in range(len(loops))],
                [r["clients"][client]["cps"] for r in loops],
                width,
                label=client,
            )
        ax.set_xticks(range(len(loops)), [r["loop"] for r in loops])
        ax.set_title(f"TLS {tls}" + (f"\n(plain TCP, no TLS: {floor})" if floor else ""))
        ax.set_ylabel("connects / s (1 / median per connection)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.suptitle(
        f"Sequential reconnects, clients taking turns ({rows[0]['server']} server, RSA-2048)"
    )
    return figure


def _reconnect(plt: Any, results: dict[str, Any]) -> Any:
    if not results.get("reconnect"):
        return None
    return _bars(plt, results, "cps", "connects / s (higher is better)", "Reconnect-heavy")


def _cpu(plt: Any, results: dict[str, Any]) -> Any:
    if not results.get("reconnect"):
        return None
    return _bars(
        plt,
        results,
        "cpu_us_per_conn",
        "client CPU µs / connection (lower is better)",
        "Client CPU per connection",
    )


def _latency(plt: Any, results: dict[str, Any]) -> Any:
    rows = results.get("latency", [])
    if not rows:
        return None
    figure, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    labels = [f"TLS {r['tls']}\n{r['loop']}" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["full_ms"] for r in rows], 0.4, label="full handshake")
    ax.bar([x + 0.2 for x in xs], [r["resumed_ms"] for r in rows], 0.4, label="resumed")
    rtt = rows[0]["rtt_ms"]
    for multiple in (1, 2):
        ax.axhline(multiple * rtt, color="grey", linestyle=":", linewidth=1)
        ax.text(
            1.01,
            multiple * rtt,
            f"{multiple} RTT",
            transform=ax.get_yaxis_transform(),  # x in axes fraction: right of the plot
            va="center",
            ha="left",
            color="grey",
        )
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("pool.acquire() ms (median)")
    ax.set_title(f"Connect latency with {rtt:.0f} ms injected RTT")
    ax.set_ylim(0, max(r["full_ms"] for r in rows) * 1.25)
    ax.legend(loc="upper right", ncols=2)
    return figure


def _memory(plt: Any, results: dict[str, Any]) -> Any:
    rows = results.get("memory", {}).get("reconnects", [])
    if not rows:
        return None
    tls_versions = sorted({r["tls"] for r in rows})
    figure, axes = plt.subplots(
        1,
        len(tls_versions),
        figsize=(6 * len(tls_versions), 4),
        squeeze=False,
        layout="constrained",
    )
    for ax, tls in zip(axes[0], tls_versions, strict=True):
        for r in rows:
            if r["tls"] != tls:
                continue
            base = r["points"][0][1]
            ax.plot(
                [x for x, _ in r["points"]],
                [(y - base) / 2**20 for _, y in r["points"]],
                marker=".",
                label=r["client"],
            )
        ax.set_title(f"TLS {tls}: RSS growth over reconnects")
        ax.set_xlabel("connections")
        ax.set_ylabel("MiB above start")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure
