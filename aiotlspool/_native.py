"""A ctypes binding to the libssl that the running ``_ssl`` module uses.

The stdlib copies a session through DER on every ``SSLObject.session`` read and
every ``wrap_bio(session=...)`` (hundreds of microseconds, and the read leaks on
3.10-3.13).  This module reaches the ``SSL*`` behind an ``SSLObject`` and keeps
its own ``SSL_SESSION*`` copies instead.

Nothing here may crash the interpreter.  The ``SSL*`` is read from CPython's
private ``PySSLSocket`` struct, so every pointer read from it is checked against
values Python already knows (``id()`` of the context, then OpenSSL's ex_data
back-pointer) before OpenSSL is asked to touch it.  Anything unexpected raises
:class:`NativeUnavailable`, and callers fall back to the stdlib.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, cast

__all__ = ["Libssl", "NativeSession", "NativeUnavailable"]

# A pointer-sized field, read in place.
_P = ctypes.sizeof(ctypes.c_void_p)
# Where the memory map is read; a module attribute so tests can point it elsewhere.
_MAPS_PATH = "/proc/self/maps"
# DER sessions are ~1 KB; a peer certificate chain can grow them, but nothing
# legitimate approaches this, and it bounds what the ASN.1 parser is fed.
MAX_DER_SIZE = 64 * 1024

# PySSLSocket.ssl and PySSLSocket.ctx, read in place (indexing beats unpacking here).
_TwoPointers = ctypes.c_void_p * 2
# Typed views of the ctypes functions (runtime objects are ctypes function pointers).
_PtrToPtr = Callable[[int], "int | None"]
_PtrToInt = Callable[[int], int]


class NativeUnavailable(Exception):
    """The native binding cannot be used here; ``str(exc)`` says why (one short sentence)."""


class _Bindings:
    """The OpenSSL functions we call, each with argtypes and restype declared."""

    __slots__ = (
        "ctx_certificate",
        "d2i_session",
        "err_clear",
        "get1_session",
        "get_ex_data",
        "get_session",
        "get_ssl_ctx",
        "i2d_session",
        "i2d_x509",
        "in_before",
        "is_server",
        "session_dup",
        "session_free",
        "session_has_ticket",
        "session_is_resumable",
        "session_lifetime_hint",
        "session_protocol_version",
        "session_time",
        "session_timeout",
        "set_session",
        "version_num",
    )

    def __init__(self, lib: ctypes.PyDLL) -> None:
        vp, i, lng = ctypes.c_void_p, ctypes.c_int, ctypes.c_long

        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            # Raises AttributeError when the symbol is absent (reported by load()).
            fn = getattr(lib, name)
            fn.restype = restype
            # c_void_p everywhere a pointer passes, so 64-bit values are never truncated to int.
            fn.argtypes = list(argtypes)
            return fn

        self.get_session: _PtrToPtr = bind("SSL_get_session", vp, vp)
        self.get1_session: _PtrToPtr = bind("SSL_get1_session", vp, vp)
        self.session_dup: _PtrToPtr = bind("SSL_SESSION_dup", vp, vp)
        self.session_free: Callable[[int], None] = bind("SSL_SESSION_free", None, vp)
        self.set_session: Callable[[int, int], int] = bind("SSL_set_session", i, vp, vp)
        self.i2d_session: Callable[[int, Any], int] = bind(
            "i2d_SSL_SESSION", i, vp, ctypes.POINTER(vp)
        )
        self.d2i_session: Callable[[None, Any, int], int | None] = bind(
            "d2i_SSL_SESSION", vp, vp, ctypes.POINTER(vp), lng
        )
        self.session_has_ticket: _PtrToInt = bind("SSL_SESSION_has_ticket", i, vp)
        self.session_lifetime_hint: _PtrToInt = bind(
            "SSL_SESSION_get_ticket_lifetime_hint", ctypes.c_ulong, vp
        )
        self.session_protocol_version: _PtrToInt = bind("SSL_SESSION_get_protocol_version", i, vp)
        self.session_time: _PtrToInt = bind("SSL_SESSION_get_time", lng, vp)
        self.session_timeout: _PtrToInt = bind("SSL_SESSION_get_timeout", lng, vp)
        self.session_is_resumable: _PtrToInt = bind("SSL_SESSION_is_resumable", i, vp)
        self.get_ex_data: Callable[[int, int], int | None] = bind("SSL_get_ex_data", vp, vp, i)
        self.is_server: _PtrToInt = bind("SSL_is_server", i, vp)
        self.in_before: _PtrToInt = bind("SSL_in_before", i, vp)
        self.get_ssl_ctx: _PtrToPtr = bind("SSL_get_SSL_CTX", vp, vp)
        self.version_num: Callable[[], int] = bind("OpenSSL_version_num", ctypes.c_ulong)
        self.ctx_certificate: _PtrToPtr = bind("SSL_CTX_get0_certificate", vp, vp)
        self.i2d_x509: Callable[[int, Any], int] = bind("i2d_X509", i, vp, ctypes.POINTER(vp))
        self.err_clear: Callable[[], None] = bind("ERR_clear_error", None)


class NativeSession:
    """Owns one ``SSL_SESSION*`` (our own copy, via SSL_SESSION_dup or d2i), freed by finalize.

    Create it through :meth:`Libssl.capture` or :meth:`Libssl.session_from_der`.
    The copy is never attached to a connection itself (``apply`` offers a fresh
    duplicate), so it cannot be marked non-resumable behind our back.
    """

    __slots__ = ("__weakref__", "_fns", "_ptr")

    def __init__(self, fns: _Bindings, ptr: int) -> None:
        self._fns = fns
        self._ptr = ptr
        # The callback holds only the function and the address, never self:
        # a reference to self would keep the session alive forever.
        weakref.finalize(self, fns.session_free, ptr)

    @property
    def has_ticket(self) -> bool:
        """Whether the session holds a ticket (SSL_SESSION_has_ticket)."""
        return bool(self._fns.session_has_ticket(self._ptr))

    @property
    def ticket_lifetime_hint(self) -> int:
        """The server's ticket lifetime hint in seconds (0 when none)."""
        return self._fns.session_lifetime_hint(self._ptr)

    @property
    def protocol_version(self) -> int:
        """The negotiated protocol, e.g. ``0x0303`` (TLS 1.2) or ``0x0304`` (TLS 1.3)."""
        return self._fns.session_protocol_version(self._ptr)

    @property
    def time(self) -> int:
        """Creation time, seconds since the epoch."""
        return self._fns.session_time(self._ptr)

    @property
    def timeout(self) -> int:
        """Lifetime in seconds counted from :attr:`time`, as OpenSSL enforces it."""
        return self._fns.session_timeout(self._ptr)

    def is_resumable(self) -> bool:
        """Whether OpenSSL would offer this session (SSL_SESSION_is_resumable)."""
        return bool(self._fns.session_is_resumable(self._ptr))

    def to_der(self) -> bytes:
        """The DER encoding (i2d_SSL_SESSION); it holds the master secret: treat it as a key."""
        return _i2d(self._fns, self._fns.i2d_session, self._ptr, "i2d_SSL_SESSION")

    def __repr__(self) -> str:
        return (
            f"<NativeSession protocol=0x{self.protocol_version:04x} "
            f"ticket={self.has_ticket} resumable={self.is_resumable()}>"
        )


