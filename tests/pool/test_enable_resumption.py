"""enable_resumption: a plain SSLContext that resumes in other libraries, with the server's own
count of resumed handshakes as the judge."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading

import pytest
import trustme

from aiotlspool import (
    MemorySessionCache,
    Pool,
    ResumptionStats,
    SessionCache,
    disable_resumption,
    enable_resumption,
    resumption_cache,
    resumption_stats,
)
from aiotlspool.integrations.names import normalize_server_name

from ..support.helpers import HOST, NAME, require_module
from ..support.servers import (
    Server,
    ThreadServer,
    client_context,
    echo,
    running_server,
    server_context,
)

TIMEOUT = 5.0


async def exchange(port: int, ctx: ssl.SSLContext, name: str | None = NAME) -> bool:
    """asyncio streams: connect, one echo round trip, close; whether it resumed."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=name), TIMEOUT
    )
    try:
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"ping"
        return bool(writer.get_extra_info("ssl_object").session_reused)
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


def assert_adds_up(stats: ResumptionStats, *, connections: int) -> None:
    assert stats.full + stats.resumed == connections, stats
    assert stats.hits + stats.misses == connections, stats
    assert stats.hits == stats.resumed + stats.rejected, stats


async def test_streams_resume(ca: trustme.CA, server: Server, tls_version: str) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    assert type(ctx) is ssl.SSLContext
    results = [await exchange(server.port, ctx) for _ in range(4)]
    assert results == [False, True, True, True]
    assert server.resumed == 3
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=4)
    assert (stats.full, stats.resumed, stats.rejected, stats.misses) == (1, 3, 0, 1), stats
    assert stats.stored >= 1


async def test_start_tls_resumes(ca: trustme.CA, server: Server, tls_version: str) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    loop = asyncio.get_running_loop()
    for _ in range(3):
        reader, writer = await asyncio.open_connection(HOST, server.port)
        protocol = writer.transport.get_protocol()
        tls = await asyncio.wait_for(
            loop.start_tls(writer.transport, protocol, ctx, server_hostname=NAME), TIMEOUT
        )
        assert tls is not None
        tls_writer = asyncio.StreamWriter(tls, protocol, reader, loop)
        tls_writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"ping"
        tls_writer.close()
        await asyncio.wait_for(tls_writer.wait_closed(), TIMEOUT)
    assert server.resumed == 2
    assert resumption_stats(ctx).resumed == 2


async def test_anyio_connect_tcp_resumes(ca: trustme.CA, server: Server, tls_version: str) -> None:
    anyio = require_module("anyio")
    ctx = enable_resumption(client_context(ca, tls_version))
    for _ in range(3):
        # anyio passes the server name as IDNA bytes (b"localhost").
        stream = await anyio.connect_tcp(
            HOST, server.port, tls=True, ssl_context=ctx, tls_hostname=NAME
        )
        async with stream:
            await stream.send(b"ping")
            assert await stream.receive() == b"ping"
    assert server.resumed == 2
    assert_adds_up(resumption_stats(ctx), connections=3)


async def http_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 server: one response per connection, then close."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()


async def test_aiohttp_resumes(ca: trustme.CA, cert: trustme.LeafCert, tls_version: str) -> None:
    aiohttp = require_module("aiohttp")
    ctx = enable_resumption(client_context(ca, tls_version))
    async with running_server(server_context(cert, tls_version), http_once) as srv:
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for _ in range(3):
                url = f"https://{HOST}:{srv.port}/"
                async with session.get(url, server_hostname=NAME) as response:
                    assert await response.read() == b"ok"
        assert (srv.handshakes, srv.resumed) == (3, 2)
    assert resumption_stats(ctx).resumed == 2


async def test_httpx_resumes(ca: trustme.CA, cert: trustme.LeafCert, tls_version: str) -> None:
    httpx = require_module("httpx")
    ctx = enable_resumption(client_context(ca, tls_version))
    async with running_server(server_context(cert, tls_version), http_once) as srv:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(verify=ctx, limits=limits, timeout=TIMEOUT) as client:
            for _ in range(3):
                url = f"https://{HOST}:{srv.port}/"
                response = await client.get(url, extensions={"sni_hostname": NAME})
                assert response.content == b"ok"
        assert (srv.handshakes, srv.resumed) == (3, 2)
    assert resumption_stats(ctx).resumed == 2


