"""One TLS session held natively: our own ``SSL_SESSION*`` copy, freed with its object."""

from __future__ import annotations

import ctypes

from ._bindings import _Bindings, _i2d

__all__ = ["NativeSession"]


class NativeSession:
    """Owns one ``SSL_SESSION*`` (our own copy, via SSL_SESSION_dup or d2i), freed by ``__del__``.

    Create it through ``Libssl.capture``, ``Libssl.session_from_der`` or ``Libssl.watch``.
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
