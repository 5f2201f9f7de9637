"""Probe how a TLS server resumes sessions, through the pool's public API only.

For each mechanism - TLS 1.2 session IDs (the client refuses tickets), TLS 1.2 tickets and TLS
1.3 tickets - :func:`probe` makes one full handshake, then ``attempts`` reconnections through a
:class:`~aiotlspool.Pool` with a :class:`~aiotlspool.MemorySessionCache`, and reports how many
resumed (``conn.session_reused``). It renders nothing: :mod:`aiotlspool.cli.report` turns the
:class:`ProbeReport` into a table or JSON (documented in docs/cli.md).

Each connection is: connect, optionally send ``send`` and read the reply, ``await
conn.aclose()``. Closing is enough for TLS 1.3, whose tickets arrive after the handshake: the
pool captures the session after the close_notify exchange, which processes them.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
from dataclasses import dataclass
from typing import Any

from .._timeout import deadline
from ..connection import Connection
from ..endpoint import Endpoint
from ..exceptions import CertificateError, ConnectError, TLSHandshakeError
from ..pool import Pool
from ..sessions.cached import CachedSession
from ..sessions.key import SessionKey
from ..sessions.memory import MemorySessionCache
from .report import CheckResult, Mechanism, ProbeReport, Verdict
from .target import DEFAULT_PORT, ProbeInputError, check_name

MECHANISMS: tuple[Mechanism, ...] = ("tls1.2-session-id", "tls1.2-ticket", "tls1.3-ticket")

# OpenSSL reasons meaning "we have no protocol version in common" (as opposed to "not TLS").
_VERSION_MISMATCH = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS", "VERSION_TOO")
# How long the probe waits for the reply to ``send`` (a server that keeps the connection open
# gives no EOF): for its first byte, then for each further chunk.
_FIRST_BYTE = 2.0
_READ_IDLE = 0.2


@dataclass(frozen=True)
class _Spec:
    mechanism: Mechanism
    version: ssl.TLSVersion
    tickets: bool


_SPECS = {
    "tls1.2-session-id": _Spec("tls1.2-session-id", ssl.TLSVersion.TLSv1_2, tickets=False),
    "tls1.2-ticket": _Spec("tls1.2-ticket", ssl.TLSVersion.TLSv1_2, tickets=True),
    "tls1.3-ticket": _Spec("tls1.3-ticket", ssl.TLSVersion.TLSv1_3, tickets=True),
}


@dataclass(frozen=True)
class _Target:
    endpoint: Endpoint
    send: bytes
    timeout: float

    def pool(self, context: ssl.SSLContext, cache: MemorySessionCache) -> Pool:
        return Pool(
            context,
            session_cache=cache,
            max_connections=2,
            connect_timeout=self.timeout,
            acquire_timeout=None,  # connect_timeout bounds each connection
            connect_retries=0,  # a probe reports what happened, it does not insist
            close_timeout=min(self.timeout, 2.0),
            # The probe reads each session after its close_notify exchange, which an SSLObject
            # keeps and the socket transport's SSLSocket forgets.
            tls_transport="asyncio",
        )

    async def connect(self, pool: Pool) -> Connection:
        endpoint = self.endpoint
        return await pool.acquire(
            endpoint.host, endpoint.port, server_hostname=endpoint.server_hostname
        )


@dataclass
class _Visit:
    reused: bool
    handshake_seconds: float
    session: ssl.SSLSession | None = None


class _RecordingCache(MemorySessionCache):
    """Remembers which session each connect was offered, to tell that a ticket was reused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offered: list[CachedSession | None] = []
        self.taken = asyncio.Event()  # set by every get

    async def get(self, key: SessionKey) -> CachedSession | None:
        session = await super().get(key)
        self.offered.append(session)
        self.taken.set()
        return session