@pytest.mark.engines("native", "stdlib")  # (a sync test: only when named; see conftest)
def test_sync_threads_resume(ca: trustme.CA, cert: trustme.LeafCert, tls_version: str) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    threads, rounds = 4, 3
    errors: list[BaseException] = []

    def connect() -> None:
        raw = socket.create_connection((HOST, srv.port), timeout=TIMEOUT)
        with raw, ctx.wrap_socket(raw, server_hostname=NAME) as tls:
            tls.sendall(b"ping")
            assert tls.recv(4) == b"ping"

    def worker() -> None:
        try:
            for _ in range(rounds):
                connect()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with ThreadServer(echo, server_context(cert, tls_version)) as srv:
        connect()  # the warm-up: a full handshake
        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(TIMEOUT * rounds)
        assert not errors, errors
        stats = resumption_stats(ctx)
        assert_adds_up(stats, connections=1 + threads * rounds)
        assert srv.resumed == stats.resumed
    if tls_version == "TLSv1.2":  # one reusable session
        assert stats.resumed == threads * rounds, stats
    else:  # single-use tickets: concurrent takers may find none left
        assert stats.resumed >= threads * (rounds - 1), stats


async def test_another_name_never_gets_the_session(
    ca: trustme.CA, server: Server, tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    assert await exchange(server.port, ctx) is False
    before = resumption_stats(ctx)
    # "localhost." is the same DNS name, but OpenSSL's check fails it: it must not resume.
    for name in ("example.invalid", "127.0.0.1", "localhost."):
        # A full handshake: certificate verification runs, and fails (not a resumption).
        with pytest.raises(ssl.SSLCertVerificationError):
            await exchange(server.port, ctx, name)
    after = resumption_stats(ctx)
    assert (after.hits, after.misses) == (before.hits, before.misses + 2), after
    assert server.resumed == 0
    assert await exchange(server.port, ctx) is True  # the session is still there for its name


async def test_tls13_tickets_are_single_use_tls12_sessions_reusable(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    async with running_server(server_context(cert, tls_version, num_tickets=1)) as srv:
        assert await exchange(srv.port, ctx) is False
    cache = resumption_cache(ctx)
    assert cache.size() == 1
    # Each wrap_bio of a client connection takes (TLS 1.3) or borrows (TLS 1.2) the session.
    first = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=NAME)
    second = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=NAME)
    stats = resumption_stats(ctx)
    if tls_version == "TLSv1.3":
        assert cache.size() == 0 and (stats.hits, stats.misses) == (1, 2), stats
    else:
        assert cache.size() == 1 and (stats.hits, stats.misses) == (2, 1), stats
    del first, second


async def test_no_server_name_no_offer(ca: trustme.CA, server: Server, tls_version: str) -> None:
    ctx = client_context(ca, tls_version)
    ctx.check_hostname = False  # (required to send no name)
    enable_resumption(ctx)
    for _ in range(2):
        assert await exchange(server.port, ctx, "") is False
    assert server.resumed == 0
    assert resumption_stats(ctx) == ResumptionStats()
    assert resumption_cache(ctx).size() == 0


async def test_stronger_settings_drop_old_sessions(
    ca: trustme.CA, server: Server, tls_version: str
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version))
    assert await exchange(server.port, ctx) is False
    assert await exchange(server.port, ctx) is True
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # mutated after use
    assert await exchange(server.port, ctx) is False
    stats = resumption_stats(ctx)
    assert stats.stale_dropped >= 1 and stats.misses == 2, stats
    assert await exchange(server.port, ctx) is True  # the new settings' own session
    assert server.resumed == 2


