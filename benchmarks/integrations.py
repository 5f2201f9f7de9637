"""Reconnect-heavy HTTPS through the HTTP libraries users run, with and without
``aiotlspool.enable_resumption`` (the ``integrations`` section).

Sequential ``GET /`` on a fresh connection each time, against the primary server (nginx when
installed), on each loop and TLS version (RSA-2048):

- ``aiohttp``: ``TCPConnector(ssl=ctx, force_close=True)``; ``aiohttp+resumption``: the same,
  after ``enable_resumption(ctx)``;
- ``httpx``: ``AsyncClient(verify=ctx, limits=Limits(max_keepalive_connections=0))``;
  ``httpx+resumption``: the same, after ``enable_resumption(ctx)``;
- ``curl_cffi``: libcurl (BoringSSL), which resumes by itself: ``AsyncSession`` with
  ``CURLOPT_FORBID_REUSE`` (the connection is closed after each transfer);
  ``curl_cffi-noresume``: the same with ``CURLOPT_SSL_SESSIONID_CACHE=0``, its own baseline;
- ``pool-native``: the pool itself, for reference (it reads the response by hand).

All variants share one event loop per (TLS version, loop) and take turns in blocks of a few
requests (the order rotates every round), so that the machine's noise hits them alike; each
request is timed on its own. Requests/s = 1 / median time per request; client CPU per request =
``getrusage`` over a block, divided by its requests (median over blocks); the server's CPU
per request (``/proc``, in clock ticks) over all blocks. The server counts
full and resumed handshakes per block; for the ``+resumption`` variants
``resumption_stats(ctx)`` counts too, and must agree.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from .clients import (
    ALL_CLIENTS,
    AiohttpClient,
    Client,
    HttpxClient,
    PoolClient,
    Target,
    Unavailable,
)
from .env import LoopFactory, process_cpu, run_on
from .server import Server

MAX_ERRORS = 5
# Ratio goals of the issue: with resumption ÷ the same library without it.
GOAL = {"1.2": 2.0, "1.3": 1.5}
# (library, its variant without resumption, its variant with resumption)
PAIRS = (
    ("aiohttp", "aiohttp", "aiohttp+resumption"),
    ("httpx", "httpx", "httpx+resumption"),
    ("curl_cffi (libcurl)", "curl_cffi-noresume", "curl_cffi"),
)


def _enable(context: Any) -> Any:
    try:
        from aiotlspool import enable_resumption, resumption_stats
    except ImportError:
        raise Unavailable("this aiotlspool has no enable_resumption") from None
    enable_resumption(context)
    return resumption_stats


class _Resuming(Client):
    """Mixed in before a library's client: its context is made resuming, and the context's
    own statistics say how many handshakes resumed."""

    resumes = True

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.stats = _enable(self.context)

    def client_resumed(self) -> int | None:
        return int(self.stats(self.context).resumed)


class AiohttpResuming(_Resuming, AiohttpClient):
    name = "aiohttp+resumption"


class HttpxResuming(_Resuming, HttpxClient):
    name = "httpx+resumption"


class CurlClient(Client):
    """curl_cffi's ``AsyncSession``; libcurl keeps TLS sessions by itself (per multi handle)."""

    name = "curl_cffi"
    resumes = True

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        try:
            from curl_cffi import CurlOpt
            from curl_cffi.requests import AsyncSession
        except ImportError as exc:
            raise Unavailable(
                f"curl_cffi cannot be imported ({exc}; pip install -e '.[bench]')"
            ) from None
        # A new connection for every request: libcurl closes it after the transfer.
        self.options: dict[Any, int] = {CurlOpt.FORBID_REUSE: 1}
        if not self.resumes:
            self.options[CurlOpt.SSL_SESSIONID_CACHE] = 0
        self._session_class: Any = AsyncSession
        self.session: Any = None

    async def open(self) -> None:
        self.session = self._session_class(
            verify=str(self.target.certs.ca), curl_options=self.options
        )

    async def request(self) -> None:
        response = await self.session.get(self.target.url)
        if response.status_code != 200 or response.content != b"ok":
            raise RuntimeError(f"curl_cffi: unexpected response {response.status_code}")

    async def aclose(self) -> None:
        await self.session.close()


