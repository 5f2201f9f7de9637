"""The probe's target: ``HOST[:PORT]`` and host or server names, validated before any I/O.

Every check raises :class:`ProbeInputError`, so a bad target never reaches the network.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

DEFAULT_PORT = 443


class ProbeInputError(ValueError):
    """The target or an option is invalid (nothing was sent on the network)."""


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split and validate ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6
    address; :class:`ProbeInputError` (before any I/O) if it cannot be a target."""
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ProbeInputError(f"invalid target {text!r}: expected [IPV6] or [IPV6]:PORT")
        if host and not _is_ip(host, 6):
            raise ProbeInputError(f"invalid target {text!r}: {host!r} is not an IPv6 address")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a name, an IPv4 address or an unbracketed IPv6 address
    if not host:
        raise ProbeInputError(f"invalid target {text!r}: no host")
    check_name(host, "host")
    if port_text is None:
        return host, default_port
    # ASCII digits only: int() also takes other scripts' digits ("٨٠" is 80) and "1_0".
    if not re.fullmatch("[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ProbeInputError(
            f"invalid port {port_text!r} in {text!r}: expected 1..65535 in ASCII digits"
        )
    return host, int(port_text)


def check_name(name: str, what: str = "host") -> None:
    """Reject a host or server name that cannot be an IP address or a DNS name: empty, with
    a control, format or space character (a NUL would fail deep inside the connect), with a
    ":" but not an IPv6 address, or not encodable as IDNA. ``what`` names it in the error."""
    if not name:
        raise ProbeInputError(f"invalid {what}: empty")
    for char in name:
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise ProbeInputError(
                f"invalid {what} {name!r}: character U+{ord(char):04X} is not allowed"
            )
    if _is_ip(name):
        return
    if ":" in name:
        raise ProbeInputError(f"invalid {what} {name!r}: not an IPv6 address")
    try:
        name.encode("idna")
    except UnicodeError as exc:
        raise ProbeInputError(f"invalid {what} {name!r}: {exc.__cause__ or exc}") from None


def _is_ip(name: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return version is None or address.version == version


__all__ = ["DEFAULT_PORT", "ProbeInputError", "check_name", "parse_target"]
