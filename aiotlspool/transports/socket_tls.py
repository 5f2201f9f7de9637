"""An asyncio transport running TLS on a non-blocking ``ssl.SSLSocket``.

asyncio's ``sslproto`` runs OpenSSL over memory BIOs, copies every byte between them and a
socket transport, and takes ~11 loop iterations per resumed connect (read 1 byte, close) where
this takes ~6. Here OpenSSL reads and writes the socket itself; ``add_reader``/``add_writer``
wake us.
Where a protocol could tell the difference, ``sslproto`` is followed:

- reading is eager (TLS 1.3 tickets arrive without the application reading); one readiness
  callback's reads (:mod:`.ssl_calls`) go to ``data_received`` at once (or ``buffer_updated``);
- the peer's close_notify: ``eof_received()``, then a close answering it; a TCP end without
  it (``SSLEOFError``): ``eof_received()``, then ``connection_lost(None)``;
- ``close()`` flushes, exchanges close_notify, calls ``eof_received()``, then
  ``connection_lost(None)`` - within ``shutdown_timeout``, else ``connection_lost(TimeoutError)``;
  nothing is delivered after ``close()``; ``write_eof()`` raises ``NotImplementedError``;
- write flow control counts what ``SSL_write`` has not taken (:mod:`.write_buffer`);
- the TLS state outlives the connection as an SSLObject's does, up to ``before_close``: an
  ``SSLSocket`` forgets it when closed (and must not be used after: its fd number is reused).

``SSL_read`` may have to write first (a key update), ``SSL_write`` read first (a
renegotiation): each blocked call records what it waits for; ``_update_interest`` registers it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import Callable
from typing import Any

from .ssl_calls import AGAIN, READ, WRITE, read_records, shutdown_step, wants
from .write_buffer import WriteBuffer

logger = logging.getLogger("aiotlspool")

SHUTDOWN_TIMEOUT = 30.0  # asyncio's default ssl_shutdown_timeout
_LOG_THRESHOLD = 5  # asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES


class SocketTLSTransport(asyncio.Transport):
    """A TLS connection whose handshake is done, on a non-blocking ``ssl.SSLSocket`` it owns,
    made by :func:`~.socket_connect.open_socket_tls` (which calls :meth:`start` once the
    protocol is connected). ``extra``: what :meth:`get_extra_info` answers;
    ``reader_registered``: the handshake left the socket registered for reading (taken over).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        protocol: asyncio.BaseProtocol,
        *,
        extra: dict[str, Any],
        shutdown_timeout: float | None = None,
        before_close: Callable[[ssl.SSLSocket], object] | None = None,
        reader_registered: bool = False,
    ) -> None:
        super().__init__(extra)
        self._info = extra  # (asyncio's self._extra, which typeshed does not declare)
        self._loop = loop
        self._sock, self._fd = sock, sock.fileno()
        self._protocol: Any = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        # close() ends within this many seconds whatever the peer does (callers rely on it).
        self.shutdown_timeout = SHUTDOWN_TIMEOUT if shutdown_timeout is None else shutdown_timeout
        self._before_close = before_close
        self._out, self._dropped_writes = WriteBuffer(), 0
        self._protocol_paused = self._read_paused = False
        self._closing = False  # close() or abort() called, or the connection failed
        self._shutting_down = False  # close_notify exchange started
        self._lost = False  # connection_lost is scheduled: no more I/O
        self._eof_told = False  # the protocol heard eof_received()
        self._sock_closed = False
        self._timer: asyncio.TimerHandle | None = None
        # What a blocked SSL_read, SSL_write, SSL_shutdown waits for (0: not blocked).
        self._read_wait = self._write_wait = self._shutdown_wait = 0
        self._reader_on, self._writer_on = reader_registered, False  # registered with the loop
        if reader_registered:
            loop.add_reader(self._fd, self._on_readable)  # (replacing a callback: no syscall)

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<SocketTLSTransport fd={self._fd} {state}>"

    def start(self) -> None:
        """Begin reading: called once the protocol's ``connection_made`` has returned."""
        self._update_interest()
        if not self._lost and self._sock.pending():
            self._loop.call_soon(self._on_readable)

    # -- the asyncio.Transport API --------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peercert" and name not in self._info and not self._sock_closed:
            self._info[name] = self._sock.getpeercert()  # decoded when asked: ~12 µs
        return self._info.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def is_reading(self) -> bool:
        return not self._read_paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._read_paused:
            return
        self._read_paused = True
        self._update_interest()

    def resume_reading(self) -> None:
        if self._closing or not self._read_paused:
            return
        self._read_paused = False
        self._update_interest()
        # Decrypted bytes OpenSSL holds never wake the selector.
        if self._sock.pending():
            self._loop.call_soon(self._on_readable)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._out.set_limits(high, low)
        self._maybe_pause_protocol()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._out.low, self._out.high)

    def get_write_buffer_size(self) -> int:
        return self._out.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if self._closing:
            if self._dropped_writes >= _LOG_THRESHOLD:
                logger.warning("SSL connection is closed")
            self._dropped_writes += 1
            return
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if not size:
            return
        if self._out.pending is not None:
            self._out.add(data, size)  # after what SSL_write must finish first
        else:
            self._out.start(data, size)
            self._flush()  # the usual case: all of it, at once
            if self._write_wait:
                self._update_interest()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close: an SSL transport cannot write_eof()")

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Flush, exchange close_notify, close the socket; bounded by ``shutdown_timeout``."""
        if self._closing:
            return
        self._closing = True
        self._timer = self._loop.call_later(self.shutdown_timeout, self._on_shutdown_timeout)
        if self._out.pending is None:
            self._start_shutdown()
        self._update_interest()

    def abort(self) -> None:
        """Close the socket at once: no close_notify, buffered data is dropped."""
        self._force_close(None)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if not getattr(self, "_sock_closed", True):
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    # -- readiness --------------------------------------------------------------------------

    def _update_interest(self) -> None:
        """Register for exactly what the blocked calls wait for and what reading needs."""
        if self._lost:
            return
        if self._shutting_down:
            want_read = self._shutdown_wait == READ
            want_write = self._shutdown_wait == WRITE
        else:
            want_read = not self._read_wait and self._reading()
            want_write = self._read_wait == WRITE
        want_read = want_read or self._write_wait == READ
        want_write = want_write or self._write_wait == WRITE
        if want_read != self._reader_on:
            self._reader_on = want_read
            if want_read:
                self._loop.add_reader(self._fd, self._on_readable)
            else:
                self._loop.remove_reader(self._fd)
        if want_write != self._writer_on:
            self._writer_on = want_write
            if want_write:
                self._loop.add_writer(self._fd, self._on_writable)
            else:
                self._loop.remove_writer(self._fd)

    def _reading(self) -> bool:
        """Whether SSL_read is due when readable. While closing, reading goes on (dropping what
        comes), or a peer blocked on sending to us might never read what we flush; it stops
        at the peer's close_notify, and when the close_notify exchange starts."""
        closing_or_unpaused = self._closing or not self._read_paused
        return closing_or_unpaused and not self._eof_told and not self._shutting_down

    def _on_readable(self) -> None:
        if self._lost:
            return
        if self._write_wait == READ:
            self._write_wait = 0
            self._flush()
        if self._shutting_down:
            if self._shutdown_wait == READ and not self._lost:
                self._do_shutdown(now=True)
        elif not self._lost and not self._read_wait and self._reading():
            self._do_read()
            if self._write_wait == READ and not self._lost:
                # The records a renegotiating SSL_write waited for may have been read here.
                self._write_wait = 0
                self._flush()
        self._update_interest()

    def _on_writable(self) -> None:
        if self._lost:
            return
        if self._write_wait == WRITE:
            self._write_wait = 0
            self._flush()
        if self._read_wait == WRITE and not self._lost:
            self._read_wait = 0
            if self._reading():
                self._do_read()
        if self._shutting_down and self._shutdown_wait == WRITE and not self._lost:
            self._do_shutdown(now=True)
        self._update_interest()

    # -- reading ----------------------------------------------------------------------------

    def _do_read(self) -> None:
        keep = not self._closing
        into: memoryview | None = None
        if self._buffered and keep:
            into = self._protocol_call("get_buffer", -1)
            if into is None:
                return
            into = memoryview(into).cast("B")
        reading = read_records(self._sock, into, keep=keep)
        if reading.more:
            self._loop.call_soon(self._on_readable)
        if reading.wants_write:
            self._read_wait = WRITE
        if reading.size and keep:
            if into is not None:
                self._protocol_call("buffer_updated", reading.size)
            else:
                self._protocol_call("data_received", reading.data())
        if self._lost:
            return
        if reading.error is not None:
            self._fatal_error(reading.error, "Fatal read error on SSL transport")
        elif reading.eof is not None:
            self._call_eof_received()
            if reading.eof:
                self.close()  # answer the close_notify (after flushing what is buffered)
            else:
                self._force_close(None)  # the peer is gone: nothing more can be exchanged

    def _call_eof_received(self) -> None:
        if self._eof_told or self._lost:
            return
        self._eof_told = True
        if self._protocol_call("eof_received"):
            logger.warning("returning true from eof_received() has no effect when using ssl")

    def _protocol_call(self, name: str, *args: Any, fatal: bool = True) -> Any:
        """``protocol.name(*args)``; if it raises, the error is reported to the loop and, if
        ``fatal`` (all but flow control, as in asyncio), the connection is lost with it."""
        try:
            return getattr(self._protocol, name)(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if fatal:
                self._fatal_error(exc, f"Fatal error: protocol.{name}() call failed.")
            else:
                self._report(exc, f"protocol.{name}() failed")
            return None

    # -- writing ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand buffered data to SSL_write until it blocks or nothing is left."""
        out, sock = self._out, self._sock
        while (chunk := out.chunk()) is not None:
            try:
                sock.write(chunk)
            except AGAIN as exc:
                self._write_wait = wants(exc)
                break
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on SSL transport")
                return
            out.written()
        self._maybe_resume_protocol()
        if self._closing and out.pending is None and not self._shutting_down and not self._lost:
            self._start_shutdown()

    def _maybe_pause_protocol(self) -> None:
        if self._out.size > self._out.high and not self._protocol_paused:
            self._protocol_paused = True
            self._protocol_call("pause_writing", fatal=False)

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._out.size <= self._out.low:
            self._protocol_paused = False
            self._protocol_call("resume_writing", fatal=False)

    def _report(self, exc: BaseException, message: str) -> None:
        context = {"message": message, "exception": exc, "transport": self}
        self._loop.call_exception_handler({**context, "protocol": self._protocol})

    # -- closing ----------------------------------------------------------------------------

    def _start_shutdown(self) -> None:
        self._shutting_down = True
        self._do_shutdown()

    def _do_shutdown(self, *, now: bool = False) -> None:
        """One step of the close_notify exchange; once done, the connection is lost - at
        ``now`` (in a readiness callback: spares a loop iteration), else on the next one."""
        try:
            self._shutdown_wait = shutdown_step(self._sock)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error on SSL shutdown")
            return
        if not self._shutdown_wait:
            self._call_eof_received()
            self._force_close(None, now=now)

    def _on_shutdown_timeout(self) -> None:
        self._timer = None
        self._force_close(TimeoutError("SSL shutdown timed out"))

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._report(exc, message)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None, *, now: bool = False) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reader_on:
            self._loop.remove_reader(self._fd)
        if self._writer_on:
            self._loop.remove_writer(self._fd)
        self._reader_on = self._writer_on = False
        if now:
            self._call_connection_lost(exc)
        else:  # never from inside a call the protocol made
            self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            if self._before_close is not None:  # the SSLSocket's last moment with TLS state
                try:
                    self._before_close(self._sock)
                except Exception as error:
                    self._report(error, "before_close() failed")
            self._sock_closed = True
            self._sock.close()
            self._protocol = None
