"""anyio (asyncio and trio backends): connect with TLS, keying sessions per port.

>>> ctx = enable_resumption(ssl.create_default_context())         # doctest: +SKIP
>>> stream = await connect_tls("example.org", 443, ssl_context=ctx)  # doctest: +SKIP

:func:`anyio.connect_tcp` is public anyio API; this calls it with ``tls=True`` inside
:func:`~aiotlspool.resumption_endpoint`. anyio wraps the connection in the calling task (or, for
a context of an ``SSLContext`` subclass, in a worker thread that inherits the hint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ports import resumption_endpoint

if TYPE_CHECKING:
    import ssl

__all__ = ["connect_tls"]


async def connect_tls(
    remote_host: str,
    remote_port: int,
    *,
    ssl_context: ssl.SSLContext,
    tls_hostname: str | None = None,
    **kwargs: Any,
) -> Any:
    """``anyio.connect_tcp(remote_host, remote_port, tls=True, ssl_context=..., ...)`` with the
    sessions of ``ssl_context`` (made resuming by :func:`~aiotlspool.enable_resumption`) keyed
    by server name and port. Returns anyio's TLS stream; other keyword arguments go to anyio.
    """
    import anyio  # the integration's own dependency: imported only when used

    name = tls_hostname or remote_host
    with resumption_endpoint(name, remote_port):
        return await anyio.connect_tcp(
            remote_host,
            remote_port,
            tls=True,
            ssl_context=ssl_context,
            tls_hostname=tls_hostname,
            **kwargs,
        )
