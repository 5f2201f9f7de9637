"""Interop: the pool against real TLS servers that nobody here wrote.

The expected resumption matrix is ``realservers.VARIANTS`` (measured with the standard library
client by ``test_realservers_smoke.py``, see docs/real-servers.md): the pool must resume exactly
where the server's configuration allows it, on both loops, both session engines and every TLS
version the server speaks. Restarts and reloads must never fail an acquire: a stale session is
refused by the server, dropped, counted in ``rejected_sessions``, and the next connection
resumes again.

Set ``AIOTLSPOOL_INTEROP_REPORT=path`` to append one JSON line per matrix cell (expected and
observed) to ``path``; docs/reliability.md was written from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from aiotlspool import CachedSession, MemorySessionCache, Pool, SessionKey

from ..support import realservers as rs
from ..support.helpers import tls13_sessions_stored

TLS12, TLS13 = rs.TLS12, rs.TLS13
VERSION_NAME = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}
REPORT = os.environ.get("AIOTLSPOOL_INTEROP_REPORT")


def cases(
    keep: Callable[[rs.Variant, rs.VariantSpec, ssl.TLSVersion], bool] = lambda v, s, t: True,
) -> list[Any]:
    """(variant, version) for every TLS version each variant speaks."""
    return [
        pytest.param(variant, version, id=f"{variant}-{VERSION_NAME[version]}")
        for variant, spec in rs.VARIANTS.items()
        for version in sorted(spec.tls_versions)
        if keep(variant, spec, version)
    ]


def hands_out_sessions(spec: rs.VariantSpec, version: ssl.TLSVersion) -> bool:
    """Whether the server gives the client something that looks resumable.

    TLS 1.3: a ticket (nginx sends them even with resumption off). TLS 1.2: a session ID or a
    ticket; every TLS 1.2 variant that gives one also honours it, so this is ``resumes``.
    """
    return spec.tls13_tickets if version == TLS13 else version in spec.resumes


async def exchange(pool: Pool, server: rs.RealServer, *, keep: bool = False) -> bool:
    """One request/reply on a pooled connection; return whether its handshake resumed.

    The connection is closed afterwards (so the next exchange makes a new handshake) unless
    ``keep``: then it goes back to the pool.
    """
    async with pool.connection(server.host, server.port, server_hostname=server.server_name) as c:
        c.writer.write(server.request)
        await c.writer.drain()
        reply = b""
        while not reply.endswith(server.reply_end):
            chunk = await asyncio.wait_for(c.reader.read(65536), 5)
            assert chunk, f"{server!r} closed before the end of its reply: {reply[-200:]!r}"
            reply += chunk
        if server.variant.startswith("s_server-"):
            # The status page tells the server's side of the story.
            assert (b"Reused, " in reply) == c.session_reused, reply[:400]
        reused = c.session_reused
        if not keep:
            await c.aclose()
    return reused


class RecordingCache(MemorySessionCache):
    """The default cache, also recording what it handed out and what it was told to forget."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_out: list[CachedSession] = []
        self.invalidated: list[CachedSession] = []

    async def get(self, key: SessionKey) -> CachedSession | None:
        session = await super().get(key)
        if session is not None:
            self.handed_out.append(session)
        return session

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        if session is not None:
            self.invalidated.append(session)
        await super().invalidate(key, session)


def record(
    kind: str, variant: rs.Variant, version: ssl.TLSVersion, engine: str, **cell: object
) -> None:
    """Append one matrix cell (expected and observed) to the report, if one was asked for."""
    if REPORT:
        cell.update(
            kind=kind,
            variant=variant,
            version=VERSION_NAME[version],
            loop=loop_name(),
            engine=engine,
        )
        with open(REPORT, "a") as out:
            out.write(json.dumps(cell, sort_keys=True) + "\n")


async def reload_or_restart(server: rs.RealServer, event: str) -> None:
    await asyncio.to_thread(server.reload if event == "reload" else server.restart)


def engine_name(pool: Pool) -> str:
    return pool.session_engine


def loop_name() -> str:
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


