"""enable_resumption with a store other than the default: a FileSessionCache, whose sessions
outlive the process (a short-lived CLI's first connection resumes), and a store that fails
(a miss, never a failed handshake)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trustme

from aiotlspool import (
    CachedSession,
    FileSessionCache,
    MemorySessionCache,
    SessionKey,
    enable_resumption,
    resumption_stats,
)

from ..support.servers import Server, ThreadServer, client_context, echo, server_context
from .test_enable_resumption import assert_adds_up, exchange

# A sync client, as a short-lived command would be: one connection, then the process ends.
_CLIENT = textwrap.dedent(
    """
    import socket, ssl, sys
    from aiotlspool import FileSessionCache, enable_resumption, resumption_stats
    cafile, directory, secret, port, version = sys.argv[1:6]
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
    store = FileSessionCache(directory, secret=bytes.fromhex(secret))
    enable_resumption(ctx, session_cache=store, session_engine="native")
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            assert tls.recv(4) == b"ping"
            reused = tls.session_reused
    print(reused, resumption_stats(ctx).stored)
    """
)


def test_a_restarted_process_resumes_on_its_first_connection(
    ca: trustme.CA, cert: trustme.LeafCert, tls_version: str, tmp_path: Path
) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    secret = secrets.token_bytes(32).hex()
    with ThreadServer(echo, server_context(cert, tls_version)) as srv:
        outputs = []
        for _ in range(3):  # three runs of the "command", each a new process
            args = [str(cafile), str(tmp_path / "sessions"), secret, str(srv.port), tls_version]
            done = subprocess.run(
                [sys.executable, "-c", _CLIENT, *args], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout.split())
        assert [reused for reused, _ in outputs] == ["False", "True", "True"]
        stored = [int(count) for _, count in outputs]
        if tls_version == "TLSv1.3":  # single-use tickets: each run leaves a new one behind
            assert all(count >= 1 for count in stored), stored
        else:  # one reusable session, stored by the first run
            assert stored[0] == 1 and stored[1:] == [0, 0], stored
        assert (srv.handshakes, srv.resumed) == (3, 2)


async def test_a_file_store_serves_another_context_with_the_same_settings(
    ca: trustme.CA, server: Server, tls_version: str, tmp_path: Path
) -> None:
    secret = secrets.token_bytes(32)
    first = enable_resumption(
        client_context(ca, tls_version),
        session_cache=FileSessionCache(tmp_path / "s", secret=secret),
        session_engine="native",
    )
    assert await exchange(server.port, first) is False
    second = enable_resumption(
        client_context(ca, tls_version),
        session_cache=FileSessionCache(tmp_path / "s", secret=secret),
        session_engine="native",
    )
    assert await exchange(server.port, second) is True
    assert server.resumed == 1
    # Other settings never find them (the key holds the verification fingerprint).
    other = client_context(ca, tls_version)
    other.verify_flags |= 0x80000  # X509_V_FLAG_PARTIAL_CHAIN: other verification settings
    enable_resumption(
        other,
        session_cache=FileSessionCache(tmp_path / "s", secret=secret),
        session_engine="native",
    )
    assert await exchange(server.port, other) is False


class BrokenStore(MemorySessionCache):
    """Every call raises, as a store on a failing disk would."""

    def get_nowait(self, key: SessionKey) -> CachedSession | None:
        raise OSError("disk gone")

    def put_nowait(self, key: SessionKey, session: CachedSession) -> None:
        raise OSError("disk gone")


async def test_a_failing_store_costs_resumptions_not_handshakes(
    ca: trustme.CA, server: Server, tls_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = enable_resumption(client_context(ca, tls_version), session_cache=BrokenStore())
    results = [await exchange(server.port, ctx) for _ in range(3)]
    assert results == [False, False, False]
    stats = resumption_stats(ctx)
    assert_adds_up(stats, connections=3)
    assert stats.store_errors >= 3 and stats.stored == 0, stats
    warnings = [r for r in caplog.records if "BrokenStore" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_stores_that_cannot_answer_inside_tls_calls_are_refused(ca: trustme.CA) -> None:
    from aiotlspool import SessionCache

    class AsyncOnly(SessionCache):
        async def get(self, key: SessionKey) -> CachedSession | None:
            return None

        async def put(self, key: SessionKey, session: CachedSession) -> None:
            pass

        async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
            pass

        async def clear(self) -> None:
            pass

        def size(self) -> int:
            return 0

    with pytest.raises(TypeError, match="AsyncOnly"):
        enable_resumption(client_context(ca), session_cache=AsyncOnly())
