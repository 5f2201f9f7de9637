"""OpenSSL's new-session callback, routed to the connections that ``Libssl.watch`` registered.

One C callback (a ctypes thunk that is never freed) serves every ``SSL_CTX`` it was
installed on. OpenSSL calls it once per new session of any connection on such a
context, with that connection's ``SSL*``; the callback looks the ``SSL*`` up in
:data:`_watched` and, for a watched connection only, hands a duplicate of the session
to the connection's ``on_session``. For every other connection it does nothing.

What the callback must never do: raise into OpenSSL, run Python work once the
interpreter is finalizing, or trust an entry whose connection has gone (see
:func:`_on_new_session` for the checks).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import weakref
from collections.abc import Callable

from ._bindings import _Bindings
from .native_session import NativeSession

__all__ = ["install", "register"]

logger = logging.getLogger("aiotlspool")

# SSL_CTX_ctrl commands behind the SSL_CTX_{set,get}_session_cache_mode macros.
_CTRL_SET_SESS_CACHE_MODE = 44
_CTRL_GET_SESS_CACHE_MODE = 45
# SSL_SESS_CACHE_CLIENT: report client sessions (to the callback);
# SSL_SESS_CACHE_NO_INTERNAL_STORE: but never store them in the context's own cache.
CACHE_BITS = 0x1 | 0x200

OnSession = Callable[[NativeSession], None]


class _Watch:
    """One watched connection: its SSLObject (weakly), ``id()`` of its ``_sslobj``, the sink."""

    __slots__ = ("fns", "on_session", "owner", "sslobj_id")

    def __init__(
        self,
        fns: _Bindings,
        owner: weakref.ReferenceType[object],
        sslobj_id: int,
        on_session: OnSession,
    ) -> None:
        self.fns = fns
        self.owner = owner
        self.sslobj_id = sslobj_id
        self.on_session = on_session


# Watched connections by SSL* address. Plain dict reads are atomic under the GIL (free-threaded
# builds are refused at load time), so the callback reads without the lock; writers take it.
_watched: dict[int, _Watch] = {}
# Reentrant: a weakref callback (run by the garbage collector at any allocation) may fire on
# a thread that already holds it.
_watched_lock = threading.RLock()
# Serialises the read-check-set of a context's callback and cache mode.
_install_lock = threading.Lock()


def _on_new_session(
    ssl_ptr: int | None,
    session_ptr: int | None,
    _is_finalizing: Callable[[], bool] = sys.is_finalizing,
    _watched: dict[int, _Watch] = _watched,
) -> int:
    """OpenSSL's ``new_session_cb(SSL *, SSL_SESSION *)``; always returns 0.

    Returning 0 tells OpenSSL that we kept no reference: it frees the one it took for
    the call, and we keep our own ``SSL_SESSION_dup`` copy instead (keeping OpenSSL's
    reference made the last ticket non-resumable once its connection was aborted).

    The entry is used only when the SSLObject is alive, its ``_sslobj`` is the
    object registered, and ``SSL_get_ex_data(ssl, 0)`` (``_ssl``'s back-pointer) is
    that object too: a stale entry for a reused ``SSL*`` address fails one of these.
    Defaults bind what is needed at interpreter exit, when module globals may be gone.
    """
    try:
        if _is_finalizing() or not ssl_ptr or not session_ptr:
            return 0
        watch = _watched.get(ssl_ptr)
        if watch is None:
            return 0
        owner = watch.owner()
        if owner is None or id(getattr(owner, "_sslobj", None)) != watch.sslobj_id:
            return 0
        fns = watch.fns
        if fns.get_ex_data(ssl_ptr, 0) != watch.sslobj_id:
            return 0
        copy = fns.session_dup(session_ptr)
        if not copy:
            # Leave nothing on the error queue: the SSL_read around us would report it.
            fns.err_clear()
            return 0
        session = NativeSession(fns, copy)
        try:
            watch.on_session(session)
        except BaseException:
            logger.debug("on_session raised; the connection goes on", exc_info=True)
    except BaseException:  # never into OpenSSL (ctypes would print it and return 0)
        pass
    return 0


_CallbackType = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_CALLBACK = _CallbackType(_on_new_session)
# Immortal: contexts keep pointing at the thunk after this module is torn down at exit, and a
# daemon thread may still be inside SSL_read then. Freeing the thunk would leave OpenSSL a
# dangling function pointer; one leaked object per process is the price.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_CALLBACK))
CALLBACK_ADDRESS: int = ctypes.cast(_CALLBACK, ctypes.c_void_p).value or 0


def install(fns: _Bindings, sslctx: int) -> bool:
    """Make sure ``sslctx`` reports new client sessions to our callback; False if it cannot.

    Sets the callback and adds CLIENT|NO_INTERNAL_STORE to the cache mode when the context
    has no callback yet. False when it has another callback (never replaced), or ours but a
    cache mode that someone changed since (then it would not be called).
    """
    with _install_lock:
        current = fns.ctx_get_new_cb(sslctx)
        mode = fns.ctx_ctrl(sslctx, _CTRL_GET_SESS_CACHE_MODE, 0, None)
        if current is None:
            # The callback first: from the moment the mode reports client sessions, it exists.
            fns.ctx_set_new_cb(sslctx, CALLBACK_ADDRESS)
            fns.ctx_ctrl(sslctx, _CTRL_SET_SESS_CACHE_MODE, mode | CACHE_BITS, None)
            return True
        return current == CALLBACK_ADDRESS and mode & CACHE_BITS == CACHE_BITS


def register(
    fns: _Bindings, ssl_ptr: int, ssl_object: object, sslobj: object, on_session: OnSession
) -> None:
    """Route the sessions of the connection ``ssl_ptr`` to ``on_session`` while it lives.

    Replaces an earlier registration of the same ``SSL*``. The entry goes when
    ``ssl_object`` dies; the weakref callback removes only its own entry.
    """

    def forget(
        ref: weakref.ReferenceType[object],
        _lock: threading.RLock = _watched_lock,
        _watched: dict[int, _Watch] = _watched,
    ) -> None:
        with _lock:
            entry = _watched.get(ssl_ptr)
            if entry is not None and entry.owner is ref:
                del _watched[ssl_ptr]

    # A weakref with a callback is never shared, so its identity names this registration.
    entry = _Watch(fns, weakref.ref(ssl_object, forget), id(sslobj), on_session)
    with _watched_lock:
        _watched[ssl_ptr] = entry


def watched_count() -> int:
    """How many connections are registered (for tests and diagnostics)."""
    return len(_watched)
