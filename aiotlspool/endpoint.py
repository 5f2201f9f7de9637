"""Where a connection goes: host, port and the TLS server name."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A server the pool connects to.

    ``server_hostname`` is the name sent as SNI and checked against the certificate. It equals
    ``host`` unless overridden; an empty string disables both (only with a context whose
    ``check_hostname`` is False).
    """

    host: str
    port: int
    server_hostname: str
    # Endpoints key several dicts on every checkout: hash once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.host, self.port, self.server_hostname)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def create(cls, host: str, port: int, server_hostname: str | None = None) -> Endpoint:
        """Validate user input and build an endpoint (ValueError/TypeError on bad input)."""
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        # bool is an int subclass; a port of True is a bug in the caller, not port 1.
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, got {port!r}")
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port} (host {host!r})")
        if server_hostname is None:
            server_hostname = host
        elif not isinstance(server_hostname, str):
            raise TypeError(f"server_hostname must be a str or None, got {server_hostname!r}")
        _check_name("host", host, host, port)
        if server_hostname:
            _check_name("server_hostname", server_hostname, host, port)
        return cls(host, port, server_hostname)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.server_hostname == self.host:
            return f"{host}:{self.port}"
        return f"{host}:{self.port} (server_hostname={self.server_hostname!r})"


def _check_name(what: str, name: str, host: str, port: int) -> None:
    """Reject names that the resolver and ssl would fail on with a bare error, before any I/O."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        # NUL cuts a C string short (so the name checked would not be the name given).
        raise ValueError(f"invalid {what} {name!r} for {host!r} port {port}: control character")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        try:
            name.encode("idna")
        except UnicodeError as exc:
            raise ValueError(f"invalid {what} {name!r} for {host!r} port {port}: {exc}") from None
