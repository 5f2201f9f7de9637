"""aiotlspool: an asyncio TLS connection pool that resumes TLS sessions on reconnect.

>>> async with Pool(ssl_context=ctx) as pool:                    # doctest: +SKIP
...     async with pool.connection("db.internal", 9042) as conn:
...         conn.writer.write(request)
...         reply = await conn.reader.readexactly(4)
...         conn.session_reused   # True when the handshake resumed a cached session
"""

from .connection import Connection
from .endpoint import Endpoint
from .exceptions import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    PoolClosed,
    PoolError,
    PoolTimeout,
    ResumptionRejected,
    TLSHandshakeError,
)
from .integrations.context import (
    disable_resumption,
    enable_resumption,
    resumption_cache,
    resumption_stats,
)
from .integrations.ports import resumption_endpoint
from .integrations.stats import ResumptionStats
from .pool import Pool
from .sessions.cached import CachedSession
from .sessions.file import FileSessionCache
from .sessions.key import SessionKey, session_key
from .sessions.memory import MemorySessionCache
from .sessions.redis_store import RedisSessionCache
from .sessions.sealing import EntrySealer
from .sessions.store import SessionCache
from .sessions.verification import set_trust_id
from .stats import PoolStats

__version__ = "0.1.0"

__all__ = [
    "CachedSession",
    "CertificateError",
    "ConnectError",
    "ConnectTimeout",
    "Connection",
    "Endpoint",
    "EntrySealer",
    "FileSessionCache",
    "MemorySessionCache",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "RedisSessionCache",
    "ResumptionRejected",
    "ResumptionStats",
    "SessionCache",
    "SessionKey",
    "TLSHandshakeError",
    "disable_resumption",
    "enable_resumption",
    "resumption_cache",
    "resumption_endpoint",
    "resumption_stats",
    "session_key",
    "set_trust_id",
]
