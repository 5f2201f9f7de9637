"""Transports the pool can open connections with, besides ``loop.create_connection(ssl=)``.

- :mod:`.socket_tls`: :class:`SocketTLSTransport`, TLS on a non-blocking ``ssl.SSLSocket``
  driven by ``add_reader``/``add_writer``: less client CPU per resumed connect than asyncio's
  ``sslproto`` on the default loop, more than uvloop's own TLS
  (``scripts/socket_transport_cost.py``);
- :mod:`.socket_connect`: :func:`open_socket_tls`, TCP connect + handshake + transport;
- :mod:`.ssl_calls`, :mod:`.write_buffer`: what each non-blocking SSL call's outcome means,
  and the application's bytes ``SSL_write`` has not taken yet.

Internal to the package: not part of the public API.
"""

from .socket_connect import SocketTLSUnsupported, open_socket_tls, socket_tls_supported
from .socket_tls import SocketTLSTransport

__all__ = ["SocketTLSTransport", "SocketTLSUnsupported", "open_socket_tls", "socket_tls_supported"]
