"""Server names as the resumption keys hold them."""

from __future__ import annotations


def normalize_server_name(name: object) -> str | None:
    """The key's form of a server name (str or IDNA bytes): ASCII, lower case, no trailing
    dot. None for no name or one that cannot be a host name."""
    if isinstance(name, (bytes, bytearray)):
        try:
            text = bytes(name).decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(name, str):
        try:
            text = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    else:
        return None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if not text or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in text):
        return None
    return text
