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
        if name.isascii():
            text = name  # what the IDNA codec would return for it (ASCII labels pass as-is)
        else:
            try:
                text = name.encode("idna").decode("ascii")
            except UnicodeError:
                return None
    else:
        return None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    # ASCII now: printable and no space means no control character, no DEL.
    if not text or not text.isprintable() or " " in text:
        return None
    return text
