"""The clients compared side by side. Each does one request per connection:
connect (TCP + TLS) -> ``GET /`` -> read the 2-byte response -> close.

- ``pool-stdlib``: aiotlspool resuming through the standard library's session API
  (``Pool(session_engine="stdlib")``; plain ``Pool()`` before that option existed);
- ``pool-native``: aiotlspool with ``session_engine="native"`` (libssl through ctypes, no DER
  copies), when this Pool has it and it works on this interpreter;
- ``pool-nocache``: aiotlspool with ``session_cache=False`` (always a full handshake);
- ``handwritten``: the least code that resumes through the same stdlib seam as ``pool-stdlib``
  (an object with ``wrap_bio`` passed as ``ssl=``, the session read after the response), with
  the same ticket policy - so ``pool-stdlib`` vs ``handwritten`` is the pool's own overhead;
- ``raw``: ``asyncio.open_connection`` with an SSLContext, what users write today;
- ``aiohttp`` (``force_close=True``) and ``httpx`` (no keep-alive): HTTP clients as used today.

``request()`` returns whether the handshake resumed, or None when the client cannot tell (then
only the server's count says it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiotlspool import Pool

from .certs import HOST, CertFiles

REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: bench\r\n\r\n".encode()
# The pool's default: up to 8 single-use TLS 1.3 tickets per endpoint.
TICKETS_PER_ENDPOINT = 8


class Unavailable(Exception):
    """This client cannot run here (missing package or option); ``str()`` says why."""


@dataclass(frozen=True)
class Target:
    port: int
    certs: CertFiles
    tls: str  # "1.2" or "1.3"
    plain_port: int | None = None  # the same server without TLS (the "tcp" floor)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}/"


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """Just enough HTTP/1.1: headers, then Content-Length bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return await reader.readexactly(length)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close with close_notify and wait for the peer's, as the pool does."""
    writer.close()
    with contextlib.suppress(OSError):  # the peer may drop the socket first
        await writer.wait_closed()


class Client:
    name: ClassVar[str]
    resumes: ClassVar[bool]  # whether its handshakes should resume once warmed up
    tls: ClassVar[bool] = True  # False: connects to the plain-TCP port

    def __init__(self, target: Target) -> None:
        self.target = target
        # Each client gets its own context, as a user's program would.
        self.context = target.certs.client_context()

    async def open(self) -> None:
        """Set-up inside the event loop (not timed)."""

    async def request(self) -> bool | None:
        """One connection, one request; whether it resumed (None: cannot tell)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Tear-down (not timed)."""


class PoolClient(Client):
    name = "pool-stdlib"
    resumes = True
    pool_options: ClassVar[dict[str, Any]] = {"session_engine": "stdlib"}

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.pool = make_pool(self.context, **self.pool_options)

    async def request(self) -> bool:
        conn = await self.pool.acquire(HOST, self.target.port)
        try:
            conn.writer.write(REQUEST)
            await read_response(conn.reader)
        finally:
            # Reconnect-heavy: the connection is not reused; closing captures a TLS 1.3 ticket.
            await conn.aclose()
        return conn.session_reused

    async def aclose(self) -> None:
        await self.pool.aclose()


def make_pool(context: ssl.SSLContext, **options: Any) -> Pool:
    try:
        return Pool(context, **options)
    except TypeError:
        if options.get("session_engine") != "stdlib":
            raise Unavailable(
                f"Pool does not accept {options} (no session_engine option)"
            ) from None
        # Before session_engine= existed, the stdlib engine was the only one.
        options = {k: v for k, v in options.items() if k != "session_engine"}
        return Pool(context, **options)
    except Exception as exc:  # e.g. the native engine cannot load on this interpreter
        raise Unavailable(f"Pool({options}) failed: {exc}") from None


def default_engine() -> str:
    """The session engine a plain ``Pool()`` picks on this machine."""
    pool = Pool()
    return str(getattr(pool, "session_engine", "stdlib"))


class NativePoolClient(PoolClient):
    name = "pool-native"
    pool_options: ClassVar[dict[str, Any]] = {"session_engine": "native"}


class NoCachePoolClient(PoolClient):
    name = "pool-nocache"
    resumes = False
    pool_options: ClassVar[dict[str, Any]] = {"session_cache": False}


