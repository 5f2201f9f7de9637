"""A ctypes binding to the libssl that the running ``_ssl`` module uses.

The stdlib copies a session through DER on every ``SSLObject.session`` read and
every ``wrap_bio(session=...)`` (hundreds of microseconds, and the read leaks on
3.10-3.13).  This module reaches the ``SSL*`` behind an ``SSLObject`` and keeps
its own ``SSL_SESSION*`` copies instead.

Nothing here may crash the interpreter.  The ``SSL*`` is read from CPython's
private ``PySSLSocket`` struct, so every pointer read from it is checked against
values Python already knows (see :meth:`Libssl.ssl_pointer` for the order) before
OpenSSL is asked to touch it.  Anything unexpected raises
:class:`NativeUnavailable`, and callers fall back to the stdlib.  Free-threaded
CPython is refused: the borrowed pointers would race with other threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import ssl
import sys
import sysconfig
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

# PySSLSocket.Socket, .ssl and .ctx, read in place (indexing beats unpacking here).
_ThreePointers = ctypes.c_void_p * 3
# X509_OBJECT_get_type values (X509_LOOKUP_TYPE).
_X509_LU_X509 = 1
_X509_LU_CRL = 2
# Typed views of the ctypes functions (runtime objects are ctypes function pointers).
_PtrToPtr = Callable[[int], "int | None"]
_PtrToInt = Callable[[int], int]


class NativeUnavailable(Exception):
    """The native binding cannot be used here; ``str(exc)`` says why (one short sentence)."""


class _Bindings:
    """The OpenSSL functions we call, each with argtypes and restype declared."""

    __slots__ = (
        "ctx_cert_store",
        "ctx_certificate",
        "ctx_security_level",
        "d2i_session",
        "err_clear",
        "get1_session",
        "get_ex_data",
        "get_session",
        "get_ssl_ctx",
        "i2d_session",
        "i2d_x509",
        "i2d_x509_crl",
        "in_before",
        "is_server",
        "object_get0_crl",
        "object_get0_x509",
        "object_get_type",
        "session_dup",
        "session_free",
        "session_has_ticket",
        "session_id",
        "session_is_resumable",
        "session_lifetime_hint",
        "session_protocol_version",
        "session_time",
        "session_timeout",
        "set_session",
        "sk_dup",
        "sk_free",
        "sk_num",
        "sk_value",
        "store_get0_objects",
        "store_lock",
        "store_unlock",
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
        self.session_id: Callable[[int, Any], int | None] = bind(
            "SSL_SESSION_get_id", vp, vp, ctypes.POINTER(ctypes.c_uint)
        )
        self.ctx_security_level: _PtrToInt = bind("SSL_CTX_get_security_level", i, vp)
        self.ctx_cert_store: _PtrToPtr = bind("SSL_CTX_get_cert_store", vp, vp)
        self.store_lock: _PtrToInt = bind("X509_STORE_lock", i, vp)
        self.store_unlock: _PtrToInt = bind("X509_STORE_unlock", i, vp)
        self.store_get0_objects: _PtrToPtr = bind("X509_STORE_get0_objects", vp, vp)
        self.sk_num: _PtrToInt = bind("OPENSSL_sk_num", i, vp)
        self.sk_value: Callable[[int, int], int | None] = bind("OPENSSL_sk_value", vp, vp, i)
        self.sk_dup: _PtrToPtr = bind("OPENSSL_sk_dup", vp, vp)
        self.sk_free: Callable[[int], None] = bind("OPENSSL_sk_free", None, vp)
        self.object_get_type: _PtrToInt = bind("X509_OBJECT_get_type", i, vp)
        self.object_get0_x509: _PtrToPtr = bind("X509_OBJECT_get0_X509", vp, vp)
        self.object_get0_crl: _PtrToPtr = bind("X509_OBJECT_get0_X509_CRL", vp, vp)
        self.i2d_x509_crl: Callable[[int, Any], int] = bind(
            "i2d_X509_CRL", i, vp, ctypes.POINTER(vp)
        )


class NativeSession:
    """Owns one ``SSL_SESSION*`` (our own copy, via SSL_SESSION_dup or d2i), freed by ``__del__``.

    Create it through :meth:`Libssl.capture` or :meth:`Libssl.session_from_der`.
    The copy is never attached to a connection itself (``apply`` offers a fresh
    duplicate), so it cannot be marked non-resumable behind our back.

    It is freed only when the object itself dies, never earlier: ``weakref.finalize``
    would also run at interpreter exit while the object is still reachable (from an
    earlier-registered atexit handler or a daemon thread), handing them freed memory.
    """

    __slots__ = ("__weakref__", "_fns", "_ptr")

    def __init__(self, fns: _Bindings, ptr: int) -> None:
        # _fns first: __del__ relies on _fns being set whenever _ptr is.
        self._fns = fns
        self._ptr = ptr

    def __del__(self) -> None:
        # _ptr is missing if __init__ never ran. The function comes from the instance,
        # not module globals, which may already be None during interpreter shutdown.
        ptr = getattr(self, "_ptr", 0)
        if ptr:
            self._ptr = 0
            self._fns.session_free(ptr)

    def _handle(self) -> int:
        """The ``SSL_SESSION*``; ValueError once freed (reachable only from another finalizer)."""
        ptr = self._ptr
        if not ptr:
            raise ValueError("the native session has already been freed")
        return ptr

    @property
    def has_ticket(self) -> bool:
        """Whether the session holds a ticket (SSL_SESSION_has_ticket)."""
        return bool(self._fns.session_has_ticket(self._handle()))

    @property
    def ticket_lifetime_hint(self) -> int:
        """The server's ticket lifetime hint in seconds (0 when none)."""
        return self._fns.session_lifetime_hint(self._handle())

    @property
    def protocol_version(self) -> int:
        """The negotiated protocol, e.g. ``0x0303`` (TLS 1.2) or ``0x0304`` (TLS 1.3)."""
        return self._fns.session_protocol_version(self._handle())

    @property
    def time(self) -> int:
        """Creation time, seconds since the epoch."""
        return self._fns.session_time(self._handle())

    @property
    def timeout(self) -> int:
        """Lifetime in seconds counted from :attr:`time`, as OpenSSL enforces it."""
        return self._fns.session_timeout(self._handle())

    @property
    def session_id(self) -> bytes:
        """The session ID (SSL_SESSION_get_id), at most 32 bytes; may be empty.

        For a ticket OpenSSL sets it to the SHA-256 of the ticket, so two sessions
        carrying the same ticket have equal ids.
        """
        length = ctypes.c_uint(0)
        data = self._fns.session_id(self._handle(), ctypes.byref(length))
        # The bytes live inside the SSL_SESSION, which self keeps alive during the copy.
        return ctypes.string_at(data, length.value) if data and length.value else b""

    def is_resumable(self) -> bool:
        """Whether OpenSSL would offer this session (SSL_SESSION_is_resumable)."""
        return bool(self._fns.session_is_resumable(self._handle()))

    def to_der(self) -> bytes:
        """The DER encoding (i2d_SSL_SESSION); it holds the master secret: treat it as a key."""
        return _i2d(self._fns, self._fns.i2d_session, self._handle(), "i2d_SSL_SESSION")

    def __repr__(self) -> str:
        return (
            f"<NativeSession protocol=0x{self.protocol_version:04x} "
            f"ticket={self.has_ticket} resumable={self.is_resumable()}>"
        )


