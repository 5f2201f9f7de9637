"""aiohttp: key a resuming context's sessions per port, through a client middleware.

>>> ctx = enable_resumption(ssl.create_default_context())         # doctest: +SKIP
>>> async with aiohttp.ClientSession(                               # doctest: +SKIP
...     connector=aiohttp.TCPConnector(ssl=ctx), middlewares=[resumption_middleware]
... ) as session: ...

Client middlewares are public aiohttp API since 3.12. Each request runs inside
:func:`~aiotlspool.resumption_endpoint` for its server name and port, and aiohttp opens the
connection inside the request (in tasks it starts from there, which inherit the hint). aiohttp is
not imported here: the middleware reads only the request's URL and ``server_hostname``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .ports import resumption_endpoint

__all__ = ["resumption_middleware"]

Response = TypeVar("Response")
_TLS_SCHEMES = frozenset({"https", "wss"})


async def resumption_middleware(
    request: Any, handler: Callable[[Any], Awaitable[Response]]
) -> Response:
    """An aiohttp client middleware: the request's TLS connection keys sessions by port too."""
    url = request.url
    name = getattr(request, "server_hostname", None) or url.raw_host
    if url.scheme not in _TLS_SCHEMES or not name or url.port is None:
        return await handler(request)
    with resumption_endpoint(name, url.port):
        return await handler(request)
