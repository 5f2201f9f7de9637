"""Sessions to entries and back for :class:`~aiotlspool.RedisSessionCache` (:class:`EntryCodec`):
which sessions may be stored, an entry's name and its sealing (deferred until it is written:
a ticket held back and taken by its own process is never sealed), and opening what a take
returned - through this process's copy when it wrote the entry, else verified and parsed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable

from ..engines.libssl import Libssl, NativeSession
from . import file_entries as entries
from . import redis_entries as data
from .cached import TLS13, CachedSession
from .file import _process
from .key import SessionKey
from .redis_local import Held, InProcess
from .redis_writer import Pending
from .sealing import EntrySealer

__all__ = ["EntryCodec"]


class EntryCodec:
    """One store's entries. ``lock``, ``counts`` and ``here`` are the store's; ``refuse``
    counts and logs a refused entry; ``keep`` TLS 1.3 tickets per key; ``client_certificates``:
    sessions of contexts with a client certificate are stored too."""

    def __init__(
        self,
        sealer: EntrySealer,
        libssl: Libssl,
        lock: threading.Lock,
        counts: Counter[str],
        here: InProcess,
        refuse: Callable[[str, str], None],
        *,
        ttl: float,
        keep: int,
        client_certificates: bool,
    ) -> None:
        self.sealer = sealer
        self.libssl = libssl
        self.lock = lock
        self.counts = counts
        self.here = here
        self.refuse = refuse
        self.ttl = ttl
        self.keep = keep  # TLS 1.3 tickets per key
        self.client_certificates = client_certificates
        self._last_ns = 0
        self._key_ids: dict[SessionKey, str] = {}  # (SHA-256 of the JSON store id: ~10 us)

    def key_id(self, key: SessionKey) -> str:
        """The id of ``key``'s entries in Redis."""
        key_id = self._key_ids.get(key)
        if key_id is None:
            if len(self._key_ids) >= 4096:
                self._key_ids.clear()
            key_id = self._key_ids[key] = entries.key_dir_name(key.store_id())
        return key_id

    def lifetime_of(self, session: CachedSession) -> float:
        return min(self.ttl, entries.server_lifetime_left(session))

    def entry_for(self, key: SessionKey, session: CachedSession, reusable: bool) -> Pending | None:
        """The entry to write for ``session`` (a reusable one also held in the local tier), or
        None (counted when it may not be stored)."""
        if not isinstance(session.handle, NativeSession) or (
            key.client_certificate and not self.client_certificates
        ):
            with self.lock:
                self.counts["skipped"] += 1
            return None
        server_left = entries.server_lifetime_left(session)
        lifetime = min(self.ttl, server_left)
        if lifetime <= 0:
            return None
        key_id = self.key_id(key)
        now = time.time()
        with self.lock:
            stored_ns = self._last_ns = max(time.time_ns(), self._last_ns + 1)
            name = data.name_of(session, stored_ns, _process.token, now + server_left)
            until = now + lifetime
            self.here.note(key_id, key)
            if reusable:
                self.here.hold(key_id, Held(session, until, name), reusable=True)
            elif self.here.local is not None and name.tls13:  # the server moved to TLS 1.3
                self.here.local.reusable.pop(key_id, None)
        return Pending(
            key_id,
            name,
            data.sealing(self.sealer, session, key, name),
            session,
            until,
            self.keep if session.tls_version == TLS13 else 1,
            math.ceil(lifetime * 1000) + data.EXPIRY_GRACE_MS,
            single_use=not reusable,
        )

    def open(self, element: bytes, key_id: str, key: SessionKey, taken: bool) -> Held | None:
        """The session of an entry read from ``key_id``'s list, or None (counted)."""
        name, sealed = data.split_element(element)
        if name is None:
            self.refuse(key_id, "corrupt")
            return None
        if self.here.local is not None:
            with self.lock:
                copy = self.here.local.copy_of(key_id, name, taken, time.time())
            if copy is not None:
                return copy
        try:
            payload = entries.open_entry(self.sealer, sealed, key_id)
            session = entries.session_of(payload, key, name, self.libssl, self.ttl)
        except entries.EntryExpired:
            with self.lock:
                self.counts["expired"] += 1
            return None
        except entries.EntryRefused as exc:
            self.refuse(key_id, exc.reason)
            return None
        stored_at = payload["stored_at"]
        until = entries.deadline(stored_at, session.created_at, session.lifetime, self.ttl)
        return Held(session, until, name)
