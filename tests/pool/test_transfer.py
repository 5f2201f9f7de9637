"""Exported sessions are bound to server name, port and verification settings; an import
refuses - never offers - a session whose binding differs."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import textwrap

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotlspool import Pool

from ..support.helpers import HOST, NAME, connect_once, python_child
from ..support.servers import client_context, running_server, server_context

SESSION_ENGINES = ["native"]


async def exported(ctx: ssl.SSLContext, port: int, name: str = NAME) -> bytes:
    async with Pool(ctx, session_engine="native") as pool:
        await connect_once(pool, port, name=name)
        data = await pool.export_session(HOST, port, server_hostname=name)
    assert data is not None
    return data


async def test_export_then_import_resumes_in_a_new_pool(ca, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        data = await exported(client_context(ca, tls_version), srv.port)
        assert b"BEGIN" not in data and len(data) < 8192
        # Another context object with the same settings: the binding matches.
        async with Pool(client_context(ca, tls_version), session_engine="native") as pool:
            await pool.import_session(data, HOST, srv.port, server_hostname=NAME)
            assert await connect_once(pool, srv.port) is True


async def test_import_in_another_process_resumes(ca, cert, tls_version, tmp_path) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        session_file = tmp_path / "session.json"
        session_file.write_bytes(await exported(client_context(ca, tls_version), srv.port))
        child = textwrap.dedent(
            f"""
            import asyncio, ssl
            from aiotlspool import Pool
            async def main():
                ctx = ssl.create_default_context()  # as the exporting side built it
                ctx.load_verify_locations(cafile={str(ca_file)!r})
                version = ssl.TLSVersion.{tls_version.replace(".", "_")}
                ctx.minimum_version = ctx.maximum_version = version
                async with Pool(ctx, session_engine="native") as pool:
                    data = open({str(session_file)!r}, "rb").read()
                    await pool.import_session(
                        data, "127.0.0.1", {srv.port}, server_hostname="localhost"
                    )
                    conn = await pool.acquire("127.0.0.1", {srv.port}, server_hostname="localhost")
                    print("reused", conn.session_reused)
                    await conn.aclose()
            asyncio.run(main())
            """
        )
        out = await python_child(child)
        assert out.strip() == "reused True"


def _variants(ca: trustme.CA, tls_version: str) -> dict[str, ssl.SSLContext]:
    """Contexts that differ from client_context(ca, tls_version) in one verification setting."""
    no_verify = client_context(ca, tls_version)
    no_verify.check_hostname = False
    no_verify.verify_mode = ssl.CERT_NONE
    no_hostname = client_context(ca, tls_version)
    no_hostname.check_hostname = False
    more_cas = client_context(ca, tls_version)
    trustme.CA().configure_trust(more_cas)
    with_client_cert = client_context(ca, tls_version)
    ca.issue_cert("client.test").configure_cert(with_client_cert)
    other_range = client_context(ca, tls_version)
    other_range.minimum_version = ssl.TLSVersion.TLSv1_2
    other_range.maximum_version = ssl.TLSVersion.TLSv1_3
    strict = client_context(ca, tls_version)
    strict.verify_flags |= ssl.VERIFY_X509_STRICT ^ (strict.verify_flags & ssl.VERIFY_X509_STRICT)
    strict.verify_flags ^= ssl.VERIFY_X509_PARTIAL_CHAIN
    return {
        "CERT_NONE": no_verify,
        "no hostname check": no_hostname,
        "another CA trusted": more_cas,
        "client certificate": with_client_cert,
        "protocol range": other_range,
        "verify flags": strict,
    }


async def test_import_refuses_other_verification_settings(ca, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        for label, ctx in _variants(ca, tls_version).items():
            # Exported under the variant, imported under the default: refused...
            data = await exported(ctx, srv.port)
            async with Pool(client_context(ca, tls_version), session_engine="native") as pool:
                with pytest.raises(ValueError, match="other verification settings"):
                    await pool.import_session(data, HOST, srv.port, server_hostname=NAME)
                assert pool.stats().cache_size == 0, label
            # ...and the other way round.
            data = await exported(client_context(ca, tls_version), srv.port)
            async with Pool(ctx, session_engine="native") as pool:
                with pytest.raises(ValueError, match="other verification settings"):
                    await pool.import_session(data, HOST, srv.port, server_hostname=NAME)


async def test_import_refuses_other_name_or_port(ca, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        data = await exported(client_context(ca, tls_version), srv.port)
        async with Pool(client_context(ca, tls_version), session_engine="native") as pool:
            with pytest.raises(ValueError, match="server_hostname='localhost'"):
                await pool.import_session(data, HOST, srv.port, server_hostname="evil.example")
            with pytest.raises(ValueError, match=f"port={srv.port}"):
                await pool.import_session(data, HOST, srv.port + 1, server_hostname=NAME)
            assert pool.stats().cache_size == 0


async def test_import_refuses_edited_envelope(ca, cert, tls_version) -> None:
    async with running_server(server_context(cert, tls_version)) as srv:
        data = await exported(client_context(ca, tls_version), srv.port)
        envelope = json.loads(data)
        async with Pool(client_context(ca, tls_version), session_engine="native") as pool:
            other_version = "TLSv1.2" if tls_version == "TLSv1.3" else "TLSv1.3"
            with pytest.raises(ValueError, match="protocol does not match"):
                await pool.import_session(
                    json.dumps(dict(envelope, tls_version=other_version)).encode(),
                    HOST,
                    srv.port,
                    server_hostname=NAME,
                )
            der = base64.b64decode(envelope["der"])
            for broken in (der[: len(der) // 2], der + b"\0", b"\x30\x03\x02\x01\x01"):
                edited = dict(envelope, der=base64.b64encode(broken).decode())
                with pytest.raises(ValueError, match=r"DER|verification"):
                    await pool.import_session(
                        json.dumps(edited).encode(), HOST, srv.port, server_hostname=NAME
                    )
            assert pool.stats().cache_size == 0


async def test_export_needs_native_engine_and_a_session(ca, cert) -> None:
    async with Pool(client_context(ca), session_engine="stdlib") as pool:
        with pytest.raises(RuntimeError, match="native session engine"):
            await pool.export_session(HOST, 443)
        with pytest.raises(RuntimeError, match="native session engine"):
            await pool.import_session(b"{}", HOST, 443)
    async with Pool(client_context(ca), session_engine="native") as pool:
        assert await pool.export_session(HOST, 443) is None


async def test_exported_tls13_ticket_leaves_the_cache(ca, cert) -> None:
    async with (
        running_server(server_context(cert, "TLSv1.3", num_tickets=1)) as srv,
        Pool(client_context(ca, "TLSv1.3"), session_engine="native") as pool,
    ):
        await connect_once(pool, srv.port)
        assert await pool.export_session(HOST, srv.port, server_hostname=NAME) is not None
        assert await pool.export_session(HOST, srv.port, server_hostname=NAME) is None


@pytest.fixture(scope="module")
def native_pool_context(ca: trustme.CA) -> ssl.SSLContext:
    return client_context(ca)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=512).map(str.encode),
        st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8).map(
            lambda d: json.dumps(dict(d, format="aiotlspool-session", version=1)).encode()
        ),
        st.binary(min_size=1, max_size=1500).map(
            lambda der: json.dumps(
                {
                    "format": "aiotlspool-session",
                    "version": 1,
                    "server_hostname": NAME,
                    "port": 443,
                    "tls_version": "TLSv1.3",
                    "verification": "x",
                    "der": base64.b64encode(der).decode(),
                }
            ).encode()
        ),
    )
)
def test_garbage_import_is_a_clean_value_error(native_pool_context, data: bytes) -> None:
    async def attempt() -> None:
        async with Pool(native_pool_context, session_engine="native") as pool:
            with pytest.raises(ValueError):  # noqa: PT011 - any clear refusal will do
                await pool.import_session(data, HOST, 443, server_hostname=NAME)

    asyncio.run(attempt())


def test_oversized_import_is_refused(native_pool_context) -> None:
    async def attempt() -> None:
        async with Pool(native_pool_context, session_engine="native") as pool:
            with pytest.raises(ValueError, match="larger than"):
                await pool.import_session(b"{" * (200 * 1024), HOST, 443)

    asyncio.run(attempt())
