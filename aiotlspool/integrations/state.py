"""Per-context state of :func:`aiotlspool.enable_resumption`, and the link of one connection.

A context made resuming has one :class:`ContextState` (engine, store, counters, the classes it
replaced), found through the context itself (:func:`state_of`). Each client connection with a
server name gets a :class:`ConnectionLink` before its first handshake step: the key it was
offered under, what was offered, and whether the engine watches it or a capture is due.

Keys: ``wrap_bio`` never learns the port, so sessions are keyed by the context, its
verification settings (read again at every connection) and the server name, with no port -
:func:`~aiotlspool.sessions.key.session_key` with ``share_across_ports=True``, as Go's and
rustls' client caches do - unless the caller said which port (:mod:`.ports`). A server can only
resume a session it issued (or whose ticket key it shares), so one name on two ports costs at
most lost resumptions, never a cross-server one.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ..endpoint import Endpoint
from ..engines.base import SessionEngine
from ..sessions.cached import TLS13, CachedSession
from ..sessions.key import SessionKey, context_number, session_key
from ..sessions.verification import Verification, verification_of
from .names import normalize_server_name
from .ports import hinted_port
from .stats import Counters

logger = logging.getLogger("aiotlspool")

T = TypeVar("T")
# Any port: with share_across_ports=True the key has none.
_ANY_PORT = 443


class NowaitStore(Protocol):
    """A session store usable inside synchronous TLS calls: :class:`~aiotlspool.MemorySessionCache`
    and :class:`~aiotlspool.FileSessionCache` (their coroutines never suspend either)."""

    def get_nowait(self, key: SessionKey) -> CachedSession | None: ...

    def put_nowait(self, key: SessionKey, session: CachedSession) -> None: ...

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None: ...

    async def invalidate_where(self, stale: Callable[[SessionKey], bool]) -> int: ...


class ContextState:
    """What one resuming context holds: engine, store, counters, the classes it replaced."""

    def __init__(
        self,
        engine: SessionEngine,
        cache: NowaitStore,
        previous_object_class: type[ssl.SSLObject],
        previous_socket_class: type[ssl.SSLSocket],
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.previous_object_class = previous_object_class
        self.previous_socket_class = previous_socket_class
        self.object_class: type[ssl.SSLObject] | None = None
        self.socket_class: type[ssl.SSLSocket] | None = None
        self.counters = Counters()
        self.enabled = True
        # The verification fingerprint last read from the context (at a connection's start).
        self.fingerprint: str | None = None
        self._lock = threading.Lock()
        self._store_failing = False

    def settings_now(self, context: ssl.SSLContext) -> Verification:
        """Read the context's verification settings; drop the sessions of older ones."""
        verification = verification_of(context)
        fingerprint = verification.fingerprint
        with self._lock:
            previous, self.fingerprint = self.fingerprint, fingerprint
        if previous is not None and previous != fingerprint:
            number = context_number(context)

            def stale(key: SessionKey) -> bool:
                return key.context == number and key.verification != fingerprint

            dropped = self._guarded(lambda: run_now(self.cache.invalidate_where(stale)), 0)
            self.counters.add("stale_dropped", dropped)
        return verification

    def take(self, key: SessionKey, engine: SessionEngine) -> CachedSession | None:
        session = self._guarded(lambda: self.cache.get_nowait(key), None)
        if session is not None and session.engine != engine.name:
            session = None  # stored through another engine (a store shared with a pool)
        return session

    def store(self, key: SessionKey, session: CachedSession) -> None:
        """Store a session captured under ``key`` if the context still has its settings."""
        if not self.enabled:
            return
        if key.verification != self.fingerprint:
            self.counters.add("stale_dropped")
            return

        def put() -> bool:
            self.cache.put_nowait(key, session)
            return True

        if self._guarded(put, False):
            self.counters.add("stored")

    def drop(self, key: SessionKey, session: CachedSession) -> None:
        self._guarded(lambda: run_now(self.cache.invalidate(key, session)), None)

    def _guarded(self, call: Callable[[], T], fallback: T) -> T:
        """A store call inside a TLS call: a failure is a miss (or nothing stored), counted and
        logged once per run of failures; never an exception in the user's handshake."""
        try:
            result = call()
        except Exception as exc:
            self.counters.add("store_errors")
            if not self._store_failing:
                self._store_failing = True
                logger.warning(
                    "the session store %s failed (%s: %s); connecting without it",
                    type(self.cache).__name__,
                    type(exc).__name__,
                    exc,
                )
            return fallback
        self._store_failing = False
        return result

    def reinit_after_fork(self) -> None:
        self._lock = threading.Lock()  # one held by another thread at fork stays held
        self.counters.reinit_after_fork()