# --- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "version"), cases())
async def test_resumes_exactly_where_the_server_configuration_allows(
    variant: rs.Variant,
    version: ssl.TLSVersion,
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
    session_engine: str,
    request: pytest.FixtureRequest,
) -> None:
    spec = rs.VARIANTS[variant]
    server = shared_realserver(variant)
    resumes = version in spec.resumes
    async with Pool(realserver_certs.client_context(version)) as pool:
        observed = [await exchange(pool, server) for _ in range(3)]
        stats = pool.stats()
    record(
        "matrix",
        variant,
        version,
        session_engine,
        expected=resumes,
        observed=observed,
        full=stats.full_handshakes,
        resumed=stats.resumed_handshakes,
        rejected=stats.rejected_sessions,
        stored=stats.sessions_stored,
    )
    assert observed == [False, resumes, resumes]
    assert (stats.full_handshakes, stats.resumed_handshakes) == (3 - 2 * resumes, 2 * resumes)
    assert stats.connections_opened == stats.connections_closed == 3
    assert stats.connect_errors == 0
    # Every session offered and not resumed was counted and dropped; nothing else was.
    offered = 2 if hands_out_sessions(spec, version) else 0
    assert (stats.cache_hits, stats.cache_misses) == (offered, 3 - offered)
    assert stats.rejected_sessions == offered - stats.resumed_handshakes
    # TLS 1.2: a resumed session is already cached; TLS 1.3: each connection brings tickets.
    tls13 = tls13_sessions_stored(session_engine, full=3 - 2 * resumes, resumed=2 * resumes)
    stored = {TLS12: 1 if resumes else 0, TLS13: tls13 if spec.tls13_tickets else 0}[version]
    assert stats.sessions_stored == stored


@pytest.mark.engines("native")
@pytest.mark.parametrize("variant", ["nginx-tls13", "haproxy-echo", "stunnel-echo"])
async def test_burst_after_one_warm_up_connection_resumes(
    variant: rs.Variant,
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
) -> None:
    # OpenSSL-based servers send 2 TLS 1.3 tickets per full handshake; the native engine stores
    # both as they arrive, so 2 concurrent connections after one warm-up both resume.
    server = shared_realserver(variant)
    async with Pool(realserver_certs.client_context(TLS13)) as pool:
        assert await exchange(pool, server) is False
        assert pool.stats().cache_size == 2
        burst = await asyncio.gather(*(exchange(pool, server) for _ in range(2)))
    assert burst == [True, True]


@pytest.mark.parametrize(
    ("variant", "version"),
    cases(lambda v, spec, version: version in spec.resumes and not spec.closes_after_reply),
)
async def test_session_captured_at_release_resumes_on_keep_alive_servers(
    variant: rs.Variant,
    version: ssl.TLSVersion,
    shared_realserver: rs.SharedRealServer,
    realserver_certs: rs.Certs,
) -> None:
    # The usual life of a pooled connection: released (the TLS 1.3 ticket is captured at
    # release, after the reply was read), reused without a handshake, and a second connection
    # opened while the first is busy resumes its session.
    server = shared_realserver(variant)
    async with Pool(realserver_certs.client_context(version)) as pool:
        assert await exchange(pool, server, keep=True) is False
        name = server.server_name
        async with pool.connection(server.host, server.port, server_hostname=name) as busy:
            assert busy.checkouts == 2  # the idle connection, no handshake
            assert await exchange(pool, server, keep=True) is True
        stats = pool.stats()
    assert (stats.full_handshakes, stats.resumed_handshakes, stats.rejected_sessions) == (1, 1, 0)
    assert stats.connections_opened == 2


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=VERSION_NAME.get)
async def test_session_resumes_on_another_instance_sharing_the_ticket_key(
    version: ssl.TLSVersion,
    nginx_shared_key_pair: tuple[rs.RealServer, rs.RealServer],
    realserver_certs: rs.Certs,
) -> None:
    a, b = nginx_shared_key_pair
    ctx = realserver_certs.client_context(version)
    # Same name and context, different ports: sessions are shared only when asked to.
    async with Pool(ctx, share_sessions_across_ports=True) as pool:
        observed = [await exchange(pool, a), await exchange(pool, b), await exchange(pool, a)]
        stats = pool.stats()
    assert observed == [False, True, True]
    assert (stats.resumed_handshakes, stats.rejected_sessions) == (2, 0)
    # By default a session stays with its port: b is never offered a's session.
    async with Pool(ctx) as pool:
        observed = [await exchange(pool, a), await exchange(pool, b)]
        stats = pool.stats()
    assert observed == [False, False]
    assert (stats.cache_hits, stats.rejected_sessions) == (0, 0)


# --- restarts and reloads --------------------------------------------------------------------

EVENT_CASES = [
    pytest.param(variant, version, event, id=f"{variant}-{VERSION_NAME[version]}-{event}")
    for variant, spec in rs.VARIANTS.items()
    if variant.startswith("nginx-") and spec.after_reload is not None
    for version in sorted(spec.resumes)
    for event in ("reload", "restart")
]


