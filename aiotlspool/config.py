"""The pool's settings, validated in one place and frozen.

:class:`PoolConfig` is built from :class:`~aiotlspool.Pool`'s keyword arguments; the pool and
the connector both read it. A mistyped option fails here, at construction, with the option's
name: ``"false"`` is not a bool, ``True`` is not a count, ``nan`` is not a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._validate import count, optional_seconds, seconds

# "socket": TLS on a non-blocking SSLSocket (aiotlspool.transports); "asyncio": the loop's own
# create_connection(ssl=); "auto": the socket path where it was measured faster.
TLS_TRANSPORTS = ("auto", "socket", "asyncio")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Limits, timeouts and session options of one pool (see :class:`~aiotlspool.Pool`)."""

    max_connections: int = 100
    max_connections_per_endpoint: int | None = None
    idle_timeout: float | None = 30.0
    max_lifetime: float | None = None
    connect_timeout: float | None = 10.0
    acquire_timeout: float | None = 30.0
    connect_retries: int = 2
    retry_backoff: float = 0.05
    require_resumption: bool = False
    share_sessions_across_ports: bool = False
    close_timeout: float = 2.0
    store_timeout: float = 0.5
    tls_transport: str = "auto"

    def __post_init__(self) -> None:
        count("max_connections", self.max_connections, minimum=1)
        if self.max_connections_per_endpoint is not None:
            count("max_connections_per_endpoint", self.max_connections_per_endpoint, minimum=1)
        count("connect_retries", self.connect_retries, minimum=0)
        for name in ("idle_timeout", "max_lifetime", "connect_timeout", "acquire_timeout"):
            optional_seconds(name, getattr(self, name))
        for name in ("retry_backoff", "close_timeout", "store_timeout"):
            seconds(name, getattr(self, name))
        if self.tls_transport not in TLS_TRANSPORTS:
            raise ValueError(
                f"tls_transport must be one of {TLS_TRANSPORTS}, got {self.tls_transport!r}"
            )
        for name in ("require_resumption", "share_sessions_across_ports"):
            if not isinstance(getattr(self, name), bool):  # "false" is truthy: never guess
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def per_endpoint_limit(self) -> int:
        """Connections open at once to one endpoint (``max_connections`` when not set)."""
        return self.max_connections_per_endpoint or self.max_connections
