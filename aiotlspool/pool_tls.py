"""The TLS half of a :class:`~aiotlspool.Pool`: its context, session store and engine, the
connector that uses them, and the public API about TLS settings and sessions.

:class:`~aiotlspool.Pool` adds the connection slots; this base class knows nothing of them
except :meth:`PoolTLS._close_idle`, which replacing the context calls.
"""

from __future__ import annotations

import asyncio
import ssl
from abc import ABC, abstractmethod
from typing import Literal

from .background import Background
from .config import PoolConfig
from .connector import Connector
from .endpoint import Endpoint
from .engines.native import NativeSessionEngine
from .engines.select import select_engine
from .exceptions import PoolClosed
from .integrations.classes import ResumingSSLObject
from .sessions import transfer
from .sessions.memory import MemorySessionCache
from .sessions.store import SessionCache
from .stats import Counters


def _checked_context(ssl_context: object) -> ssl.SSLContext:
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
    if issubclass(ssl_context.sslobject_class, ResumingSSLObject):
        # Both would offer and capture on every connection (and count it twice).
        raise ValueError(
            "this context resumes sessions by itself (enable_resumption); give the pool a "
            "context without it, or call disable_resumption(ctx) first"
        )
    return ssl_context


class PoolTLS(ABC):
    """The context, session store and engine of a pool (see :class:`~aiotlspool.Pool`)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        session_cache: SessionCache | Literal[False] | None,
        session_engine: str,
        config: PoolConfig,
        background: Background,
    ) -> None:
        ssl_context = _checked_context(
            ssl.create_default_context() if ssl_context is None else ssl_context
        )
        if session_cache is None:
            cache: SessionCache | None = MemorySessionCache()
        elif session_cache is False:
            cache = None
        elif isinstance(session_cache, SessionCache):
            cache = session_cache
        else:
            raise TypeError(
                f"session_cache must be None, False or a SessionCache, got {session_cache!r}"
            )
        self.config = config
        self.session_cache = cache
        self._counters = Counters()
        self._engine = select_engine(session_engine)
        self._connector = Connector(
            ssl_context=ssl_context,
            engine=self._engine,
            cache=cache,
            counters=self._counters,
            config=config,
            spawn=background.spawn,
        )
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recent_endpoints: dict[tuple[str, int, str | None, type], Endpoint] = {}

    @abstractmethod
    async def _close_idle(self) -> None:
        """Close every idle connection now."""

    @abstractmethod
    def _check_loop(self) -> None:
        """Bind the pool to the running loop, or refuse another one."""

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context new connections use (replace it with :meth:`set_ssl_context`)."""
        return self._connector.ssl_context

    async def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """Use ``ssl_context`` for every new connection from now on (certificate rotation,
        a new CA bundle).

        Idle connections made with the old context are closed now, and connections in use are
        closed when released instead of being pooled. Sessions cached under the old context are
        dropped (``stale_sessions_dropped``) and never offered under the new one. Returns once
        the idle connections are closed.
        """
        _checked_context(ssl_context)
        self._check_loop()
        if self._closed:
            raise PoolClosed("the pool is closed; cannot replace its ssl_context")
        await self._connector.replace_context(ssl_context)
        await self._close_idle()

    @property
    def session_engine(self) -> str:
        """The session engine in use: ``"native"`` or ``"stdlib"``."""
        return self._engine.name

    async def export_session(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> bytes | None:
        """Take a cached session for the endpoint and return it as bytes, or None if none.

        The bytes are bound to the server name, port and the verification settings under which
        the session was obtained (see :meth:`import_session`). They hold the session's secret:
        store them like a key. A TLS 1.3 ticket is handed out once, so an exported ticket
        leaves the cache. Needs the native session engine.
        """
        self._native_engine("export")
        key, _ = await self._connector.current_key(self._endpoint_for(host, port, server_hostname))
        session = await self._connector.take_session(key)
        # The key names the settings the session was obtained under (a changed context gets
        # new keys), so the export carries those, not whatever the context says later.
        return None if session is None else transfer.encode(session, key)

    async def import_session(
        self, data: bytes, host: str, port: int, *, server_hostname: str | None = None
    ) -> None:
        """Put an exported session into the cache for the endpoint, after checking its binding.

        Raises ValueError - and caches nothing - unless ``data`` is a well-formed export made
        for exactly this server name and port (or host), under the verification settings this
        pool's context has now (docs/security.md lists them), and not expired. Only import
        bytes from a store you trust.
        """
        engine = self._native_engine("import")
        endpoint = self._endpoint_for(host, port, server_hostname)
        key, _ = await self._connector.current_key(endpoint)
        session = engine.describe(transfer.decode(data, key, engine.libssl))
        if session is None:
            raise ValueError("the exported session cannot be resumed")
        if self.session_cache is None:
            raise RuntimeError("this pool has no session cache (session_cache=False)")
        await self.session_cache.put(key, session)

    def _native_engine(self, action: str) -> NativeSessionEngine:
        if not isinstance(self._engine, NativeSessionEngine):
            raise RuntimeError(
                f"session {action} needs the native session engine; this pool uses "
                f"{self._engine.name!r}"
            )
        return self._engine

    # -- endpoints ----------------------------------------------------------------------------

    def _endpoint_for(self, host: str, port: int, server_hostname: str | None) -> Endpoint:
        """The validated Endpoint for these arguments, remembered for the busy ones."""
        # Keyed by the port's type too: 443, 443.0 and True==1 hash alike, one is valid.
        args = (host, port, server_hostname, type(port))
        try:
            endpoint = self._recent_endpoints[args]
        except (KeyError, TypeError):  # TypeError: unhashable junk, rejected by create()
            endpoint = Endpoint.create(host, port, server_hostname)
            if len(self._recent_endpoints) >= 1024:
                self._recent_endpoints.clear()  # a crawler's long tail of hosts: start over
            self._recent_endpoints[args] = endpoint
        # asyncio hands wrap_bio None for "", and OpenSSL then checks no name at all: with
        # check_hostname=True that would silently accept a certificate for any name.
        if not endpoint.server_hostname and self._connector.ssl_context.check_hostname:
            raise ValueError(
                f"server_hostname='' for {endpoint.host}:{endpoint.port} sends no server name, "
                "so no host name would be checked; the pool's context has check_hostname=True "
                "(pass a name, or use a context with check_hostname=False)"
            )
        return endpoint