class Libssl:
    """The libssl/libcrypto that ``_ssl`` is linked against, after a self-check.

    Obtain it with :meth:`load`; the constructor is internal.
    """

    __slots__ = (
        "_contexts",
        "_contexts_lock",
        "_fns",
        "_socket_offset",
        "_sslsocket_type",
        "libcrypto_path",
        "libssl_path",
    )

    def __init__(
        self,
        fns: _Bindings,
        sslsocket_type: type,
        socket_offset: int,
        libssl_path: str,
        libcrypto_path: str,
    ) -> None:
        self._fns = fns
        self._sslsocket_type = sslsocket_type
        # Offset of PySSLSocket.Socket; .ssl and .ctx follow it. Validated once in load().
        self._socket_offset = socket_offset
        self.libssl_path = libssl_path
        self.libcrypto_path = libcrypto_path
        # Contexts whose SSL_CTX* field was validated, with that field's value.
        self._contexts: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()
        self._contexts_lock = threading.Lock()

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

        Checks, in this order, and nothing is handed to OpenSSL before all of 1-4 pass:

        1. ``ssl_object._sslobj`` is exactly ``_ssl._SSLSocket`` (whose size was checked
           at load time, so its fields can be read);
        2. ``PySSLSocket.Socket`` is NULL (``wrap_bio``) or the address of a weakref to
           ``ssl_object`` (``wrap_socket``), found through :func:`weakref.getweakrefs`;
        3. ``PySSLSocket.ssl`` is non-NULL and pointer-aligned (at load time it must also
           lie in a read-write heap or anonymous mapping of /proc/self/maps);
        4. ``PySSLSocket.ctx`` is ``id()`` of the object's context;
        5. only then OpenSSL: ``SSL_get_ex_data(ssl, 0)`` must be the ``_SSLSocket``.

        Steps 1-4 read only memory inside Python objects and dereference nothing.
        Raises :class:`NativeUnavailable` when the object does not look like a
        live ``_ssl`` connection, so that nothing invalid reaches OpenSSL.
        """
        sslobj = getattr(ssl_object, "_sslobj", None)
        if type(sslobj) is not self._sslsocket_type:
            raise NativeUnavailable("the object is not backed by an _ssl._SSLSocket.")
        ptr = self._read_ssl_field(ssl_object, sslobj, id(cast(Any, sslobj).context))
        if self._fns.get_ex_data(ptr, 0) != id(sslobj):
            raise NativeUnavailable("SSL_get_ex_data(ssl, 0) is not the _SSLSocket.")
        return ptr

    def _read_ssl_field(self, owner: object, sslobj: object, expected_ctx: int) -> int:
        """Read PySSLSocket.ssl after steps 2-4 of :meth:`ssl_pointer`.

        Only memory inside the object is read and nothing is dereferenced, so a
        wrong layout yields a mismatch, never a crash. ``sslobj`` must be an
        instance of the validated ``_SSLSocket`` type (whose size was checked), and
        ``owner`` the SSLObject or SSLSocket holding it.
        """
        socket_ref, ssl_ptr, ctx = _ThreePointers.from_address(id(sslobj) + self._socket_offset)
        # _ssl keeps a weakref to the socket it wraps; getweakrefs lists it (basic
        # weakrefs without a callback are shared), so this compares addresses only.
        if socket_ref and socket_ref not in [id(ref) for ref in weakref.getweakrefs(owner)]:
            raise NativeUnavailable("PySSLSocket layout check failed (Socket field mismatch).")
        if not ssl_ptr or ssl_ptr % _P:
            raise NativeUnavailable("PySSLSocket layout check failed (ssl field not a pointer).")
        if ctx != expected_ctx:
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
        copy = self._fns.session_dup(session._handle())
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

    def context_pointer(self, context: ssl.SSLContext) -> int:
        """The ``SSL_CTX*`` of ``context``: PySSLContext's first field after PyObject_HEAD.

        Validated once per context object: a throwaway connection's ``SSL_CTX``
        (reached through :meth:`ssl_pointer`) must be that field. Later calls only
        read the field and compare it with the validated value, so a subclass with
        its own ``__eq__`` cannot borrow another context's pointer.
        Raises TypeError for anything but an ``ssl.SSLContext``.
        """
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
        field = _context_field(context)
        if self._validated_field(context) != field:
            self._validate_context(context, field)
            with self._contexts_lock, contextlib.suppress(TypeError):  # unhashable: no cache
                self._contexts[context] = field
        return field

    def _validated_field(self, context: ssl.SSLContext) -> int | None:
        """The field value validated earlier for ``context``, if any."""
        with self._contexts_lock:
            try:
                return self._contexts.get(context)
            except TypeError:  # a subclass that made itself unhashable
                return None

    def _validate_context(self, context: ssl.SSLContext, field: int) -> None:
        """Require SSL_get_SSL_CTX of a throwaway connection on ``context`` to be ``field``."""
        # A TLS_SERVER context refuses client-side objects (and vice versa).
        server_side = context.protocol == ssl.PROTOCOL_TLS_SERVER
        probe = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=server_side)
        if not field or self._fns.get_ssl_ctx(self.ssl_pointer(probe)) != field:
            raise NativeUnavailable("SSL_get_SSL_CTX does not match the PySSLContext.")

    def security_level(self, context: ssl.SSLContext) -> int:
        """The context's OpenSSL security level (SSL_CTX_get_security_level)."""
        return self._fns.ctx_security_level(self.context_pointer(context))

    def client_certificate(self, context: ssl.SSLContext) -> bytes | None:
        """DER of the certificate loaded with ``load_cert_chain``, or None.

        The standard library cannot read it back (SSL_CTX_get0_certificate, i2d_X509).
        """
        cert = self._fns.ctx_certificate(self.context_pointer(context))
        if not cert:
            return None
        return _i2d(self._fns, self._fns.i2d_x509, cert, "i2d_X509")

    # The earlier name, kept for existing callers.
    context_certificate = client_certificate

    def trust_store(self, context: ssl.SSLContext) -> list[tuple[str, bytes]]:
        """Every object in the context's X509_STORE: ``("cert", der)``, ``("crl", der)``.

        Objects of any other type appear as ``("other", b"")`` so the caller sees them.
        Unlike ``get_ca_certs()`` this includes non-CA certificates and CRLs.
        """
        objects = self._store_objects(self.context_pointer(context))
        if objects is None:
            return []
        try:
            count = self._fns.sk_num(objects)
            return [self._store_entry(self._fns.sk_value(objects, i) or 0) for i in range(count)]
        finally:
            self._fns.sk_free(objects)

    def _store_objects(self, sslctx: int) -> int | None:
        """A private copy of the store's X509_OBJECT stack (free it with OPENSSL_sk_free).

        None when the store has no object stack at all.

        The stack is copied while holding X509_STORE_lock: other threads (verifying
        without the GIL) may add certificates lazily, reallocating or sorting the live
        stack. The lock covers two C calls only: while we hold it, Python may hand the
        GIL to a thread that then waits for the lock while holding the GIL (as 3.13's
        ``get_ca_certs`` does), a deadlock whose window this keeps to a few bytecodes.
        The objects themselves stay valid unlocked: OpenSSL 3 has no way to remove an
        object from a store, ``_ssl`` never replaces a context's store, and the caller
        keeps the context alive.
        """
        store = self._fns.ctx_cert_store(sslctx)
        if not store:
            raise ValueError("the context has no X509_STORE")
        if self._fns.store_lock(store) != 1:
            raise ValueError("X509_STORE_lock failed")
        try:
            live = self._fns.store_get0_objects(store)
            copy = self._fns.sk_dup(live) if live else None
        finally:
            self._fns.store_unlock(store)
        if not live:
            return None
        if not copy:
            self._fns.err_clear()
            raise MemoryError("OPENSSL_sk_dup failed")
        return copy

    def _store_entry(self, obj: int) -> tuple[str, bytes]:
        """One X509_OBJECT as ("cert", der), ("crl", der) or ("other", b"")."""
        kind = self._fns.object_get_type(obj) if obj else 0
        if kind == _X509_LU_X509:
            x509 = self._fns.object_get0_x509(obj)
            if x509:
                return "cert", _i2d(self._fns, self._fns.i2d_x509, x509, "i2d_X509")
        elif kind == _X509_LU_CRL:
            crl = self._fns.object_get0_crl(obj)
            if crl:
                return "crl", _i2d(self._fns, self._fns.i2d_x509_crl, crl, "i2d_X509_CRL")
        return "other", b""

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


