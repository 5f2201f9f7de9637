"""A client and a server SSLObject wired together through memory BIOs: real TLS in one
thread, with no socket, for tests of the native binding."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from aiotlspool.engines.libssl import Libssl, NativeUnavailable
from aiotlspool.engines.libssl_load import load_libssl

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


def libssl_or_skip_module() -> Libssl:
    """The native binding; skips the calling test module where it is unavailable here (a
    statically linked _ssl, not CPython)."""
    try:
        return load_libssl()
    except NativeUnavailable as exc:
        pytest.skip(f"native binding unavailable: {exc}", allow_module_level=True)


@dataclass
class Conn:
    """A client and a server SSLObject wired together through memory BIOs."""

    client: ssl.SSLObject
    server: ssl.SSLObject
    c_in: ssl.MemoryBIO = field(repr=False)
    c_out: ssl.MemoryBIO = field(repr=False)
    s_in: ssl.MemoryBIO = field(repr=False)
    s_out: ssl.MemoryBIO = field(repr=False)

    def handshake(self) -> None:
        client_done = server_done = False
        for _ in range(10):
            if not client_done:
                client_done = _step(self.client.do_handshake)
            self.s_in.write(self.c_out.read())
            if not server_done:
                server_done = _step(self.server.do_handshake)
            self.c_in.write(self.s_out.read())
            if client_done and server_done:
                return
        raise AssertionError("handshake did not finish")

    def client_read(self) -> bytes:
        """Let the client process what the server sent (TLS 1.3 tickets, data)."""
        try:
            return self.client.read(1024)
        except ssl.SSLWantReadError:
            return b""

    def echo(self, data: bytes) -> bytes:
        """Client -> server -> client, through both SSLObjects."""
        self.client.write(data)
        self.s_in.write(self.c_out.read())
        got = self.server.read(1024)
        self.server.write(got)
        self.c_in.write(self.s_out.read())
        return self.client.read(1024)


def _step(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except ssl.SSLWantReadError:
        return False
    return True