async def test_server_names_are_normalized(
    ca: trustme.CA, server: Server, tls_version: str
) -> None:
    assert normalize_server_name(b"LocalHost") == "localhost"
    assert normalize_server_name("localhost.") == "localhost"
    assert normalize_server_name("Bücher.example") == normalize_server_name(
        b"xn--bcher-kva.example"
    )
    assert normalize_server_name(None) is None
    assert normalize_server_name("") is None
    assert normalize_server_name(b"\xff") is None
    ctx = enable_resumption(client_context(ca, tls_version))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    bytes_named = ctx.wrap_bio(incoming, outgoing, server_hostname=b"localhost")
    assert bytes_named.server_hostname == NAME
    assert await exchange(server.port, ctx, "LOCALHOST") is False
    assert await exchange(server.port, ctx, NAME) is True


async def test_session_of_another_server_is_rejected_and_dropped(
    ca: trustme.CA, cert: trustme.LeafCert, server: Server, tls_version: str
) -> None:
    # The key has no port: another server with the same name (other ticket keys) is offered
    # the session, refuses it, and the session is dropped. Lost resumptions, never an error.
    ctx = enable_resumption(client_context(ca, tls_version))
    assert await exchange(server.port, ctx) is False
    async with running_server(server_context(cert, tls_version)) as other:
        assert await exchange(other.port, ctx) is False
        assert other.resumed == 0
    stats = resumption_stats(ctx)
    assert stats.rejected == 1 and stats.hits == 1, stats


async def test_enable_is_idempotent_and_disable_restores(
    ca: trustme.CA, server: Server, tls_version: str
) -> None:
    ctx = client_context(ca, tls_version)
    verify = (ctx.verify_mode, ctx.check_hostname, ctx.options, ctx.verify_flags)
    assert enable_resumption(ctx) is ctx
    classes = (ctx.sslobject_class, ctx.sslsocket_class)
    assert await exchange(server.port, ctx) is False
    assert enable_resumption(ctx) is ctx  # the same state: stats and sessions kept
    assert (ctx.sslobject_class, ctx.sslsocket_class) == classes
    assert resumption_stats(ctx).full == 1
    assert await exchange(server.port, ctx) is True
    assert (ctx.verify_mode, ctx.check_hostname, ctx.options, ctx.verify_flags) == verify
    other_cache = MemorySessionCache()
    enable_resumption(ctx, session_cache=other_cache)  # replaced only when asked
    assert resumption_cache(ctx) is other_cache
    assert await exchange(server.port, ctx) is False
    disable_resumption(ctx)
    assert (ctx.sslobject_class, ctx.sslsocket_class) == (ssl.SSLObject, ssl.SSLSocket)
    with pytest.raises(ValueError, match="not enabled"):
        resumption_stats(ctx)
    assert other_cache.size() >= 1
    assert await exchange(server.port, ctx) is False  # nothing offered any more
    disable_resumption(ctx)  # (again: nothing)


def test_custom_classes_are_kept_and_restored(ca: trustme.CA) -> None:
    class Mine(ssl.SSLObject):
        pass

    ctx = client_context(ca)
    ctx.sslobject_class = Mine
    enable_resumption(ctx)
    assert issubclass(ctx.sslobject_class, Mine) and ctx.sslobject_class is not Mine
    disable_resumption(ctx)
    assert ctx.sslobject_class is Mine


def test_refused_arguments(ca: trustme.CA) -> None:
    class Remote(SessionCache):
        get = put = invalidate = clear = None  # type: ignore[assignment]
        size = None  # type: ignore[assignment]

    ctx = client_context(ca)
    with pytest.raises(TypeError, match="synchronous TLS calls"):
        enable_resumption(ctx, session_cache=Remote())
    with pytest.raises(TypeError):
        enable_resumption(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_engine"):
        enable_resumption(ctx, session_engine="fast")
    with pytest.raises(ValueError, match="client"):
        enable_resumption(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert ctx.sslobject_class is ssl.SSLObject


def test_a_pool_refuses_a_context_that_resumes_by_itself(ca) -> None:
    ctx = enable_resumption(client_context(ca))
    with pytest.raises(ValueError, match="enable_resumption"):
        Pool(ctx)
    disable_resumption(ctx)
    Pool(ctx)  # a plain context again
