"""The OpenSSL functions the native engine calls, bound through ctypes with declared types.

Leaf module of the native binding: it imports nothing from the package, so
:mod:`.native_session`, :mod:`.libssl` and :mod:`.libssl_load` can all build on it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

__all__ = ["NativeUnavailable"]

# A pointer-sized field, read in place.
_P = ctypes.sizeof(ctypes.c_void_p)
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
        "ctx_ctrl",
        "ctx_get_new_cb",
        "ctx_security_level",
        "ctx_set_new_cb",
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
        # The new-session callback (see .session_callback). SSL_CTX_set_session_cache_mode
        # and SSL_CTX_get_session_cache_mode are macros over SSL_CTX_ctrl.
        self.ctx_ctrl: Callable[[int, int, int, None], int] = bind(
            "SSL_CTX_ctrl", lng, vp, i, lng, vp
        )
        self.ctx_set_new_cb: Callable[[int, int], None] = bind(
            "SSL_CTX_sess_set_new_cb", None, vp, vp
        )
        self.ctx_get_new_cb: _PtrToPtr = bind("SSL_CTX_sess_get_new_cb", vp, vp)


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