class Libssl:
    """The libssl/libcrypto that ``_ssl`` is linked against, after a self-check.

    Obtain it with :meth:`load`; the constructor is internal.
    """

    __slots__ = ("_fns", "_ssl_offset", "_sslsocket_type", "libcrypto_path", "libssl_path")

    def __init__(
        self,
        fns: _Bindings,
        sslsocket_type: type,
        ssl_offset: int,
        libssl_path: str,
        libcrypto_path: str,
    ) -> None:
        self._fns = fns
        self._sslsocket_type = sslsocket_type
        # Offset of PySSLSocket.ssl; PySSLSocket.ctx follows it. Validated once in load().
        self._ssl_offset = ssl_offset
        self.libssl_path = libssl_path
        self.libcrypto_path = libcrypto_path

    @classmethod
    def load(cls) -> Libssl:
        """Bind to the libssl/libcrypto that ``_ssl`` is linked against, and self-check.

        The outcome, success or the reason for failure, is computed once per process.
        Raises :class:`NativeUnavailable` with the reason when the binding cannot be used.
        """
        global _load_outcome
        outcome = _load_outcome
        if outcome is None:
            with _load_lock:
                if _load_outcome is None:
                    try:
                        _load_outcome = _load_uncached()
                    except NativeUnavailable as exc:
                        _load_outcome = str(exc)
                outcome = _load_outcome
        if isinstance(outcome, str):
            # A fresh exception each time: re-raising one instance would pile up tracebacks.
            raise NativeUnavailable(outcome)
        return outcome

    def ssl_pointer(self, ssl_object: ssl.SSLObject) -> int:
        """The ``SSL*`` of this SSLObject, validated before use.

        Raises :class:`NativeUnavailable` when the object does not look like a
        live ``_ssl`` connection, so that nothing invalid reaches OpenSSL.
        """
        sslobj = getattr(ssl_object, "_sslobj", None)
        if type(sslobj) is not self._sslsocket_type:
            raise NativeUnavailable("the object is not backed by an _ssl._SSLSocket.")
        ptr = self._read_ssl_field(sslobj, id(cast(Any, sslobj).context))
        if self._fns.get_ex_data(ptr, 0) != id(sslobj):
            raise NativeUnavailable("SSL_get_ex_data(ssl, 0) is not the _SSLSocket.")
        return ptr

    def _read_ssl_field(self, sslobj: object, expected_ctx: int) -> int:
        """Read PySSLSocket.ssl, requiring PySSLSocket.ctx == ``expected_ctx``.

        Only memory inside the object is read and nothing is dereferenced, so a
        wrong layout yields a mismatch, never a crash. ``sslobj`` must be an
        instance of the validated ``_SSLSocket`` type (whose size was checked).
        """
        fields = _TwoPointers.from_address(id(sslobj) + self._ssl_offset)
        ssl_ptr = fields[0]
        if fields[1] != expected_ctx or not ssl_ptr:
            raise NativeUnavailable("PySSLSocket layout check failed (ctx field mismatch).")
        return ssl_ptr

    def has_ticket(self, ssl_object: ssl.SSLObject) -> bool:
        """Whether the connection's current session holds a ticket, without copying it."""
        ptr = self.ssl_pointer(ssl_object)
        # Borrowed pointer, no refcount change; used before control returns to Python.
        session = self._fns.get_session(ptr)
        return bool(session) and bool(self._fns.session_has_ticket(cast(int, session)))

    def session_identity(self, ssl_object: ssl.SSLObject) -> int | None:
        """The address of the connection's current session, as an identity only.

        OpenSSL replaces the session object when a TLS 1.3 ticket arrives, so a changed
        identity means a new ticket. Never dereferenced.
        """
        return self._fns.get_session(self.ssl_pointer(ssl_object))

    def capture(self, ssl_object: ssl.SSLObject) -> NativeSession | None:
        """Our own copy of the connection's current session, or None if there is none."""
        ptr = self.ssl_pointer(ssl_object)
        # get1 (a counted reference) rather than get: the connection may replace
        # its session (a new ticket) on another thread while we duplicate it.
        current = self._fns.get1_session(ptr)
        if not current:
            return None
        try:
            copy = self._fns.session_dup(current)
        finally:
            self._fns.session_free(current)
        if not copy:
            self._fns.err_clear()
            raise MemoryError("SSL_SESSION_dup failed")
        return NativeSession(self._fns, copy)

    def apply(self, ssl_object: ssl.SSLObject, session: NativeSession) -> None:
        """Offer ``session`` on this not-yet-handshaken client connection.

        Raises ValueError if OpenSSL refuses it, the connection is server-side,
        or its handshake has started.
        """
        if not isinstance(session, NativeSession):
            raise TypeError(f"expected a NativeSession, got {type(session).__name__}")
        ptr = self.ssl_pointer(ssl_object)
        if self._fns.is_server(ptr):
            raise ValueError("cannot offer a session on a server-side connection")
        if not self._fns.in_before(ptr):
            raise ValueError("cannot offer a session after the handshake has started")
        # Attach a fresh duplicate: OpenSSL marks the attached session non-resumable
        # when its connection is freed without close_notify, which must not spoil ours.
        copy = self._fns.session_dup(session._ptr)
        if not copy:
            self._fns.err_clear()
            raise MemoryError("SSL_SESSION_dup failed")
        try:
            # SSL_set_session takes its own reference on success.
            if self._fns.set_session(ptr, copy) != 1:
                self._fns.err_clear()
                raise ValueError("SSL_set_session failed")
        finally:
            self._fns.session_free(copy)

    def context_certificate(self, context: ssl.SSLContext) -> bytes | None:
        """DER of the certificate loaded into ``context`` (the client certificate), or None.

        The standard library cannot read it back. The ``SSL_CTX*`` is reached through a
        throwaway connection object, so it goes through the same validation as every call.
        """
        probe = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
        sslctx = self._fns.get_ssl_ctx(self.ssl_pointer(probe))
        if not sslctx:
            return None
        cert = self._fns.ctx_certificate(sslctx)
        if not cert:
            return None
        return _i2d(self._fns, self._fns.i2d_x509, cert, "i2d_X509")

    def session_from_der(self, der: bytes) -> NativeSession:
        """Parse a DER session (d2i_SSL_SESSION).

        Raises ValueError on empty, malformed, truncated, trailing-garbage or
        oversized (> 64 KiB) input. Imported sessions carry a master secret and
        skip certificate verification on resumption: only import trusted bytes.
        """
        # memoryview, not bytes(): bytes(n) of an int would allocate n zero bytes,
        # and the size must be checked before anything is copied.
        view = memoryview(der)
        size = view.nbytes
        if not size:
            raise ValueError("empty DER session")
        if size > MAX_DER_SIZE:
            raise ValueError(f"DER session larger than {MAX_DER_SIZE} bytes")
        buf = ctypes.create_string_buffer(view.tobytes(), size)
        start = ctypes.addressof(buf)
        cursor = ctypes.c_void_p(start)
        parsed = self._fns.d2i_session(None, ctypes.byref(cursor), size)
        if not parsed:
            self._fns.err_clear()
            raise ValueError("not a valid DER-encoded TLS session")
        # Own it first, so every exit below frees it.
        session = NativeSession(self._fns, parsed)
        if cursor.value != start + size:
            raise ValueError("trailing bytes after the DER-encoded TLS session")
        return session


