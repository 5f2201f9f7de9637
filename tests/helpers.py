"""Small helpers shared by the pool tests."""

from __future__ import annotations

from aiotlspool import Connection, Pool

HOST = "127.0.0.1"
NAME = "localhost"  # the name the test certificate is valid for


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
