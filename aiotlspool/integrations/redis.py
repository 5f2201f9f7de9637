"""redis-py (asyncio client): every connection of a pool on one resuming ``SSLContext``.

>>> ctx = enable_resumption(ssl.create_default_context())          # doctest: +SKIP
>>> pool = redis.asyncio.ConnectionPool(                              # doctest: +SKIP
...     connection_class=SharedContextSSLConnection, host="cache.internal", port=6380,
...     ssl_context=ctx)
>>> client = redis.asyncio.Redis(connection_pool=pool)               # doctest: +SKIP

redis-py (5.0 to 8.2 at least) has no ``ssl_context`` argument: up to 8.1 each connection
object builds its own context from its ``ssl_*`` arguments, and a TLS session only works with
the context that made it; 8.2 shares one context among connections with the same ``ssl_*``
arguments, but nothing offers it a session. Either way nothing resumes.
:class:`SharedContextSSLConnection` hands the given context to the connection before its first
use.

Public redis-py API used: ``ConnectionPool(connection_class=..., **kwargs)`` (which passes
``ssl_context``, ``host``, ``port``... to each connection it makes) and ``SSLConnection``. Not
documented, though spelt without underscores: the connection's ``ssl_context`` attribute and its
``context`` slot (unchanged from redis-py 5.0 to 8.2). ``Redis.from_url("redis://...",
connection_class=SharedContextSSLConnection, ssl_context=ctx)`` works too; a ``rediss://`` URL
replaces the class (TypeError). Importing this module needs redis-py.
"""

from __future__ import annotations

import ssl
from typing import Any

from redis.asyncio.connection import SSLConnection

__all__ = ["SharedContextSSLConnection"]


class SharedContextSSLConnection(SSLConnection):
    """redis-py's asyncio ``SSLConnection`` on one given ``ssl_context``.

    Every ``ssl_*`` argument is ignored: the context decides verification, versions and
    client certificates. The server name sent and verified is ``host``.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(
                f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}"
            )
        super().__init__(**kwargs)
        # RedisSSLContext.get() returns a context already set as it is.
        self.ssl_context.context = ssl_context