class ConnectionLink:
    """One client connection of a resuming context, from before its handshake to its end."""

    __slots__ = (
        "capture_pending",
        "engine",
        "judged",
        "key",
        "offered",
        "state",
        "watched",
    )

    def __init__(self, state: ContextState, engine: SessionEngine, key: SessionKey) -> None:
        self.state = state
        self.engine = engine  # the one that offered: it also captures, even if replaced since
        self.key = key
        self.offered: CachedSession | None = None
        self.watched = False
        self.judged = False
        self.capture_pending = False

    def arrived(self, session: CachedSession) -> None:
        """The engine's sink: a session of this watched connection (inside a read)."""
        self.state.store(self.key, session)

    def judge(self, ssl_object: ssl.SSLObject) -> None:
        """Right after the handshake completed: count it, drop a refused session, and
        capture a TLS 1.2 session now (a TLS 1.3 one needs its ticket, which comes later)."""
        self.judged = True
        counters = self.state.counters
        reused = ssl_object.session_reused
        counters.add("resumed" if reused else "full")
        if self.offered is not None and not reused:
            counters.add("rejected")
            self.state.drop(self.key, self.offered)
        if self.watched:
            return
        if ssl_object.version() == TLS13:
            self.capture_pending = True
        elif not reused:  # a resumed TLS 1.2 session is still in the store
            self.capture(ssl_object)

    def failed(self) -> None:
        """The handshake failed: a session the server saw may be what it choked on."""
        self.judged = True
        if self.offered is not None and not self.offered.single_use:
            self.state.drop(self.key, self.offered)

    def capture(self, ssl_object: ssl.SSLObject) -> None:
        """The connection's latest session, once (unwatched connections only)."""
        self.capture_pending = False
        session = self.engine.capture(ssl_object)
        if session is None:
            return
        resumed = self.offered if ssl_object.session_reused else None
        if resumed is not None and session.session_id == resumed.session_id:
            return  # the ticket this connection resumed with: not a new one
        self.state.store(self.key, session)


def link_connection(
    ssl_object: ssl.SSLObject, given_name: object, given_session: object, *, watch: bool = True
) -> ConnectionLink | None:
    """Offer a session to a client connection whose handshake has not started, and watch it.

    ``given_name`` is the server name the caller asked for; normalized, it must equal (but for
    case) the name the connection itself verifies (the ``_ssl`` object's ``server_hostname``).
    None (nothing done) for a server-side connection, a context not resuming, no or another
    server name. A session the caller passed itself (``session=``) is left alone. ``watch``
    False: no new-session callback for this connection (it is captured after reads instead).
    """
    context = ssl_object.context
    state = state_of(context)
    if state is None or not state.enabled or ssl_object.server_side:
        return None
    name = normalize_server_name(given_name)
    # What OpenSSL verifies: it compares case-insensitively, but a trailing dot is part of
    # the name there ("localhost." fails against a certificate for "localhost"), so such a
    # connection must not resume a session verified without it: no offer, nothing stored.
    own = getattr(getattr(ssl_object, "_sslobj", None), "server_hostname", None)
    if name is None or not isinstance(own, str) or own.lower() != name:
        return None
    verification = state.settings_now(context)
    # The port only when the caller said where this name's connections go (.ports).
    port = hinted_port(name)
    endpoint = Endpoint(name, _ANY_PORT if port is None else port, name)
    key = session_key(context, endpoint, share_across_ports=port is None, verification=verification)
    engine = state.engine
    link = ConnectionLink(state, engine, key)
    if given_session is None:
        session = state.take(key, engine)
        if session is not None and engine.offer(ssl_object, session):
            link.offered = session
            state.counters.add("hits")
        else:
            state.counters.add("misses")
    if watch:
        link.watched = engine.watch(ssl_object, link.arrived)
    return link


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a store coroutine that never suspends (a :class:`NowaitStore`'s) to its end, here."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError(
        "the session store suspended: enable_resumption needs one whose calls complete at once"
    )


# Per context; weak, so a context nobody uses goes away with its state.
_states: weakref.WeakKeyDictionary[ssl.SSLContext, ContextState] = weakref.WeakKeyDictionary()
registry_lock = threading.Lock()


def state_of(context: ssl.SSLContext) -> ContextState | None:
    """The resumption state of exactly this context object, if enabled."""
    return _states.get(context)


def set_state(context: ssl.SSLContext, state: ContextState | None) -> None:
    if state is None:
        _states.pop(context, None)
    else:
        _states[context] = state


def _reinit_after_fork() -> None:
    global registry_lock
    registry_lock = threading.Lock()
    for state in list(_states.values()):
        state.reinit_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
