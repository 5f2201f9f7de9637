"""What the connector and the pool keep about one open connection."""

from __future__ import annotations

from dataclasses import dataclass

from .connection import Connection
from .sessions.key import SessionKey


@dataclass(eq=False, slots=True)
class ConnectionRecord:
    """What the connector keeps about one open connection."""

    connection: Connection
    key: SessionKey
    # A session still to be captured the explicit way (the engine does not watch it).
    capture_pending: bool
    # The ticket a TLS 1.3 connection resumed with: seen again, it is not a new one.
    resumed_session_id: bytes
    closing: bool = False