class CurlNoResume(CurlClient):
    name = "curl_cffi-noresume"
    resumes = False


VARIANTS: dict[str, type[Client]] = {
    cls.name: cls
    for cls in (
        ALL_CLIENTS["aiohttp"],
        AiohttpResuming,
        ALL_CLIENTS["httpx"],
        HttpxResuming,
        CurlClient,
        CurlNoResume,
        ALL_CLIENTS["pool-native"],
    )
}


def available(target: Target) -> tuple[list[str], dict[str, str]]:
    """Variant names that can run here, and why the others cannot."""
    names, missing = [], {}
    for name, cls in VARIANTS.items():
        try:
            client = cls(target)
        except Unavailable as exc:
            missing[name] = str(exc)
            continue
        if isinstance(client, PoolClient):
            asyncio.run(client.pool.aclose())
        names.append(name)
    return names, missing


def _client_resumed(client: Client) -> int | None:
    counter: Callable[[], int | None] | None = getattr(client, "client_resumed", None)
    return counter() if counter is not None else None


async def _block(server: Server, client: Client, count: int) -> dict[str, Any]:
    """``count`` sequential requests, each on a new connection, each timed."""
    port = client.target.port
    before, seen = server.counts(port), _client_resumed(client)
    walls: list[float] = []
    reused = 0
    server_cpu = server.cpu_seconds()
    cpu, started = process_cpu(), time.perf_counter()
    for _ in range(count):
        wall = time.perf_counter()
        reused += bool(await client.request())
        walls.append(time.perf_counter() - wall)
    elapsed, cpu = time.perf_counter() - started, process_cpu() - cpu
    server_cpu = server.cpu_seconds() - server_cpu
    after = server.wait_counted(port, sum(before) + count)
    now = _client_resumed(client)
    if isinstance(client, PoolClient):
        now, seen = reused, 0
    return {
        "walls": walls,
        "seconds": elapsed,
        "cpu": cpu,
        "server_cpu": server_cpu,
        "full_server": after[0] - before[0],
        "resumed_server": after[1] - before[1],
        "resumed_client": None if now is None or seen is None else now - seen,
    }