def make_context(
    version: ssl.TLSVersion, *, tickets: bool = True, cafile: str | None = None, verify: bool = True
) -> ssl.SSLContext:
    """A client context for exactly ``version``; ``tickets=False`` refuses session tickets."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ProbeInputError(f"cannot load CA file {cafile!r}: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    if not tickets:
        context.options |= ssl.OP_NO_TICKET
    return context


async def probe(
    host: str,
    port: int = DEFAULT_PORT,
    *,
    server_hostname: str | None = None,
    attempts: int = 5,
    cafile: str | None = None,
    verify: bool = True,
    timeout: float = 5.0,
    send: bytes = b"",
    mechanisms: tuple[Mechanism, ...] = MECHANISMS,
) -> ProbeReport:
    """Probe ``host:port`` for each of ``mechanisms`` and return the report.

    ``server_hostname=""`` sends no SNI and checks no name: it needs ``verify=False``.

    Raises :class:`ProbeInputError` for bad arguments, and the pool's :class:`ConnectError`
    subclasses when the probe cannot go on: the host does not resolve or refuses connections
    (:class:`ConnectError`), stalls (:class:`~aiotlspool.ConnectTimeout`), has a certificate
    that does not verify (:class:`CertificateError`), or fails the TLS handshake for every
    mechanism for a reason other than the protocol version (:class:`TLSHandshakeError`).
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ProbeInputError(f"attempts must be an int >= 1, got {attempts!r}")
    if not timeout > 0:
        raise ProbeInputError(f"timeout must be > 0 seconds, got {timeout!r}")
    if not mechanisms or any(m not in _SPECS for m in mechanisms):
        raise ProbeInputError(f"mechanisms must be among {MECHANISMS}, got {mechanisms!r}")
    # Checked here, not left to the pool: an empty server name turns host name checking off
    # (asyncio passes None to wrap_bio), and a bad name must fail before any I/O.
    if server_hostname == "" and verify:
        raise ProbeInputError(
            "an empty server_hostname sends no SNI and turns off host name checking: "
            "only with verify=False"
        )
    if isinstance(host, str):
        check_name(host, "host")
    if isinstance(server_hostname, str) and server_hostname:
        check_name(server_hostname, "server_hostname")
    try:
        endpoint = Endpoint.create(host, port, server_hostname)
    except (TypeError, ValueError) as exc:
        raise ProbeInputError(str(exc)) from None
    target = _Target(endpoint, send, timeout)
    checks: list[CheckResult] = []
    failures: list[TLSHandshakeError] = []
    for mechanism in dict.fromkeys(mechanisms):
        spec = _SPECS[mechanism]
        context = make_context(spec.version, tickets=spec.tickets, cafile=cafile, verify=verify)
        try:
            checks.append(await _check(spec, context, target, attempts))
        except TLSHandshakeError as exc:
            if isinstance(exc, CertificateError):
                raise
            if not _version_mismatch(exc):
                failures.append(exc)
            checks.append(_not_offered(spec, exc))
    if len(failures) == len(checks):
        # Nothing worked, and not for lack of a common version: report the failure itself.
        raise failures[0]
    return ProbeReport(
        host=endpoint.host,
        port=endpoint.port,
        server_name=endpoint.server_hostname,
        verified=verify,
        attempts=attempts,
        timeout=timeout,
        request_bytes=len(send),
        checks=tuple(checks),
    )


async def _check(
    spec: _Spec, context: ssl.SSLContext, target: _Target, attempts: int
) -> CheckResult:
    """One full handshake, then ``attempts`` reconnections; TLSHandshakeError if the first
    handshake fails (the caller decides whether that means "not offered")."""
    full: list[float] = []
    resumed: list[float] = []
    error: str | None = None
    async with target.pool(context, MemorySessionCache()) as pool:
        first = await _visit(pool, target, read_session=True)
        full.append(first.handshake_seconds)
        done = 0
        for _ in range(attempts):
            try:
                visit = await _visit(pool, target)
            except ConnectError as exc:
                error = str(exc)
                break
            done += 1
            (resumed if visit.reused else full).append(visit.handshake_seconds)
        rejected = pool.stats().rejected_sessions
    session = first.session
    has_ticket = session is not None and session.has_ticket
    hint = session.ticket_lifetime_hint if session is not None and has_ticket else None
    verdict, note = _verdict(spec, done, len(resumed), has_ticket, error)
    reuse: bool | None = None
    if spec.version is ssl.TLSVersion.TLSv1_3 and resumed and error is None:
        reuse = await _ticket_reuse(context, target)
    return CheckResult(
        mechanism=spec.mechanism,
        protocol=_protocol(spec),
        verdict=verdict,
        attempts=done,
        resumed=len(resumed),
        rejected=rejected,
        ticket_issued=has_ticket if spec.tickets else None,
        ticket_lifetime_hint=hint,
        full_handshake_ms=_median_ms(full),
        resumed_handshake_ms=_median_ms(resumed),
        ticket_reuse=reuse,
        note=note,
        error=error,
    )


