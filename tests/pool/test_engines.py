"""Choosing the session engine, and the fallback when the native self-check fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from aiotlspool import Pool
from aiotlspool.engines.libssl_load import load_libssl

from ..support.helpers import connect_once


def test_auto_picks_native_engine_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOTLSPOOL_SESSION_ENGINE", raising=False)
    load_libssl()  # fails the test, with the reason, if the native engine is unavailable
    assert Pool().session_engine == "native"
    assert Pool(session_engine="stdlib").session_engine == "stdlib"
    assert Pool(session_engine="native").session_engine == "native"


def test_unknown_engine_name() -> None:
    with pytest.raises(ValueError, match="session_engine must be"):
        Pool(session_engine="fast")


def _run_with_broken_self_check(code: str) -> subprocess.CompletedProcess[str]:
    # A memory map that lists no libraries: the binding cannot prove where OpenSSL lives and
    # must refuse, as on a statically linked build. Run in a fresh interpreter because the
    # self-check runs once per process.
    script = textwrap.dedent(
        """
        import logging, sys, tempfile
        import aiotlspool.engines.libssl_load as native
        empty = tempfile.NamedTemporaryFile(delete=False)
        native._MAPS_PATH = empty.name
        logging.basicConfig(
            level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s"
        )
        from aiotlspool import Pool
        """
    ) + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k != "AIOTLSPOOL_SESSION_ENGINE"}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )


def test_auto_falls_back_to_stdlib_when_self_check_fails() -> None:
    result = _run_with_broken_self_check(
        """
        print("engine", Pool().session_engine)
        print("engine", Pool().session_engine)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.count("engine stdlib") == 2
    fallback = [line for line in lines if line.startswith("INFO native session engine")]
    assert len(fallback) == 1, lines  # said once, at INFO, with the reason
    assert "unavailable" in fallback[0] and "mapped" in fallback[0]


def test_native_engine_where_unavailable_is_a_clear_error() -> None:
    result = _run_with_broken_self_check(
        """
        try:
            Pool(session_engine="native")
        except RuntimeError as exc:
            print("error:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "error: the native session engine is unavailable:" in result.stdout


async def test_engine_in_use_matches_request(client_ctx, server, session_engine: str) -> None:
    async with Pool(client_ctx) as pool:
        assert pool.session_engine == session_engine
        await connect_once(pool, server.port)
        assert await connect_once(pool, server.port) is True
