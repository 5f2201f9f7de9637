"""Locating the libssl that ``_ssl`` uses, checking CPython's layout, and the self-check.

:func:`load_libssl` is the entry point: it binds the library once per process and
returns the checked :class:`~aiotlspool.engines.libssl.Libssl`, or raises
:class:`~aiotlspool.engines.libssl.NativeUnavailable` with the reason.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
import sysconfig
import threading
from typing import Any

from ._bindings import _P, NativeUnavailable, _Bindings
from .libssl import Libssl, _context_field

__all__ = ["load_libssl"]

# Where the memory map is read; a module attribute so tests can point it elsewhere.
_MAPS_PATH = "/proc/self/maps"


def load_libssl() -> Libssl:
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


_load_lock = threading.Lock()
# None until load_libssl() ran; then the Libssl, or the reason it is unavailable.
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
