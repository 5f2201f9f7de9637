"""A ctypes binding to the libssl that the running ``_ssl`` module uses.

The stdlib copies a session through DER on every read and offer (hundreds of microseconds,
and the read leaks on 3.10-3.13); this reaches the ``SSL*`` behind an ``SSLObject`` instead.

Nothing here may crash the interpreter.  The ``SSL*`` is read from CPython's
private ``PySSLSocket`` struct, so every pointer read from it is checked against
values Python already knows (see :meth:`Libssl.ssl_pointer` for the order) before
OpenSSL is asked to touch it.  Anything unexpected raises
:class:`NativeUnavailable`, and callers fall back to the stdlib.  Free-threaded
CPython is refused: the borrowed pointers would race with other threads.

The binding is split by concept: :mod:`._bindings` (the ctypes function table),
:mod:`.native_session` (:class:`NativeSession`), :mod:`.session_callback` (OpenSSL's
new-session callback behind :meth:`Libssl.watch`) and :mod:`.libssl_load` (locating
libssl and the self-check; ``load_libssl()`` is the way to obtain a :class:`Libssl`).
"""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import ssl
import threading
import weakref
from collections.abc import Callable
from typing import Any, cast

from . import session_callback
from ._bindings import _P, NativeUnavailable, _Bindings, _i2d
from .native_session import NativeSession

__all__ = ["MAX_DER_SIZE", "Libssl", "NativeSession", "NativeUnavailable"]

# DER sessions are ~1 KB; a peer certificate chain can grow them, but nothing
# legitimate approaches this, and it bounds what the ASN.1 parser is fed.
MAX_DER_SIZE = 64 * 1024

# PySSLSocket.Socket, .ssl and .ctx, read in place (indexing beats unpacking here).
_ThreePointers = ctypes.c_void_p * 3
# X509_OBJECT_get_type values (X509_LOOKUP_TYPE).
_X509_LU_X509 = 1
_X509_LU_CRL = 2


# The context's protocol as a plain int, through the C base class (ssl.SSLContext.protocol
# builds an enum on every read).
_protocol_of = cast(
    Callable[[ssl.SSLContext], int],
    getattr(_ssl._SSLContext, "protocol").__get__,  # noqa: B009 - typeshed says int
)
_TLS_CLIENT = int(ssl.PROTOCOL_TLS_CLIENT)


class Libssl:
    """The libssl/libcrypto that ``_ssl`` is linked against, after a self-check.

    Obtain it with :func:`aiotlspool.engines.libssl_load.load_libssl`; the constructor is
    internal.
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
        # Offset of PySSLSocket.Socket; .ssl and .ctx follow it. Validated once at load time.
        self._socket_offset = socket_offset
        self.libssl_path = libssl_path
        self.libcrypto_path = libcrypto_path
        # Contexts whose SSL_CTX* field was validated, with that field's value.
        self._contexts: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()
        self._contexts_lock = threading.Lock()

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

    def watch(self, ssl_object: ssl.SSLObject, on_session: Callable[[NativeSession], None]) -> bool:
        """Pass every session OpenSSL makes for this connection to ``on_session``.

        Call it after ``wrap_bio`` and before the handshake starts (ValueError
        otherwise). Each session is our own copy (``SSL_SESSION_dup``) in a
        :class:`NativeSession`, passed as OpenSSL reports it: TLS 1.3, once per ticket,
        inside the ``SSLObject.read()`` that processes it (2 after a full handshake
        with OpenSSL servers, 1 after a resumption); TLS 1.2, once inside
        ``do_handshake()`` after a full handshake, none after a resumption.
        ``on_session`` runs on whatever thread reads; an exception from it is logged
        at DEBUG on logger ``"aiotlspool"`` and the connection goes on. The
        registration ends when ``ssl_object`` is garbage; watching it again replaces
        ``on_session``.

        Returns True when the connection is watched, False when it cannot be (capture
        another way then): the context is not ``ssl.PROTOCOL_TLS_CLIENT``, or its
        ``SSL_CTX`` already has a new-session callback that is not ours (never
        replaced), or ours with a cache mode changed since.

        What is set on the user's ``SSL_CTX``, once, the first time one of its
        connections is watched (the ``SSL_CTX`` of ``ssl_object.context``):

        * ``SSL_CTX_sess_set_new_cb``: this package's one callback
          (:mod:`.session_callback`; it is never freed);
        * ``SSL_CTX_set_session_cache_mode(old | SSL_SESS_CACHE_CLIENT |
          SSL_SESS_CACHE_NO_INTERNAL_STORE)``: report client sessions to the
          callback, but never store them in the context's internal cache.

        Why other connections on the same context are unaffected: a client never looks
        sessions up in the context's cache (it resumes only what is offered), and with
        ``NO_INTERNAL_STORE`` nothing is stored there. For an unwatched connection the
        callback returns 0 at once and OpenSSL frees the reference it took; its own
        ``SSLObject.session`` is untouched. Only ``TLS_CLIENT`` contexts are changed: they
        cannot serve, so no server-side cache is affected. (Checked on OpenSSL 3.0.)

        Do not reassign ``ssl_object.context`` before watching: OpenSSL reports to
        the callback of the context the connection was created with (its
        ``session_ctx``, which no public function reveals), so the callback is
        installed on the new context, True is returned, and nothing is reported
        unless the original context has been watched too.
        """
        if not callable(on_session):
            raise TypeError("on_session must be callable")
        ptr = self.ssl_pointer(ssl_object)
        if not self._fns.in_before(ptr):
            raise ValueError("watch() must be called before the handshake starts")
        if _protocol_of(ssl_object.context) != _TLS_CLIENT or self._fns.is_server(ptr):
            return False
        sslctx = self._fns.get_ssl_ctx(ptr)
        if not sslctx or not session_callback.install(self._fns, sslctx):
            return False
        session_callback.register(self._fns, ptr, ssl_object, ssl_object._sslobj, on_session)  # type: ignore[attr-defined]
        return True

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
        # No lock to read: a dict lookup is atomic under the GIL (free-threaded builds are
        # refused), and writers hold the lock.
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

    def context_probe(self, context: ssl.SSLContext) -> tuple[int, int, bytes | None]:
        """What may change in a context that Python cannot read, cheaply, for one
        comparison per connect: the security level, how many objects its trust store holds
        (a store only grows), and the client certificate's DER (or None)."""
        sslctx = self.context_pointer(context)
        store = self._fns.ctx_cert_store(sslctx)
        # Only the stack's count is read, without the store's lock: another thread may add to
        # the stack meanwhile, which changes the count (the next probe sees it) but not the
        # stack header read here.
        objects = self._fns.store_get0_objects(store) if store else None
        count = self._fns.sk_num(objects) if objects else 0
        cert = self._fns.ctx_certificate(sslctx)
        der = _i2d(self._fns, self._fns.i2d_x509, cert, "i2d_X509") if cert else None
        return self._fns.ctx_security_level(sslctx), count, der

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


def _context_field(context: ssl.SSLContext) -> int:
    """PySSLContext's first field after PyObject_HEAD (its ``SSL_CTX*``), read in place."""
    # Checked on the actual type: a subclass is at least as big, never smaller.
    if type(context).__basicsize__ < object.__basicsize__ + _P:
        raise NativeUnavailable("ssl.SSLContext is smaller than the expected PySSLContext.")
    return ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value or 0