def _verdict(
    spec: _Spec, done: int, resumed: int, has_ticket: bool, error: str | None
) -> tuple[Verdict, str | None]:
    if error is not None:
        return "error", f"stopped after {done} of the reconnections"
    if spec.tickets and not has_ticket:
        if resumed:
            # A TLS 1.2 client that accepts tickets still offers the session ID.
            return "not_supported", f"no ticket issued; {resumed} resumed by session ID instead"
        return "not_supported", "the server issued no ticket"
    if spec.tickets and resumed == 0:
        return "not_supported", "tickets were issued but none was accepted"
    if resumed == done:
        return "supported", None
    return ("partly" if resumed else "not_supported"), None


async def _visit(pool: Pool, target: _Target, *, read_session: bool = False) -> _Visit:
    """Connect, optionally send and read the reply, close; the session is read after closing
    (one costly copy), when the pool has processed any TLS 1.3 ticket."""
    conn = await target.connect(pool)
    try:
        if target.send:
            await _exchange(conn.reader, conn.writer, target.send, target.timeout)
    finally:
        await conn.aclose()
    visit = _Visit(conn.session_reused, conn.handshake_seconds)
    if read_session:
        visit.session = conn.ssl_object.session
    return visit


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, timeout: float
) -> None:
    """Send ``request``, then read until EOF, or until the reply pauses: the first byte may
    take ``_FIRST_BYTE`` s (at most ``timeout``), later bytes ``_READ_IDLE`` s."""
    wait = min(timeout, _FIRST_BYTE)
    try:
        async with deadline(timeout):
            writer.write(request)
            await writer.drain()
            while True:
                async with deadline(wait):
                    if not await reader.read(65536):
                        return
                wait = _READ_IDLE
    except (TimeoutError, OSError):
        pass  # the probe is about handshakes: a silent or rude server is fine


async def _ticket_reuse(context: ssl.SSLContext, target: _Target) -> bool | None:
    """Whether one TLS 1.3 ticket resumes two connections (RFC 8446 C.4 advises clients not
    to try; OpenSSL servers accept it). None when no ticket could be obtained."""
    cache = _RecordingCache(reuse_tls13_tickets=True)
    try:
        async with target.pool(context, cache) as pool:
            await _visit(pool, target)  # a full handshake; its ticket is stored at close
            if cache.size() == 0:
                return None
            first = await target.connect(pool)
            cache.taken.clear()
            second_task = asyncio.ensure_future(target.connect(pool))
            taken = asyncio.ensure_future(cache.taken.wait())
            try:
                # Let the second connect take its ticket before the first closes (closing stores
                # the first's new ticket). A server that serves one connection at a time
                # (openssl s_server) answers the second only after the first is closed.
                await asyncio.wait({second_task, taken}, return_when=asyncio.FIRST_COMPLETED)
                await first.aclose()
                second = await second_task
            finally:
                second_task.cancel()
                taken.cancel()
            await second.aclose()
    except TLSHandshakeError:
        return False  # a server may abort on a ticket it has seen before
    except ConnectError:
        return None
    offered = cache.offered[1:3]
    same_ticket = len(offered) == 2 and offered[0] is not None and offered[0] is offered[1]
    return same_ticket and first.session_reused and second.session_reused


def _not_offered(spec: _Spec, exc: TLSHandshakeError) -> CheckResult:
    cause = exc.__cause__
    if _version_mismatch(exc):
        why = "the server answered with a protocol_version alert"
    elif isinstance(cause, (ConnectionError, ssl.SSLEOFError)):
        why = "the server closed the connection"
    else:
        why = getattr(cause, "reason", None) or str(exc)
    return CheckResult(
        mechanism=spec.mechanism,
        protocol=_protocol(spec),
        verdict="not_offered",
        attempts=0,
        resumed=0,
        rejected=0,
        ticket_issued=None,
        ticket_lifetime_hint=None,
        full_handshake_ms=None,
        resumed_handshake_ms=None,
        note=f"protocol not offered: {why} when asked for {_protocol(spec)} only",
        error=str(exc),
    )


def _version_mismatch(exc: TLSHandshakeError) -> bool:
    reason = getattr(exc.__cause__, "reason", None) or ""
    return any(marker in reason.upper() for marker in _VERSION_MISMATCH)


def _protocol(spec: _Spec) -> str:
    return "TLSv1.3" if spec.version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"


def _median_ms(seconds: list[float]) -> float | None:
    return round(statistics.median(seconds) * 1000, 3) if seconds else None


__all__ = ["MECHANISMS", "make_context", "probe"]