def _read_map_lines() -> list[list[str]]:
    """The lines of /proc/self/maps, split into at most six fields."""
    try:
        with open(_MAPS_PATH, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        raise NativeUnavailable(
            "no readable /proc/self/maps, so the libssl in use cannot be located."
        ) from None
    return [line.split(maxsplit=5) for line in lines]


def _span(fields: list[str]) -> tuple[int, int]:
    start, _, end = fields[0].partition("-")
    return int(start, 16), int(end, 16)


def _read_maps() -> list[tuple[int, int, str]]:
    """File-backed mappings of this process: (start, end, path)."""
    return [
        (*_span(fields), fields[5])
        for fields in _read_map_lines()
        if len(fields) == 6 and fields[5].startswith("/")
    ]


def _heap_regions() -> list[tuple[int, int]]:
    """Read-write private mappings that malloc can hand out: [heap] and anonymous ones."""
    regions = []
    for fields in _read_map_lines():
        if len(fields) < 5:
            continue
        name = fields[5] if len(fields) == 6 else ""
        # Named anonymous mappings ("[anon:...]") are anonymous memory too.
        if fields[1].startswith("rw") and (
            not name or name == "[heap]" or name.startswith("[anon:")
        ):
            regions.append(_span(fields))
    return regions


def _owner(maps: list[tuple[int, int, str]], address: int) -> str | None:
    """The file mapped at ``address``, if any."""
    for start, end, path in maps:
        if start <= address < end:
            return path
    return None


def _gil_disabled() -> bool:
    """Whether this is a free-threaded build, or the GIL is off at run time."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return True
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_gil_enabled is not None and not is_gil_enabled()


def _context_field(context: ssl.SSLContext) -> int:
    """PySSLContext's first field after PyObject_HEAD (its ``SSL_CTX*``), read in place."""
    # Checked on the actual type: a subclass is at least as big, never smaller.
    if type(context).__basicsize__ < object.__basicsize__ + _P:
        raise NativeUnavailable("ssl.SSLContext is smaller than the expected PySSLContext.")
    return ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value or 0


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
    if _gil_disabled():
        # Without the GIL another thread may free an SSL* or SSL_SESSION* we borrowed.
        raise NativeUnavailable(
            "the GIL is disabled (free-threaded CPython): borrowed pointers would race."
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
    """The offset of PySSLSocket.Socket, after checking the struct is big enough to read."""
    # PyObject_HEAD (object.__basicsize__ bytes, whatever the build), then
    # Socket, ssl, ctx: pointer-sized fields (the same in CPython 3.10-3.13).
    socket_offset = object.__basicsize__
    if sslsocket_type.__basicsize__ < socket_offset + 3 * _P:
        raise NativeUnavailable("_ssl._SSLSocket is smaller than the expected PySSLSocket layout.")
    return socket_offset


def _self_check(lib: Libssl) -> None:
    """Exercise the validation on live client and server objects before trusting it.

    Everything checkable without a dereference comes first (the ssl_pointer steps 1-4,
    a NULL Socket field, both pointers inside read-write heap mappings); OpenSSL is
    called only after.
    """
    for protocol, server_side in (
        (ssl.PROTOCOL_TLS_CLIENT, False),
        (ssl.PROTOCOL_TLS_SERVER, True),
    ):
        ctx = ssl.SSLContext(protocol)
        obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=server_side)
        sslobj = getattr(obj, "_sslobj", None)
        if type(sslobj) is not lib._sslsocket_type:
            raise NativeUnavailable("SSLObject is not backed by an _ssl._SSLSocket.")
        if ctypes.c_void_p.from_address(id(sslobj) + lib._socket_offset).value:
            raise NativeUnavailable("PySSLSocket.Socket is not NULL for a wrap_bio object.")
        ptr = lib._read_ssl_field(obj, sslobj, id(ctx))
        sslctx_field = _context_field(ctx)
        # Read after the objects exist: malloc may have grown the heap for them.
        regions = _heap_regions()
        for name, address in (("PySSLSocket.ssl", ptr), ("PySSLContext.ctx", sslctx_field)):
            if not any(start <= address < end for start, end in regions):
                raise NativeUnavailable(f"{name} is not inside a read-write heap mapping.")
        _check_openssl_view(lib, obj, ptr, sslctx_field, server_side)


def _check_openssl_view(
    lib: Libssl, obj: ssl.SSLObject, ptr: int, sslctx_field: int, server_side: bool
) -> None:
    """With the pointers validated, OpenSSL's answers must match what Python knows."""
    fns = lib._fns
    if lib.ssl_pointer(obj) != ptr:  # the ex_data back-pointer
        raise NativeUnavailable("ssl_pointer() disagrees with PySSLSocket.ssl.")
    # PySSLContext starts with its SSL_CTX*; it must be the one this SSL* uses.
    if fns.get_ssl_ctx(ptr) != sslctx_field:
        raise NativeUnavailable("SSL_get_SSL_CTX does not match the PySSLContext.")
    if fns.is_server(ptr) != int(server_side) or fns.in_before(ptr) != 1:
        raise NativeUnavailable("a fresh SSL* does not report the expected state.")
    if fns.get_session(ptr) is not None:
        raise NativeUnavailable("a fresh SSL* already has a session.")
