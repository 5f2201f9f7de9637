"""The non-blocking SSL calls of the socket transport, and what each outcome means.

``SSL_read`` (:func:`read_records`) returns the plaintext of one record at most. It stops:

- for more bytes from the socket (``SSLWantReadError``): the selector wakes us again;
- for a write first (``SSLWantWriteError``: a record it must send, e.g. a key update);
- at the peer's close_notify (``b""`` or ``SSLZeroReturnError``): a clean end of the stream;
- at a TCP end without close_notify (``SSLEOFError``, with ``suppress_ragged_eofs`` off),
  which asyncio's ``sslproto`` also reports to the protocol as an EOF;
- at an error (an alert, a reset): the connection is lost with it. ``_ssl`` reports a reset
  (``ECONNRESET``) as ``SSLEOFError`` too, where asyncio's socket transport raises
  ``ConnectionResetError``: :func:`reset_error` tells them apart where the kernel says.

At most :data:`READ_LIMIT` bytes are read per call, so one fast peer cannot hold the loop.
``SSL_shutdown`` (:func:`shutdown_step`) sends close_notify, then waits for the peer's.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from typing import Any

READ, WRITE = 1, 2  # what a blocked SSL call waits for
AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
READ_SIZE = 16 * 1024  # the plaintext of one TLS record at most
READ_LIMIT = 256 * 1024  # per readiness callback (asyncio's sslproto reads 256 KiB at a time)
_TCP_CLOSE = 7  # Linux's TCP_CLOSE: the connection was reset (a FIN leaves CLOSE_WAIT)


def wants(exc: BaseException) -> int:
    """What the SSL call that raised ``exc`` (one of :data:`AGAIN`) waits for."""
    return READ if isinstance(exc, ssl.SSLWantReadError) else WRITE


class Reading:
    """What one :func:`read_records` call got."""

    __slots__ = ("chunks", "eof", "error", "more", "size", "wants_write")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []  # the plaintext (when read without a buffer)
        self.size = 0  # bytes read, kept or not
        self.eof: bool | None = None  # True: close_notify; False: TCP end without it
        self.error: BaseException | None = None
        self.wants_write = False  # SSL_read must write before it can go on
        self.more = False  # stopped at the limit with decrypted bytes still in OpenSSL

    def data(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_records(sock: ssl.SSLSocket, into: memoryview | None, *, keep: bool) -> Reading:
    """Read what ``sock`` has, into ``into`` (filled from its start) or as bytes chunks (kept
    only if ``keep``: a closing transport drains and drops what still comes)."""
    reading = Reading()
    limit = READ_LIMIT if into is None else len(into)
    if not limit:
        reading.error = RuntimeError("get_buffer() returned an empty buffer")
    size = 0
    try:
        while size < limit:
            if into is None:
                data = sock.read(READ_SIZE)
                count = len(data)
                if count and keep:
                    reading.chunks.append(data)
            else:
                count = sock.recv_into(into[size:], limit - size)
            if not count:
                reading.eof = True
                break
            size += count
            if count < READ_SIZE and not sock.pending():
                # The record is used up; another one still in the socket wakes the selector
                # again (it is level-triggered), so spare SSL_read's costly SSLWantReadError.
                break
        else:
            # Bytes OpenSSL holds already decrypted never wake the selector.
            reading.more = sock.pending() > 0
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLWantWriteError:
        reading.wants_write = True
    except ssl.SSLZeroReturnError:
        reading.eof = True
    except ssl.SSLEOFError as exc:
        reading.error = reset_error(sock, exc)
        if reading.error is None:
            reading.eof = False
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        reading.error = exc
    reading.size = size
    return reading


def reset_error(sock: socket.socket, exc: ssl.SSLError) -> ConnectionResetError | None:
    """For an ``SSLEOFError``: a ``ConnectionResetError`` if the peer reset the connection,
    else None (an EOF without close_notify).

    A reset is a failed ``recv``, which OpenSSL reports with no reason of its own, on a socket
    the kernel has closed (Linux ``TCP_INFO``). An EOF carries OpenSSL 3's reason
    ``UNEXPECTED_EOF_WHILE_READING``, and the alert OpenSSL then sends may well be answered
    with a reset, so the kernel's state alone would mislead.
    """
    option = getattr(socket, "TCP_INFO", None)
    if option is None or exc.reason is not None:
        return None
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, option, 1)[0]
    except (OSError, IndexError):
        return None
    if state != _TCP_CLOSE:
        return None
    return ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))


def shutdown_step(sock: ssl.SSLSocket) -> int:
    """One step of the close_notify exchange: 0 once done, else what it waits for.

    A TCP end without the peer's close_notify is a clean end too, as ``sslproto`` sees it;
    a reset raises ``ConnectionResetError``. ``SSLSocket.unwrap()`` would also drop the TLS
    state, which is wanted until the socket closes (``SSLObject.unwrap`` keeps it), so the
    shutdown is called on ``_sslobj`` unless a subclass has an ``unwrap`` of its own.
    """
    ssl_object: Any = getattr(sock, "_sslobj", None)
    try:
        if type(sock).unwrap is ssl.SSLSocket.unwrap and ssl_object is not None:
            ssl_object.shutdown()
        else:
            sock.unwrap()
    except AGAIN as exc:
        return wants(exc)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        if (reset := reset_error(sock, exc)) is not None:
            raise reset from exc
    return 0