class _Offer:
    """Passed as ``ssl=``: asyncio and uvloop only call ``wrap_bio``; we add ``session=``."""

    __slots__ = ("context", "session", "ssl_object")

    def __init__(self, context: ssl.SSLContext, session: ssl.SSLSession | None) -> None:
        self.context = context
        self.session = session
        self.ssl_object: ssl.SSLObject | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> ssl.SSLObject:
        self.ssl_object = self.context.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=self.session,
        )
        return self.ssl_object


class HandwrittenClient(Client):
    """The pool's session policy in the fewest lines: TLS 1.2 keeps one reusable session (read
    once, after a full handshake); TLS 1.3 keeps up to 8 tickets, newest first, each used once."""

    name = "handwritten"
    resumes = True

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.sessions: deque[ssl.SSLSession] = deque(maxlen=TICKETS_PER_ENDPOINT)
        self.tls13 = target.tls == "1.3"

    async def request(self) -> bool:
        session = None
        if self.sessions:
            session = self.sessions.pop() if self.tls13 else self.sessions[-1]
        offer = _Offer(self.context, session)
        reader, writer = await asyncio.open_connection(
            HOST,
            self.target.port,
            ssl=offer,
        )
        try:
            writer.write(REQUEST)
            await read_response(reader)
            ssl_object = offer.ssl_object
            assert ssl_object is not None
            reused = ssl_object.session_reused
            if self.tls13 or not reused:
                # After the read, so a TLS 1.3 ticket has arrived; one read (a DER copy).
                new = ssl_object.session
                if new is not None and (new.has_ticket or not self.tls13):
                    self.sessions.append(new)
        finally:
            await close_writer(writer)
        return reused


class RawClient(Client):
    name = "raw"
    resumes = False

    async def request(self) -> bool:
        reader, writer = await asyncio.open_connection(HOST, self.target.port, ssl=self.context)
        try:
            writer.write(REQUEST)
            await read_response(reader)
        finally:
            await close_writer(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        return bool(ssl_object.session_reused)


class TcpClient(Client):
    """No TLS at all: the same request over plain TCP. The floor under every TLS client: what a
    connection costs here before any handshake (a reference, not a competitor)."""

    name = "tcp"
    resumes = False
    tls = False

    async def request(self) -> None:
        assert self.target.plain_port is not None
        reader, writer = await asyncio.open_connection(HOST, self.target.plain_port)
        try:
            writer.write(REQUEST)
            await read_response(reader)
        finally:
            await close_writer(writer)


class AiohttpClient(Client):
    name = "aiohttp"
    resumes = False

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        try:
            import aiohttp
        except ImportError:
            raise Unavailable("aiohttp is not installed (pip install -e '.[bench]')") from None
        self._aiohttp = aiohttp
        self.session: Any = None

    async def open(self) -> None:
        aiohttp = self._aiohttp
        connector = aiohttp.TCPConnector(ssl=self.context, force_close=True)
        self.session = aiohttp.ClientSession(connector=connector)

    async def request(self) -> None:
        async with self.session.get(self.target.url) as response:
            await response.read()

    async def aclose(self) -> None:
        await self.session.close()


class HttpxClient(Client):
    name = "httpx"
    resumes = False

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        try:
            import httpx
        except ImportError:
            raise Unavailable("httpx is not installed (pip install -e '.[bench]')") from None
        self._httpx = httpx
        self.client: Any = None

    async def open(self) -> None:
        httpx = self._httpx
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        self.client = httpx.AsyncClient(verify=self.context, limits=limits)

    async def request(self) -> None:
        response = await self.client.get(self.target.url)
        response.raise_for_status()

    async def aclose(self) -> None:
        await self.client.aclose()


ClientFactory = Callable[[Target], Client]
ALL_CLIENTS: dict[str, type[Client]] = {
    cls.name: cls
    for cls in (
        PoolClient,
        NativePoolClient,
        NoCachePoolClient,
        HandwrittenClient,
        RawClient,
        AiohttpClient,
        HttpxClient,
        TcpClient,
    )
}
# Measured only where a floor helps read the figures (the paired sequential comparison).
REFERENCE_CLIENTS = ("tcp",)


def available_clients(target: Target) -> tuple[list[str], dict[str, str]]:
    """Client names that can run here, and why the others cannot."""
    names, missing = [], {}
    for name, cls in ALL_CLIENTS.items():
        if name in REFERENCE_CLIENTS:
            continue
        try:
            client = cls(target)
        except Unavailable as exc:
            missing[name] = str(exc)
            continue
        if isinstance(client, PoolClient):
            asyncio.run(client.pool.aclose())
        names.append(name)
    return names, missing
