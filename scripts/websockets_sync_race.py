"""websockets' sync client on TLS 1.3: how often does an opening handshake hang or fail?

The sync client reads in a thread of its own while the calling thread writes, on one SSL
connection (OpenSSL does not support that). A ticket processed inside the reader's SSL_read can
meet the writer's SSL_write; then the write hangs, or SSL reports "unexpected message". This
counts such failures with a plain context (``plain``) or one made resuming (``resume``), so the
two can be compared (the test: tests/pool/test_enable_resumption_libraries.py).

Usage: ``.venv/bin/python scripts/websockets_sync_race.py plain|resume [TRIALS]``
(each trial: 2 connections to a local websockets server; servers on 127.0.0.1 only).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
from typing import Any

import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from aiotlspool import enable_resumption


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    if mode not in ("plain", "resume"):
        raise SystemExit("usage: websockets_sync_race.py plain|resume [TRIALS]")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def handler(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    async def start() -> Any:
        return await serve(handler, "127.0.0.1", 0, ssl=server_ctx)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    failures = 0
    for _ in range(trials):
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        if mode == "resume":
            enable_resumption(ctx)
        for _ in range(2):
            try:
                uri = f"wss://localhost:{port}/"
                with connect(uri, ssl=ctx, open_timeout=3, close_timeout=2, proxy=None) as ws:
                    ws.send("ping")
                    ws.recv(timeout=5)
            except (TimeoutError, OSError, WebSocketException) as exc:
                failures += 1
                print(f"failed: {exc!r}", flush=True)
    print(f"{mode}: {failures} of {2 * trials} connections hung or failed")


if __name__ == "__main__":
    main()
