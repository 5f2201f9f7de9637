"""The ``SSLObject`` and ``SSLSocket`` subclasses a resuming context creates its connections with.

``SSLContext.sslobject_class`` (``wrap_bio``: asyncio, uvloop and everything on them) and
``sslsocket_class`` (``wrap_socket``: requests, urllib3, other sync code) are the public seam.
Each connection is linked (:func:`~.state.link_connection`: a session offered, the connection
watched) before its first handshake step:

- an ``SSLObject`` as soon as ``wrap_bio`` made it (nothing has been exchanged yet);
- an ``SSLSocket`` at the first ``do_handshake``, ``read``, ``write`` or ``send`` (``wrap_socket``
  may handshake inside its constructor, and ``do_handshake_on_connect=False`` leaves the first
  step to the first read or write).

After the handshake the link judges it (full, resumed, rejected); where the engine cannot watch
(the stdlib engine, and every ``SSLSocket``: see ``_aiotlspool_prepare``), it captures: TLS 1.2
right after the handshake, TLS 1.3 after the first data read (servers send tickets first) or at
``unwrap`` (``SSLObject``: after the close_notify exchange, which reads what came before it;
``SSLSocket``: before it, since unwrapping drops the connection).
Connections of a context that is not (or no longer) resuming, server-side ones and ones without a
server name are left alone.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, ClassVar

from .state import ConnectionLink, link_connection

if TYPE_CHECKING:
    import socket

    from _typeshed import ReadableBuffer, WriteableBuffer

_RETRY = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _after_handshake_error(link: ConnectionLink | None, exc: BaseException) -> None:
    if link is not None and not link.judged and not isinstance(exc, _RETRY):
        link.failed()


def _after_io(link: ConnectionLink | None, ssl_object: Any, got_data: bool) -> None:
    """After a read or write returned: the handshake is done; data means tickets came first."""
    if link is None:
        return
    if not link.judged:
        link.judge(ssl_object)
    if got_data and link.capture_pending:
        link.capture(ssl_object)


class ResumingSSLObject(ssl.SSLObject):
    """An ``SSLObject`` that resumes sessions of its context (see the module docstring)."""

    _aiotlspool_link: ClassVar[ConnectionLink | None] = None

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        # The standard library's constructor (wrap_bio passes server_hostname and session by
        # keyword); nothing has been exchanged when it returns.
        ssl_object = getattr(super(), "_create")(*args, **kwargs)  # noqa: B009
        if isinstance(ssl_object, ResumingSSLObject):
            link = link_connection(ssl_object, kwargs.get("server_hostname"), kwargs.get("session"))
            ssl_object.__dict__["_aiotlspool_link"] = link
        return ssl_object

    def do_handshake(self) -> None:
        link = self._aiotlspool_link
        try:
            super().do_handshake()
        except BaseException as exc:
            _after_handshake_error(link, exc)
            raise
        if link is not None and not link.judged:
            link.judge(self)

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        data = super().read(len, buffer)
        link = self._aiotlspool_link
        if link is not None and (not link.judged or link.capture_pending):
            _after_io(link, self, bool(data))
        return data

    def write(self, data: ReadableBuffer) -> int:
        written = super().write(data)
        link = self._aiotlspool_link
        if link is not None and not link.judged:
            _after_io(link, self, False)
        return written

    def unwrap(self) -> None:
        super().unwrap()
        link = self._aiotlspool_link
        if link is not None and link.capture_pending:
            link.capture(self)


class ResumingSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that resumes sessions of its context (see the module docstring)."""

    _aiotlspool_link: ClassVar[ConnectionLink | None] = None
    _aiotlspool_seen: ClassVar[bool] = False

    def _aiotlspool_prepare(self) -> ConnectionLink | None:
        """Link the connection once, before its first handshake step (when it has one)."""
        if not self._aiotlspool_seen and getattr(self, "_sslobj", None) is not None:
            self.__dict__["_aiotlspool_seen"] = True
            # server_hostname: wrap_socket's argument as _create stored it (encoded);
            # _session: the session= the caller passed, if any.
            # Never watched: a socket may be read in one thread while another writes (the
            # websockets sync client does). OpenSSL runs the new-session callback inside
            # SSL_read with the post-handshake message half processed; the callback waits for
            # the GIL, the writing thread's SSL_write sees the connection "in init" and enters
            # the handshake state machine itself, and the write hangs. Captured after reads
            # instead, as the stdlib engine does.
            link = link_connection(
                self,  # type: ignore[arg-type]  # the engines only use what both classes have
                self.server_hostname,
                getattr(self, "_session", None),
                watch=False,
            )
            self.__dict__["_aiotlspool_link"] = link
        return self._aiotlspool_link

    def do_handshake(self, block: bool = False) -> None:
        link = self._aiotlspool_prepare()
        try:
            super().do_handshake(block)
        except BaseException as exc:
            _after_handshake_error(link, exc)
            raise
        if link is not None and not link.judged:
            link.judge(self)  # type: ignore[arg-type]

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        link = self._aiotlspool_prepare()
        data = super().read(len, buffer)
        if link is not None and (not link.judged or link.capture_pending):
            _after_io(link, self, bool(data))
        return data

    def write(self, data: ReadableBuffer) -> int:
        link = self._aiotlspool_prepare()
        written = super().write(data)
        if link is not None and not link.judged:
            _after_io(link, self, False)
        return written

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        link = self._aiotlspool_prepare()
        sent = super().send(data, flags)
        if link is not None and not link.judged and self._sslobj is not None:  # type: ignore[attr-defined]
            _after_io(link, self, False)
        return sent

    def unwrap(self) -> socket.socket:
        link = self._aiotlspool_link
        if link is not None and link.capture_pending:
            # SSLSocket.unwrap drops the connection with the shutdown: capture what has been
            # read so far (tickets come before data; none read yet means none to capture).
            link.capture(self)  # type: ignore[arg-type]
        return super().unwrap()


def resuming_class(previous: type[Any], base: type[Any]) -> type[Any]:
    """``base`` itself, or ``base`` combined with a custom class the context had already."""
    if issubclass(previous, base):
        return previous
    if previous in (ssl.SSLObject, ssl.SSLSocket):
        return base
    return type(f"Resuming{previous.__name__}", (base, previous), {})
