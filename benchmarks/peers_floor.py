"""``lean``: the pool's TLS work in the least Python, a reference for the ``peers`` section.

What a request through ``Pool(session_engine="native")`` does on the wire, with nothing else:
a non-blocking socket, ``SSLContext.wrap_socket``, the native engine's ``offer`` (the newest
kept session; a TLS 1.3 ticket once) and ``watch`` (every session the server sends, kept, up
to 8), the handshake, the request and the whole response (status, Content-Length, body
checked) and close_notify sent at the end (the server's read if it is already there, not
waited for, as libcurl does). One callback drives it all, the socket registered for one
direction at a time; no streams, no transport object, no timers, no pool bookkeeping. The
distance between ``pool-native`` and ``lean`` is what the pool's layers cost; between ``lean``
and ``curl_cffi``, what Python, asyncio and OpenSSL 3.0 cost against libcurl on BoringSSL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from .certs import HOST
from .clients import Target, Unavailable
from .peers import BODY, LEAN, PeerClient, request_bytes

TICKETS = 8


def _complete(buffer: bytes) -> bytes | None:
    """The body once the whole response is in ``buffer``, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end]
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {head[:40]!r}")
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError("response without Content-Length")
    line_end = head.find(b"\r\n", at + 17)
    length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
    body = buffer[end + 4 : end + 4 + length]
    return body if len(body) == length else None


class LeanPeer(PeerClient):
    name = LEAN

    def __init__(self, target: Target, tasks: int) -> None:
        super().__init__(target, tasks)
        try:
            from aiotlspool.engines.select import select_engine

            self.engine: Any = select_engine("native")
        except Exception as exc:
            raise Unavailable(f"the native session engine is unavailable here ({exc})") from None
        self.context = target.certs.client_context()
        self.sessions: deque[Any] = deque(maxlen=TICKETS)
        self.payload = request_bytes(target.port)
        self.resumed = 0

    def _wrap(self) -> ssl.SSLSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect_ex((HOST, self.target.port))  # in progress: the handshake waits
            tls = self.context.wrap_socket(
                sock, server_hostname=HOST, do_handshake_on_connect=False
            )
        except BaseException:
            sock.close()
            raise
        if self.sessions:
            session = self.sessions[-1]
            if session.single_use:
                self.sessions.pop()
            self.engine.offer(tls, session)
        self.engine.watch(tls, self.sessions.append)
        return tls

    async def request(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        tls = self._wrap()
        fd = tls.fileno()
        state: dict[str, Any] = {"sent": False, "buffer": b"", "want": None}

        def want(kind: str | None, step: Callable[[], None]) -> None:
            if state["want"] == kind:
                return
            if state["want"] == "r":
                loop.remove_reader(fd)
            elif state["want"] == "w":
                loop.remove_writer(fd)
            state["want"] = kind
            if kind == "r":
                loop.add_reader(fd, step)
            elif kind == "w":
                loop.add_writer(fd, step)

        def step() -> None:
            try:
                if not state["sent"]:
                    tls.do_handshake()
                    tls.write(self.payload)  # (a few bytes: the socket takes them at once)
                    state["sent"] = True
                while True:
                    data = tls.recv(65536)
                    if not data:
                        raise ConnectionResetError("the server closed before the response")
                    state["buffer"] += data
                    body = _complete(state["buffer"])
                    if body is not None:
                        break
                want(None, step)
                if body != BODY:
                    raise RuntimeError(f"{LEAN}: unexpected body {body[:20]!r}")
                reused = bool(tls.session_reused)
                with contextlib.suppress(ssl.SSLError, OSError):
                    tls.unwrap()  # close_notify out; the server's read if it is here already
                done.set_result(reused)
            except ssl.SSLWantReadError:
                want("r", step)
            except ssl.SSLWantWriteError:
                want("w", step)
            except Exception as exc:
                want(None, step)
                if not done.done():
                    done.set_exception(exc)

        try:
            step()
            reused = await done
        finally:
            want(None, step)
            tls.close()
        self.resumed += reused

    def resumed_client(self) -> int | None:
        return self.resumed
