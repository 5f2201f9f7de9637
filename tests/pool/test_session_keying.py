"""A session is offered only to the same SSLContext, the same server name and the same port.

A resumed handshake skips certificate and host-name verification, and OpenSSL resumes a session
offered under any name. These tests use servers that *would* resume a wrongly offered session
(same server context, hence same ticket keys), so an offer under the wrong key would show up as
a resumption or as a connection that skips verification.
"""

from __future__ import annotations

import ssl

import pytest

from aiotlspool import CertificateError, MemorySessionCache, Pool, session_key
from aiotlspool.endpoint import Endpoint

from ..support.helpers import HOST, NAME, connect_once
from ..support.servers import Server, client_context, running_server, server_context, start_server


async def test_session_never_offered_to_another_server_name(client_ctx, server: Server) -> None:
    async with Pool(client_ctx) as pool:
        await connect_once(pool, server.port)
        await connect_once(pool, server.port)  # resumed: the session is cached and works
        # Same server (it would resume), another name the certificate does not cover: if the
        # session were offered, the handshake would resume and skip verification.
        for name in ("evil.example", "LOCALHOST.", "127.0.0.1"):
            with pytest.raises(CertificateError, match="did not verify"):
                await pool.acquire(HOST, server.port, server_hostname=name)
        stats = pool.stats()
    assert stats.resumed_handshakes == 1
    assert stats.cache_hits == 1  # only the second connection to "localhost" found a session


async def test_session_never_offered_to_another_port(client_ctx, cert, tls_version) -> None:
    server_ctx = server_context(cert, tls_version)  # shared ticket keys: B would resume A's
    async with running_server(server_ctx) as a:
        b = await start_server(server_ctx)
        async with Pool(client_ctx) as pool:
            await connect_once(pool, a.port)
            assert await connect_once(pool, b.port) is False
            assert pool.stats().cache_hits == 0
        # Opting in to host-only keying shares the session across ports (the test can fail).
        async with Pool(client_ctx, share_sessions_across_ports=True) as pool:
            await connect_once(pool, a.port)
            assert await connect_once(pool, b.port) is True
        await b.close()


async def test_session_never_offered_through_another_context(ca, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version, num_tickets=1)) as srv:
        shared = MemorySessionCache()
        async with Pool(client_context(ca, tls_version), session_cache=shared) as first:
            await connect_once(first, srv.port)
        assert shared.size() == 1
        # Identical settings, different object: its key differs, so no offer (and the stdlib
        # would refuse a session from another context anyway).
        async with Pool(client_context(ca, tls_version), session_cache=shared) as second:
            assert await connect_once(second, srv.port) is False
            assert second.stats().cache_hits == 0
        # A context that does not trust the server's CA must fail verification, never resume.
        untrusting = ssl.create_default_context()
        untrusting.minimum_version = untrusting.maximum_version = client_context(
            ca, tls_version
        ).maximum_version
        async with Pool(untrusting, session_cache=shared) as third:
            with pytest.raises(CertificateError):
                await third.acquire(HOST, srv.port, server_hostname=NAME)


def test_key_components(ca) -> None:
    ctx_a, ctx_b = client_context(ca), client_context(ca)
    ep = Endpoint.create("10.0.0.1", 443, "db.internal")
    key = session_key(ctx_a, ep)
    assert key == session_key(ctx_a, Endpoint.create("10.0.0.1", 443, "db.internal"))
    assert key != session_key(ctx_b, ep)
    assert key != session_key(ctx_a, Endpoint.create("10.0.0.1", 444, "db.internal"))
    assert key != session_key(ctx_a, Endpoint.create("10.0.0.1", 443, "DB.internal"))
    assert session_key(ctx_a, ep, share_across_ports=True) == session_key(
        ctx_a, Endpoint.create("10.0.0.1", 444, "db.internal"), share_across_ports=True
    )
    # Without SNI nothing binds the session to a name: it stays with the exact host, and can
    # never match a key that carries a verified name.
    no_sni = session_key(ctx_a, Endpoint.create("10.0.0.1", 443, ""))
    assert no_sni != session_key(ctx_a, Endpoint.create("10.0.0.2", 443, ""))
    assert no_sni != session_key(ctx_a, Endpoint.create("10.0.0.1", 443, "10.0.0.1"))


def test_context_numbers_are_not_reused_after_garbage_collection(ca) -> None:
    ep = Endpoint.create("127.0.0.1", 443, "localhost")
    seen = set()
    for _ in range(50):
        ctx = client_context(ca)
        seen.add(session_key(ctx, ep).context)
        del ctx  # id() values get reused; context numbers must not
    assert len(seen) == 50