@pytest.mark.parametrize(("variant", "version", "event"), EVENT_CASES)
async def test_stale_session_after_reload_or_restart_is_dropped_and_resumption_recovers(
    variant: rs.Variant,
    version: ssl.TLSVersion,
    event: str,
    start_realserver: rs.StartRealServer,
    realserver_certs: rs.Certs,
) -> None:
    spec = rs.VARIANTS[variant]
    after = spec.after_reload if event == "reload" else spec.after_restart
    assert after is not None
    survives = version in after
    server = start_realserver(variant)
    cache = RecordingCache()
    async with Pool(realserver_certs.client_context(version), session_cache=cache) as pool:
        assert await exchange(pool, server) is False
        assert await exchange(pool, server, keep=True) is True  # stays idle in the pool
        idle = pool.stats().idle
        assert idle == 1
        offered_before = len(cache.handed_out)
        # reload() returns once the old workers are gone, so the idle connection is closed.
        await reload_or_restart(server, event)
        observed = [await exchange(pool, server), await exchange(pool, server)]
        stats = pool.stats()
    record(
        "event",
        variant,
        version,
        engine_name(pool),
        event=event,
        expected=survives,
        observed=observed,
        rejected=stats.rejected_sessions,
    )
    assert observed[0] is survives  # and no acquire failed
    assert observed[1] is True  # resumption is back
    assert stats.connect_errors == 0
    assert stats.connections_opened == 4  # the dead idle connection was not handed out
    assert stats.rejected_sessions == (0 if survives else 1)
    stale = cache.handed_out[offered_before]  # offered to the first connection after the event
    if survives:
        assert cache.invalidated == []
    else:
        assert cache.invalidated == [stale]
        assert cache.handed_out[offered_before + 1 :].count(stale) == 0  # never offered again


@pytest.mark.parametrize(
    ("variant", "version"),
    [
        pytest.param("nginx-tickets", TLS12, id="nginx-tickets-TLSv1.2"),
        pytest.param("nginx-tls13", TLS13, id="nginx-tls13-TLSv1.3"),
    ],
)
@pytest.mark.parametrize("event", ["reload", "restart"])
async def test_no_acquire_fails_while_the_server_reloads_or_restarts_under_load(
    variant: rs.Variant,
    version: ssl.TLSVersion,
    event: str,
    start_realserver: rs.StartRealServer,
    realserver_certs: rs.Certs,
) -> None:
    server = start_realserver(variant)
    # A restart refuses connections for ~30-40 ms here: connect_retries covers that window.
    cache = RecordingCache()
    pool = Pool(
        realserver_certs.client_context(version),
        session_cache=cache,
        connect_retries=6,
        retry_backoff=0.02,
    )
    acquire_failures: list[BaseException] = []
    request_failures: list[BaseException] = []
    exchanges = 0
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal exchanges
        while not stop.is_set():
            try:
                conn = await pool.acquire(
                    server.host, server.port, server_hostname=server.server_name
                )
            except Exception as exc:
                acquire_failures.append(exc)
                continue
            try:
                conn.writer.write(server.request)
                await conn.writer.drain()
                reply = b""
                while not reply.endswith(server.reply_end):
                    chunk = await asyncio.wait_for(conn.reader.read(65536), 5)
                    if not chunk:
                        raise ConnectionResetError("server closed mid-reply")
                    reply += chunk
                exchanges += 1
            except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
                # nginx's fast shutdown (restart) drops requests in flight: not an acquire.
                request_failures.append(exc)
            finally:
                # New connections only: every request goes through a handshake and the cache.
                await conn.aclose()

    async with pool:
        tasks = [asyncio.create_task(client()) for _ in range(4)]
        await asyncio.sleep(0.2)
        before = exchanges
        await reload_or_restart(server, event)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        after_event = exchanges - before
        resumed_again = await exchange(pool, server)
        stats = pool.stats()
    record(
        "under-load",
        variant,
        version,
        engine_name(pool),
        event=event,
        exchanges=exchanges,
        after_event=after_event,
        acquire_failures=len(acquire_failures),
        request_failures=len(request_failures),
        rejected=stats.rejected_sessions,
        dropped=len(cache.invalidated),
    )
    assert resumed_again is True  # resumption is back
    assert acquire_failures == []
    if event == "reload":
        assert request_failures == []  # a reload is graceful
    assert after_event > 0
    if event == "reload":
        # The stale sessions were refused, counted and dropped. (During a restart a TLS 1.3
        # ticket may instead die in a handshake that nginx's fast shutdown cut short: it had
        # already left the cache, so nothing is left to drop.)
        assert cache.invalidated
        assert stats.rejected_sessions >= 1
    assert stats.connect_errors == 0
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0)
