"""``enable_resumption``: make an existing ``ssl.SSLContext`` resume TLS sessions anywhere.

>>> ctx = enable_resumption(ssl.create_default_context())        # doctest: +SKIP
>>> async with aiohttp.ClientSession(connector=TCPConnector(ssl=ctx)) as s: ...  # doctest: +SKIP

The context stays the same object, of the same type, with the same verification settings; only
its ``sslobject_class`` and ``sslsocket_class`` change (see :mod:`.classes`). The rules are the
pool's: a session is offered only to a connection with the same context object, verification
settings (read again at every connection) and server name; TLS 1.3 tickets once each, TLS 1.2
sessions again; nothing without a server name. The port is not part of the key (``wrap_bio``
never learns it).
"""

from __future__ import annotations

import ssl
from typing import cast

from ..engines.select import select_engine
from ..sessions.memory import MemorySessionCache
from ..sessions.store import SessionCache
from . import state as _state
from .classes import ResumingSSLObject, ResumingSSLSocket, resuming_class
from .stats import ResumptionStats

__all__ = ["disable_resumption", "enable_resumption", "resumption_stats"]

_ENGINES = ("auto", "native", "stdlib")


def enable_resumption(
    ctx: ssl.SSLContext,
    *,
    session_cache: SessionCache | None = None,
    session_engine: str = "auto",
) -> ssl.SSLContext:
    """Make ``ctx`` resume TLS sessions in every library that uses it; return ``ctx``.

    Sets ``ctx.sslobject_class`` (asyncio, uvloop, aiohttp, httpx, anyio...) and
    ``ctx.sslsocket_class`` (requests, urllib3, any ``wrap_socket`` code) to subclasses that
    offer a cached session before each client handshake and store the sessions the server
    sends. Nothing else of the context is changed (with the native engine, OpenSSL's
    new-session callback and a client cache mode are set on it, as the pool does); a custom
    class the context already had is kept as a base.

    Args:
        session_cache: where sessions are kept; a new :class:`MemorySessionCache` when None.
            Sessions are taken and stored inside synchronous TLS calls, from any thread, so
            the store must have ``get_nowait`` and ``put_nowait`` and coroutines that never
            suspend: :class:`MemorySessionCache`, or :class:`FileSessionCache` (sessions that
            outlive the process, native engine). A store that fails costs resumptions only
            (``store_errors``).
        session_engine: ``"auto"``, ``"native"`` or ``"stdlib"``, as for ``Pool``.

    Idempotent: a second call keeps the state (and the statistics); it replaces the store only
    when given another one, and the engine only when named explicitly. Thread-safe: sync
    clients may use the context from many threads. Undo with :func:`disable_resumption`.
    """
    if not isinstance(ctx, ssl.SSLContext):
        raise TypeError(f"ctx must be an ssl.SSLContext, got {type(ctx).__name__}")
    if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ValueError("resumption is for client contexts; this one is PROTOCOL_TLS_SERVER")
    if session_cache is not None and not _usable_in_tls_calls(session_cache):
        raise TypeError(
            "enable_resumption needs a session store usable inside synchronous TLS calls "
            "(get_nowait and put_nowait, coroutines that never suspend: MemorySessionCache, "
            f"FileSessionCache); got {type(session_cache).__name__}"
        )
    if session_engine not in _ENGINES:
        raise ValueError(f"session_engine must be one of {_ENGINES}, got {session_engine!r}")
    with _state.registry_lock:
        current = _state.state_of(ctx)
        if current is None:
            engine = select_engine(session_engine)
            current = _state.ContextState(
                engine,
                cast(
                    _state.NowaitStore,
                    session_cache if session_cache is not None else MemorySessionCache(),
                ),
                ctx.sslobject_class,
                ctx.sslsocket_class,
            )
            _state.set_state(ctx, current)
        else:
            if session_cache is not None:
                current.cache = cast(_state.NowaitStore, session_cache)
            if session_engine != "auto" and session_engine != current.engine.name:
                current.engine = select_engine(session_engine)
        # (Again on a second call if someone has set other classes since.)
        current.object_class = resuming_class(ctx.sslobject_class, ResumingSSLObject)
        current.socket_class = resuming_class(ctx.sslsocket_class, ResumingSSLSocket)
        ctx.sslobject_class = current.object_class
        ctx.sslsocket_class = current.socket_class
    return ctx


def disable_resumption(ctx: ssl.SSLContext) -> None:
    """Stop resuming with ``ctx``: restore the classes it had and drop its state.

    Connections already open store nothing more. A class set on the context by someone else
    since :func:`enable_resumption` is left in place. Nothing happens if it was not enabled.
    """
    with _state.registry_lock:
        current = _state.state_of(ctx)
        if current is None:
            return
        _state.set_state(ctx, None)
        current.enabled = False
        if ctx.sslobject_class is current.object_class:
            ctx.sslobject_class = current.previous_object_class
        if ctx.sslsocket_class is current.socket_class:
            ctx.sslsocket_class = current.previous_socket_class


def resumption_stats(ctx: ssl.SSLContext) -> ResumptionStats:
    """Totals since :func:`enable_resumption` for ``ctx`` (see :class:`ResumptionStats`).

    Raises ValueError if resumption is not enabled on ``ctx``.
    """
    current = _state.state_of(ctx)
    if current is None:
        raise ValueError("resumption is not enabled on this context (enable_resumption)")
    return current.counters.snapshot()


def _usable_in_tls_calls(cache: object) -> bool:
    return (
        isinstance(cache, SessionCache)
        and callable(getattr(cache, "get_nowait", None))
        and callable(getattr(cache, "put_nowait", None))
    )


def resumption_cache(ctx: ssl.SSLContext) -> SessionCache:
    """The store ``ctx`` keeps its sessions in (ValueError if resumption is not enabled)."""
    current = _state.state_of(ctx)
    if current is None:
        raise ValueError("resumption is not enabled on this context (enable_resumption)")
    return cast(SessionCache, current.cache)
