"""The port a resuming context's next connections go to, when the caller knows it.

``wrap_bio`` and ``wrap_socket`` never learn the port, so :func:`enable_resumption` keys
sessions by server name alone (as Go's and rustls' client caches do). Code that knows where it
connects can say so: inside :func:`resumption_endpoint` (or one of the library adapters built on
it) a connection to that server name keys its sessions per port, as the pool does, so two
servers behind one name with different ticket keys each keep their own sessions.

The hint is a :class:`contextvars.ContextVar`: it follows the task or thread that set it, and
the tasks and worker threads it starts (asyncio and anyio copy the context), and nothing else.
It only ever adds the port to a key: a hint for another name is ignored, so a stale hint can
cost a lost resumption, never a session offered to a name it was not verified for.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from .names import normalize_server_name

# (normalized server name, port) of the connections being opened, if the caller said.
_endpoint_hint: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "aiotlspool_resumption_endpoint", default=None
)


def endpoint_hint(host: object, port: object) -> tuple[str, int]:
    """Validate a (server name, port) pair and put it in the form the keys use."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port} (host {host!r})")
    name = normalize_server_name(host)
    if name is None:
        raise ValueError(f"not a server name: {host!r}")
    return name, port


@contextmanager
def resumption_endpoint(host: str | bytes, port: int) -> Iterator[None]:
    """Key the sessions of connections to ``host`` opened inside this block by ``port`` too.

    For contexts made resuming by :func:`~aiotlspool.enable_resumption`. ``host`` is the server
    name the connection sends and verifies (what the library passes as ``server_hostname``);
    connections to other names are not affected. Nestable; restored on exit.
    """
    token = _endpoint_hint.set(endpoint_hint(host, port))
    try:
        yield
    finally:
        _endpoint_hint.reset(token)


def set_endpoint_hint(host: str | bytes, port: int) -> None:
    """Set the hint for the rest of the current task or thread (for request hooks that have
    no "after": the next request sets its own)."""
    _endpoint_hint.set(endpoint_hint(host, port))


def hinted_port(server_name: str) -> int | None:
    """The port the caller said connections to ``server_name`` (normalized) go to, if any."""
    hint = _endpoint_hint.get()
    if hint is not None and hint[0] == server_name:
        return hint[1]
    return None
