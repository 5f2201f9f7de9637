"""Resumption for code that does not use the pool: an ``SSLContext`` that resumes by itself.

:func:`aiotlspool.enable_resumption` sets ``sslobject_class`` and ``sslsocket_class`` on an
existing context, so that every library taking an ``ssl.SSLContext`` (asyncio streams and
``start_tls``, uvloop, aiohttp, httpx, anyio, requests, urllib3...) offers a cached session
before each handshake and stores the sessions the server sends. Built on the session engine API
(:mod:`aiotlspool.engines.base`) and the session store (:mod:`aiotlspool.sessions`).

- :mod:`.stats`: the per-context counters and their snapshot;
- :mod:`.state`: the per-context state, the per-connection link, names and keys;
- :mod:`.classes`: the ``SSLObject`` / ``SSLSocket`` subclasses set on the context;
- :mod:`.context`: ``enable_resumption``, ``disable_resumption``, ``resumption_stats``.
"""