def _i2d(fns: _Bindings, encode: Callable[[int, Any], int], ptr: int, name: str) -> bytes:
    """Run an OpenSSL ``i2d_*`` encoder: ask the size, then write into our own buffer."""
    size = encode(ptr, None)
    if size <= 0:
        fns.err_clear()
        raise ValueError(f"{name} failed")
    buf = ctypes.create_string_buffer(size)
    # i2d writes through *pp and advances it; point it at our buffer.
    cursor = ctypes.c_void_p(ctypes.addressof(buf))
    if encode(ptr, ctypes.byref(cursor)) != size:
        fns.err_clear()
        raise ValueError(f"{name} wrote an unexpected length")
    return buf.raw


_load_lock = threading.Lock()
# None until load() ran; then the Libssl, or the reason it is unavailable.
_load_outcome: Libssl | str | None = None


def _read_maps() -> list[tuple[int, int, str]]:
    """File-backed mappings of this process: (start, end, path)."""
    try:
        with open(_MAPS_PATH, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        raise NativeUnavailable(
            "no readable /proc/self/maps, so the libssl in use cannot be located."
        ) from None
    maps = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, _, end = fields[0].partition("-")
            maps.append((int(start, 16), int(end, 16), fields[5]))
    return maps


def _owner(maps: list[tuple[int, int, str]], address: int) -> str | None:
    """The file mapped at ``address``, if any."""
    for start, end, path in maps:
        if start <= address < end:
            return path
    return None


def _load_uncached() -> Libssl:
    """Locate, bind and self-check; raise NativeUnavailable with the reason."""
    try:
        return _probe()
    except NativeUnavailable:
        raise
    except Exception as exc:  # any surprise means "not usable here", never a crash
        raise NativeUnavailable(f"binding libssl failed: {exc!r}.") from exc


def _probe() -> Libssl:
    if sys.implementation.name != "cpython":
        raise NativeUnavailable(
            f"{sys.implementation.name} is not CPython, whose _ssl structs this relies on."
        )
    import _ssl

    maps = _read_maps()
    ssl_module_path = getattr(_ssl, "__file__", None)
    if not ssl_module_path:
        raise NativeUnavailable("_ssl is built into the interpreter (OpenSSL linked statically).")
    ssl_module_path = os.path.realpath(ssl_module_path)
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:
        raise NativeUnavailable("dlopen(RTLD_NOLOAD) is not available on this platform.")
    # dlsym through _ssl's own handle searches _ssl and then its dependencies in
    # load order: the libssl/libcrypto it was linked against. RTLD_NOLOAD means
    # nothing new is ever loaded.
    handle = ctypes.PyDLL(ssl_module_path, mode=noload | os.RTLD_NOW)
    try:
        fns = _Bindings(handle)
    except AttributeError as exc:
        raise NativeUnavailable(
            f"_ssl exposes no {exc.args[0].split()[-1] if exc.args else 'OpenSSL'} symbol "
            "(OpenSSL linked statically or too old)."
        ) from None

    def library_of(fn: Any, name: str) -> str:
        address = ctypes.cast(fn, ctypes.c_void_p).value or 0
        path = _owner(maps, address)
        if path is None:
            raise NativeUnavailable(f"{name} is not in any mapped file.")
        if os.path.realpath(path) == ssl_module_path:
            raise NativeUnavailable(f"{name} lives inside _ssl itself (OpenSSL linked statically).")
        return path

    libssl_path = library_of(fns.get_session, "SSL_get_session")
    libcrypto_path = library_of(fns.version_num, "OpenSSL_version_num")
    for name in _Bindings.__slots__:
        library_of(getattr(fns, name), name)

    runtime = fns.version_num()
    if runtime != ssl.OPENSSL_VERSION_NUMBER:
        raise NativeUnavailable(
            f"libssl reports version 0x{runtime:x} but ssl.OPENSSL_VERSION_NUMBER is "
            f"0x{ssl.OPENSSL_VERSION_NUMBER:x}."
        )

    sslsocket_type = getattr(_ssl, "_SSLSocket", None)
    if not isinstance(sslsocket_type, type):
        raise NativeUnavailable("_ssl has no _SSLSocket type.")
    lib = Libssl(fns, sslsocket_type, _check_layout(sslsocket_type), libssl_path, libcrypto_path)
    _self_check(lib)
    return lib


def _check_layout(sslsocket_type: type) -> int:
    """The offset of PySSLSocket.ssl, after checking the struct is big enough to read."""
    # PyObject_HEAD (object.__basicsize__ bytes, whatever the build), then
    # Socket, ssl, ctx: pointer-sized fields.
    ssl_offset = object.__basicsize__ + _P
    if sslsocket_type.__basicsize__ < ssl_offset + 2 * _P:
        raise NativeUnavailable("_ssl._SSLSocket is smaller than the expected PySSLSocket layout.")
    return ssl_offset


def _self_check(lib: Libssl) -> None:
    """Exercise the validation on live client and server objects before trusting it."""
    for protocol, server_side in (
        (ssl.PROTOCOL_TLS_CLIENT, False),
        (ssl.PROTOCOL_TLS_SERVER, True),
    ):
        ctx = ssl.SSLContext(protocol)
        obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=server_side)
        ptr = lib.ssl_pointer(obj)  # layout check, then ex_data back-pointer
        fns = lib._fns
        # PySSLContext starts with its SSL_CTX*; it must be the one this SSL* uses.
        if type(ctx).__basicsize__ < object.__basicsize__ + _P:
            raise NativeUnavailable("ssl.SSLContext is smaller than the expected PySSLContext.")
        sslctx_field = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if fns.get_ssl_ctx(ptr) != sslctx_field:
            raise NativeUnavailable("SSL_get_SSL_CTX does not match the PySSLContext.")
        if fns.is_server(ptr) != int(server_side) or fns.in_before(ptr) != 1:
            raise NativeUnavailable("a fresh SSL* does not report the expected state.")
        if fns.get_session(ptr) is not None:
            raise NativeUnavailable("a fresh SSL* already has a session.")
