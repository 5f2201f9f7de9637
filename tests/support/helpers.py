"""Small helpers shared by the tests: the test endpoint's address and name, one round trip
through a pool, pool and cache assertions, polling, a Python child process, and the CI
strictness."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import pytest

from aiotlspool import CachedSession, Connection, Pool, SessionKey

HOST = "127.0.0.1"
NAME = "localhost"  # the name the test certificate is valid for

# In CI (CI=true) whatever the tests need must be installed: a missing piece fails, not skips.
IN_CI = os.environ.get("CI") == "true"

T = TypeVar("T")


def require_module(name: str) -> Any:
    """Import ``name`` (a test dependency); skip without it locally, fail in CI."""
    try:
        return __import__(name)
    except ImportError:
        skip_or_fail(f"{name} is not installed (pip install -e '.[test]')")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where something missing means a broken install step."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true)", pytrace=False)
    pytest.skip(reason)


# -- through a pool ---------------------------------------------------------------------------


async def roundtrip(conn: Connection, payload: bytes = b"ping") -> None:
    """One request/response on an echo server."""
    conn.writer.write(payload)
    await conn.writer.drain()
    assert await conn.reader.readexactly(len(payload)) == payload


async def connect_once(pool: Pool, port: int, *, name: str = NAME, close: bool = True) -> bool:
    """Open a connection, exchange one message, close it; return whether it resumed."""
    async with pool.connection(HOST, port, server_hostname=name) as conn:
        await roundtrip(conn)
        reused = conn.session_reused
        if close:
            await conn.aclose()
    return reused


def tls13_sessions_stored(engine: str, *, full: int, resumed: int = 0, tickets: int = 2) -> int:
    """TLS 1.3 sessions a pool stores for ``full`` full and ``resumed`` resumed handshakes.

    The native engine stores every ticket as it arrives: ``tickets`` per full handshake (2 from
    OpenSSL-based servers and Python's, the OpenSSL default) and 1 per resumption. The stdlib
    engine captures one session per connection.
    """
    if engine == "native":
        return full * tickets + resumed
    return full + resumed


def assert_no_slots_held(pool: Pool, *, idle: int | None = None) -> None:
    """Nothing in use, connecting or waiting (and ``idle`` idle connections, if given)."""
    stats = pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats
    if idle is not None:
        assert stats.idle == idle, stats


async def wait_for(
    condition: Callable[[], bool], timeout: float = 3.0, *, interval: float = 0.002
) -> None:
    """Poll ``condition`` (state of the pool or the kernel that has no event) until true."""

    async def until() -> None:
        while not condition():  # noqa: ASYNC110 - the pool offers no event for this
            await asyncio.sleep(interval)

    await asyncio.wait_for(until(), timeout)  # asyncio.timeout() needs Python 3.11


async def python_child(code: str, *args: str, timeout: float = 60) -> str:
    """Run ``code`` in a new Python process (``python -c code *args``) and return its stdout,
    asserting that it exited with 0 (its stderr is the message)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()
    return out.decode()


# Children that start as a copy of the test process (its stores, records, barriers, queues).
FORK = multiprocessing.get_context("fork")


def run_forked(workers: Sequence[Callable[[], T]], timeout: float = 30) -> list[T]:
    """Run each of ``workers`` in a forked child, all at once; return what they returned (in
    the order they finished), asserting that every child exited with 0."""
    results = FORK.Queue()

    def child(worker: Callable[[], T]) -> None:
        results.put(worker())

    children = [FORK.Process(target=child, args=(worker,)) for worker in workers]
    for process in children:
        process.start()
    outcomes: list[T] = [results.get(timeout=timeout) for _ in children]
    for process in children:
        process.join(10)
        assert process.exitcode == 0
    return outcomes


# -- session cache records ------------------------------------------------------------------


def make_session(version: str = "TLSv1.3", lifetime: float | None = 7200.0) -> CachedSession:
    """A session record around a placeholder handle (the cache never looks inside one)."""
    return CachedSession(
        handle=object(),
        engine="stdlib",
        tls_version=version,
        has_ticket=True,
        lifetime=lifetime,
        created_at=time.time(),
    )


def key(name: str = "a.test", port: int | None = 443, context: int = 1) -> SessionKey:
    return SessionKey(context=context, server_hostname=name, port=port)


def run(coro: Any) -> Any:
    """Run one of the cache's coroutines to completion, outside any test loop."""
    return asyncio.run(coro)
