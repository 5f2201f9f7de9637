"""A pool with a FileSessionCache, against real TLS servers: sessions survive the process and
resume in another one; what must not be stored is not; a failing store never fails a connect."""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path

import trustme

from aiotlspool import FileSessionCache, Pool

from ..support.helpers import connect_once, python_child
from ..support.servers import client_context, running_server, server_context

SESSION_ENGINES = ["native"]


async def test_sessions_survive_the_process_and_resume_in_another(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str, tmp_path: Path
) -> None:
    directory, secret = tmp_path / "sessions", secrets.token_bytes(32)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with running_server(server_context(cert, tls_version)) as srv:
        store = FileSessionCache(directory, secret=secret)
        async with Pool(client_context(ca, tls_version), session_cache=store) as pool:
            assert await connect_once(pool, srv.port) is False
        assert store.size() >= 1
        child = textwrap.dedent(
            f"""
            import asyncio, ssl
            from aiotlspool import FileSessionCache, Pool
            async def main():
                ctx = ssl.create_default_context()  # the same settings, another process
                ctx.load_verify_locations(cafile={str(ca_file)!r})
                version = ssl.TLSVersion.{tls_version.replace(".", "_")}
                ctx.minimum_version = ctx.maximum_version = version
                store = FileSessionCache({str(directory)!r}, secret={secret!r})
                async with Pool(ctx, session_engine="native", session_cache=store) as pool:
                    conn = await pool.acquire("127.0.0.1", {srv.port}, server_hostname="localhost")
                    print("reused", conn.session_reused, store.rejected_entries)
                    await conn.aclose()
            asyncio.run(main())
            """
        )
        out = await python_child(child)
        assert out.split() == ["reused", "True", "0"]
        assert srv.resumed == 1  # the server agrees


async def test_a_new_pool_on_the_same_directory_resumes_first_time(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str, tmp_path: Path
) -> None:
    secret = secrets.token_bytes(32)
    async with running_server(server_context(cert, tls_version)) as srv:
        for expected in (False, True):
            store = FileSessionCache(tmp_path / "sessions", secret=secret)
            async with Pool(client_context(ca, tls_version), session_cache=store) as pool:
                assert await connect_once(pool, srv.port) is expected


async def test_a_stdlib_engine_pool_stores_nothing_and_still_connects(
    ca: trustme.CA, cert: trustme.LeafCert, tmp_path: Path
) -> None:
    store = FileSessionCache(tmp_path / "sessions", secret=secrets.token_bytes(32))
    async with (
        running_server(server_context(cert, "TLSv1.2")) as srv,
        Pool(client_context(ca, "TLSv1.2"), session_engine="stdlib", session_cache=store) as pool,
    ):
        assert await connect_once(pool, srv.port) is False
        assert await connect_once(pool, srv.port) is False
    assert store.size() == 0 and store.skipped_puts >= 1


async def test_client_certificate_sessions_stay_out_of_files_unless_asked(
    ca: trustme.CA, cert: trustme.LeafCert, tmp_path: Path
) -> None:
    with_cert = client_context(ca, "TLSv1.2")
    ca.issue_cert("client.test").configure_cert(with_cert)
    async with running_server(server_context(cert, "TLSv1.2")) as srv:
        store = FileSessionCache(tmp_path / "default", secret=secrets.token_bytes(32))
        async with Pool(with_cert, session_cache=store) as pool:
            await connect_once(pool, srv.port)
            assert await connect_once(pool, srv.port) is False
        assert store.size() == 0 and store.skipped_puts >= 1
        asked = FileSessionCache(
            tmp_path / "asked",
            secret=secrets.token_bytes(32),
            store_client_certificate_sessions=True,
        )
        async with Pool(with_cert, session_cache=asked) as pool:
            await connect_once(pool, srv.port)
            assert await connect_once(pool, srv.port) is True
        assert asked.size() == 1


async def test_a_broken_store_never_fails_a_connect(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str, tmp_path: Path
) -> None:
    directory = tmp_path / "sessions"
    store = FileSessionCache(directory, secret=secrets.token_bytes(32))
    async with running_server(server_context(cert, tls_version)) as srv:
        async with Pool(client_context(ca, tls_version), session_cache=store) as pool:
            assert await connect_once(pool, srv.port) is False
            for key_dir in directory.iterdir():  # every key directory becomes a plain file
                if key_dir.is_dir():
                    for entry in key_dir.iterdir():
                        entry.unlink()
                    key_dir.rmdir()
                    key_dir.write_bytes(b"")
            assert await connect_once(pool, srv.port) is False
            assert await connect_once(pool, srv.port) is False
        assert store.failed_operations >= 1