def run_cell(
    server: Server,
    target: Target,
    names: list[str],
    loop_factory: LoopFactory,
    *,
    rounds: int,
    block: int,
    seconds: float,
    after_round: Callable[[int], None],
    failures: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """Every variant on one fresh loop: warm-up, then ``rounds`` rounds (fewer if ``seconds``
    run out) in which each variant, in rotated order, makes ``block`` sequential requests.
    A block that fails is left out and its error added to ``failures``."""

    async def main() -> dict[str, list[dict[str, Any]]]:
        clients = [VARIANTS[name](target) for name in names]
        blocks: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        errors = dict.fromkeys(names, 0)
        try:
            for client in clients:
                await client.open()
                for _ in range(10):  # caches primed, imports and handles made: not timed
                    await client.request()
            stop_at = time.monotonic() + seconds
            for rnd in range(rounds):
                if time.monotonic() > stop_at:
                    break
                shift = rnd % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    try:
                        blocks[client.name].append(await _block(server, client, block))
                    except Exception as exc:
                        failures.append(f"{client.name}: {exc!r}")
                        errors[client.name] += 1
                        if errors[client.name] >= MAX_ERRORS:
                            raise
                after_round(rnd)
        finally:
            for client in clients:
                await client.aclose()
        return blocks

    return run_on(loop_factory, main())


def summarise(
    name: str, tls: str, loop: str, server: str, blocks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The row of one variant in one (TLS version, loop) cell: medians and resumption counts."""
    cls = VARIANTS[name]
    walls = [w for b in blocks for w in b["walls"]]
    count = len(walls)
    resumed = sum(b["resumed_server"] for b in blocks)
    client_counts = [b["resumed_client"] for b in blocks]
    client = None if None in client_counts else sum(client_counts)
    expected = count if cls.resumes else 0
    median_wall = statistics.median(walls) if walls else float("nan")
    quartiles = statistics.quantiles(walls, n=4) if count > 1 else [median_wall] * 3
    return {
        "server": server,
        "tls": tls,
        "loop": loop,
        "client": name,
        "resumes": cls.resumes,
        "blocks": len(blocks),
        "count": count,
        "rps": 1 / median_wall if walls else float("nan"),
        "wall_us": 1e6 * median_wall,
        "wall_us_p25": 1e6 * quartiles[0],
        "wall_us_p75": 1e6 * quartiles[2],
        "rps_blocks": statistics.median(len(b["walls"]) / b["seconds"] for b in blocks)
        if blocks
        else float("nan"),
        "cpu_us": statistics.median(1e6 * b["cpu"] / len(b["walls"]) for b in blocks)
        if blocks
        else float("nan"),
        # /proc counts in clock ticks (10 ms): over all blocks, not a median of blocks.
        "server_cpu_us": 1e6 * sum(b["server_cpu"] for b in blocks) / count
        if count
        else float("nan"),
        "full_server": sum(b["full_server"] for b in blocks),
        "resumed_server": resumed,
        "resumed_client": client,
        "expected_resumed": expected,
        "flagged": resumed != expected or (client is not None and client != resumed),
        # Per block (the per-request times are summarised above, not kept).
        "raw_blocks": [{k: v for k, v in b.items() if k != "walls"} for b in blocks],
    }


def library_versions() -> dict[str, str | None]:
    """libcurl's own version string (curl_cffi's is in the run's package versions)."""
    try:
        from curl_cffi import Curl
    except ImportError:
        return {"libcurl": None}
    return {"libcurl": Curl().version().decode()}


def run_section(bench: Any) -> dict[str, Any]:
    """Called by :class:`benchmarks.runner.Bench` (``--sections integrations``)."""
    s = bench.settings
    server = bench.servers["primary"]
    probe = bench.target("primary", "rsa", "1.2")
    names, missing = available(probe)
    rows: list[dict[str, Any]] = []
    result = {
        "server": server.kind,
        "block": s.integrations_block,
        "unavailable": missing,
        "versions": library_versions(),
        "rows": rows,
        "errors": [],
    }
    if not names or not s.integrations_rounds:
        return result
    for tls in ("1.2", "1.3"):
        target = bench.target("primary", "rsa", tls)
        for loop_name, factory in bench.loops(("asyncio", "uvloop")):
            label = f"integrations TLS {tls} {loop_name}"
            failures: list[str] = []
            blocks = bench.guarded(
                label,
                run_cell,
                server,
                target,
                names,
                factory,
                rounds=s.integrations_rounds,
                block=s.integrations_block,
                seconds=s.integrations_seconds,
                after_round=lambda rnd, label=label: bench.step(
                    f"{label} ({rnd + 1}/{s.integrations_rounds})"
                ),
                failures=failures,
            )
            result["errors"] += [f"TLS {tls} {loop_name} {failure}" for failure in failures]
            line = []
            for name in names:
                if blocks and blocks.get(name):
                    row = summarise(name, tls, loop_name, server.kind, blocks[name])
                    rows.append(row)
                    flag = " ⚑" if row["flagged"] else ""
                    line.append(f"{name} {row['rps']:.0f}/s{flag}")
            bench.console.print(f"{label}: " + ", ".join(line))
    return result


def steps(bench: Any) -> int:
    """Progress steps: one per round of each (TLS version, loop) cell."""
    return 2 * len(bench.loops(("asyncio", "uvloop"))) * int(bench.settings.integrations_rounds)
