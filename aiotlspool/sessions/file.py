"""A session store in a directory: survives restarts, shared by one user's processes on a host.

Layout (private to the user: directories 0700, files 0600; names and contents in
:mod:`~aiotlspool.sessions.file_entries`)::

    DIRECTORY/
      <key dir>/       one per SessionKey.store_id() (its SHA-256, 64 hex digits)
        <stored ns>-<server deadline>-<12|13>-<session tag>-<writer>.entry
        .tmp-*         being written (renamed into place when complete)
        .claim-*       a TLS 1.3 ticket being taken by one process

Entries are sealed (HMAC-SHA256, optionally encrypted) and bound to their key directory: one
edited, truncated, signed with an unknown key, moved under another key or with unsafe
permissions is refused, deleted and counted (``rejected_entries``) - never offered.

A TLS 1.3 ticket is taken by renaming its entry to a name of the taker's own: the rename
succeeds for exactly one process (or thread). A TLS 1.2 session is read in place and stays;
its file's mtime marks the use (the bound drops the least recently used).

Every operation is a few small synchronous file operations: the async methods never suspend
(so the synchronous ``enable_resumption`` path can drive them too), and they never raise for
an I/O error: it is counted (``failed_operations``) and logged, a put stores nothing and a get
misses.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from .._validate import count, seconds
from ..engines.libssl import NativeSession, NativeUnavailable
from ..engines.libssl_load import load_libssl
from . import file_entries as entries
from . import private_files as files
from .cached import CachedSession
from .file_dir import StoreDirectory
from .key import SessionKey
from .sealing import EntrySealer
from .store import SessionCache

__all__ = ["FileSessionCache"]

_KNOWN_MAX = 1024


class FileSessionCache(SessionCache):
    """Sessions in files under ``directory``, shared by the processes of one user on one host.

    Args:
        directory: created 0700 when missing; an existing one must be a directory (not a
            symlink) of this user with no access for group or others (PermissionError naming
            it otherwise: stored sessions are secrets).
        secret: the key that authenticates entries (at least 32 random bytes), or an
            :class:`~aiotlspool.EntrySealer` for key rotation or encryption. Every process
            sharing the directory needs it.
        ttl: the longest a session is offered after it was stored, in seconds; the server's
            lifetime hint shortens it, and 7 days caps it. Enforced when read, by the reader.
        max_entries: how many sessions the store holds; beyond it the least recently used are
            deleted (``evicted``). A writing process recounts when its own count passes the
            bound and every few seconds, so other processes' writes may exceed it briefly.
        tickets_per_endpoint: TLS 1.3 tickets kept per key (one TLS 1.2 session per key).
        reuse_tls13_tickets: hand a TLS 1.3 ticket out more than once (RFC 8446 C.4 advises
            against it).
        store_client_certificate_sessions: also store sessions of contexts with a client
            certificate (skipped by default: see docs/security.md).
        fsync: sync each entry before renaming it into place (durable across a power loss;
            without it a crash may leave a torn entry, which is refused when read).

    Only sessions of the native engine can be stored (the standard library cannot serialize
    an ``SSLSession``): others are skipped and counted (``skipped_puts``). RuntimeError where
    the native binding is unavailable.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        secret: bytes | EntrySealer,
        ttl: float = 3600.0,
        max_entries: int = 4096,
        tickets_per_endpoint: int = 8,
        reuse_tls13_tickets: bool = False,
        store_client_certificate_sessions: bool = False,
        fsync: bool = True,
    ) -> None:
        for name, flag in [
            ("reuse_tls13_tickets", reuse_tls13_tickets),
            ("store_client_certificate_sessions", store_client_certificate_sessions),
            ("fsync", fsync),
        ]:
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.ttl = seconds("ttl", ttl)
        self.max_entries = count("max_entries", max_entries, minimum=1)
        self.tickets_per_endpoint = count("tickets_per_endpoint", tickets_per_endpoint, minimum=1)
        self.reuse_tls13_tickets = reuse_tls13_tickets
        self.store_client_certificate_sessions = store_client_certificate_sessions
        self.fsync = fsync
        self._sealer = secret if isinstance(secret, EntrySealer) else EntrySealer(secret)
        try:
            self._libssl = load_libssl()
        except NativeUnavailable as exc:
            raise RuntimeError(
                "FileSessionCache stores sessions of the native engine, whose libssl binding "
                f"is unavailable here: {exc}"
            ) from None
        self._dir = StoreDirectory(os.fspath(directory))
        self._last_ns = 0
        # Sessions of entries written or verified here, by key directory + file name.
        self._known: OrderedDict[str, tuple[CachedSession, float]] = OrderedDict()
        self._known_max = _KNOWN_MAX
        self._dir.sweep(self.ttl, None)

    @property
    def directory(self) -> str:
        """The store's directory (absolute)."""
        return self._dir.path

    # -- the SessionCache interface (never suspends) ------------------------------------

    async def get(self, key: SessionKey) -> CachedSession | None:
        return self.get_nowait(key)

    async def put(self, key: SessionKey, session: CachedSession) -> None:
        self.put_nowait(key, session)

    async def invalidate(self, key: SessionKey, session: CachedSession | None = None) -> None:
        """Forget ``session`` (found by its session id) or every session of ``key``."""
        directory = self._key_dir(key)
        tag = None if session is None else entries.session_tag(session.session_id)
        for entry in self._dir.entries_in(directory):
            if tag is None or entry.tag == tag:
                files.remove(os.path.join(directory, entry.file_name))
        if session is None:
            files.rmdir(directory)

    async def invalidate_where(self, stale: Callable[[SessionKey], bool]) -> int:
        """Drop the entries whose key ``stale`` names. An entry's key is rebuilt from its
        authenticated contents; its ``context``, a number that means something in one process
        only, is the one it was stored under for entries this process wrote, and 0 - no
        context of this process, which the pool's rules never name - for the others. So only
        this process's own entries are read (the file name says whose an entry is)."""
        dropped = 0
        for directory in self._dir.key_dirs():
            dir_name = os.path.basename(directory)
            for entry in self._dir.entries_in(directory):
                if entry.writer != _process.token:
                    continue
                path = os.path.join(directory, entry.file_name)
                payload = self._read(path, dir_name)
                if payload is None:
                    continue
                try:
                    key = entries.key_of(payload, dir_name, _process.token)
                except entries.EntryRefused as exc:
                    self._dir.reject(path, exc.reason)
                    continue
                if stale(key) and files.remove(path):
                    dropped += 1
        return dropped

    async def clear(self) -> None:
        with self._dir.lock:
            self._known.clear()
        for directory in self._dir.key_dirs():
            for entry in self._dir.entries_in(directory):
                files.remove(os.path.join(directory, entry.file_name))
            files.rmdir(directory)

    def size(self) -> int:
        """Sessions stored now (by every process), after dropping the expired ones."""
        return self._dir.sweep(self.ttl, None)

    @property
    def expired(self) -> int:
        return self._dir.counts["expired"]

    @property
    def evicted(self) -> int:
        return self._dir.counts["evicted"]

    @property
    def skipped_puts(self) -> int:
        """Sessions not stored because they may not be (another engine's, a client
        certificate's)."""
        return self._dir.counts["skipped"]

    @property
    def failed_operations(self) -> int:
        """I/O errors: the put stored nothing, the get missed (each logged as a warning)."""
        return self._dir.counts["failed"]

    @property
    def rejected_entries(self) -> int:
        """Entries refused - corrupt, tampered, foreign key, unsafe file, other binding -
        deleted and never offered; :attr:`rejections` counts them by reason."""
        with self._dir.lock:
            return sum(self._dir.rejections.values())

    @property
    def rejections(self) -> Counter[str]:
        """Refused entries by reason (a copy)."""
        with self._dir.lock:
            return Counter(self._dir.rejections)

    def lifetime_of(self, session: CachedSession) -> float:
        """Seconds ``session`` may stay in this store from now (0 or less: do not store)."""
        return min(self.ttl, entries.server_lifetime_left(session))

    # -- taking and storing ---------------------------------------------------------------

    def get_nowait(self, key: SessionKey) -> CachedSession | None:
        """Take a session for ``key``, newest first (what :meth:`get` does)."""
        dir_name = entries.key_dir_name(key.store_id())
        directory = self._dir.key_dir(dir_name)
        now = time.time()
        for entry in sorted(self._dir.entries_in(directory), key=lambda e: -e.stored_ns):
            path = os.path.join(directory, entry.file_name)
            if entry.expired(now, self.ttl):
                self._dir.drop(path, "expired")
                continue
            claim = entry.tls13 and not self.reuse_tls13_tickets
            readable = path
            if claim:
                readable = os.path.join(directory, files.CLAIM_PREFIX + secrets.token_hex(8))
                try:
                    os.rename(path, readable)  # exactly one taker gets each ticket
                except FileNotFoundError:
                    continue  # taken by another
                except OSError as exc:
                    self._dir.failed("claim", exc)
                    return None
            try:
                session = self._recall(dir_name, entry, claim) or self._session_of(
                    readable, dir_name, key, entry
                )
            finally:
                if claim:
                    files.remove(readable)
            if session is not None:
                if not claim:
                    files.touch(path)  # (the bound drops the least recently used)
                    self._remember(dir_name, entry, session)
                return session
        return None

    def _remember(self, dir_name: str, entry: entries.EntryName, session: CachedSession) -> None:
        """Keep the session of an entry this instance wrote or verified: parsing DER costs
        ~250 us (the server's certificate), and an entry never changes under its name."""
        with self._dir.lock:
            self._known[dir_name + entry.file_name] = (session, entry.stored_ns / 1e9)
            self._known.move_to_end(dir_name + entry.file_name)
            while len(self._known) > self._known_max:
                self._known.popitem(last=False)

    def _recall(self, dir_name: str, entry: entries.EntryName, take: bool) -> CachedSession | None:
        """The remembered session of an entry still on disk (a ticket: claimed by this
        process), if its lifetime allows; None to read the entry instead."""
        with self._dir.lock:
            name = dir_name + entry.file_name
            known = self._known.pop(name, None) if take else self._known.get(name)
        if known is None:
            return None
        session, stored_at = known
        lifetime = session.lifetime
        if time.time() >= entries.deadline(stored_at, session.created_at, lifetime, self.ttl):
            return None  # (read, found expired and counted)
        return session

    def put_nowait(self, key: SessionKey, session: CachedSession) -> None:
        """Store a session (what :meth:`put` does); never raises for an I/O error."""
        if not isinstance(session.handle, NativeSession):
            self._dir.count("skipped")  # (the standard library cannot serialize a session)
            return
        if key.client_certificate and not self.store_client_certificate_sessions:
            self._dir.count("skipped")
            return
        if self.lifetime_of(session) <= 0:
            return
        with self._dir.lock:
            stored_ns = self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name, sealed = entries.seal_entry(self._sealer, session, key, stored_ns, _process.token)
        dir_name = entries.key_dir_name(key.store_id())
        try:
            written = self._write(self._dir.key_dir(dir_name), name, sealed)
        except OSError as exc:
            self._dir.failed("put", exc)
            return
        if written:
            self._remember(dir_name, name, session)
            self._dir.written(self.ttl, self.max_entries)

    def _write(self, directory: str, new: entries.EntryName, sealed: bytes) -> bool:
        """Write one entry and apply the per-key rules; False if it was there already."""
        for attempt in range(2):
            existing = self._dir.entries_in(directory)
            if any(entry.tag == new.tag for entry in existing):
                return False  # the same session or ticket, stored twice: keep one copy
            same = []
            for entry in existing:  # a server that changed TLS version: the older kind goes
                if entry.tls13 != new.tls13:
                    self._dir.drop(os.path.join(directory, entry.file_name), "evicted")
                else:
                    same.append(entry)
            try:
                if not existing:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(directory, 0o700)  # (never the store's own: not recreated)
                files.write_atomically(
                    directory, new.file_name, sealed, fsync=self.fsync, mtime_ns=new.stored_ns
                )
            except FileNotFoundError:
                if attempt:
                    raise
                continue  # the directory was removed meanwhile (clear, sweep): once more
            keep = self.tickets_per_endpoint if new.tls13 else 1
            for entry in sorted(same, key=lambda e: -e.stored_ns)[keep - 1 :]:
                self._dir.drop(os.path.join(directory, entry.file_name), "evicted")
            return True
        raise AssertionError("unreachable")

    def _session_of(
        self, path: str, dir_name: str, key: SessionKey, entry: entries.EntryName
    ) -> CachedSession | None:
        """The session in the entry at ``path``, or None (counted) if it may not be offered.
        Anything but a usable session is deleted."""
        payload = self._read(path, dir_name)
        if payload is None:
            return None
        try:
            return entries.session_of(payload, key, entry, self._libssl, self.ttl)
        except entries.EntryExpired:
            self._dir.drop(path, "expired")
        except entries.EntryRefused as exc:
            self._dir.reject(path, exc.reason)
        return None

    def _read(self, path: str, dir_name: str) -> dict[str, Any] | None:
        """The authenticated payload of the entry at ``path``, or None (refused and deleted,
        gone, or unreadable)."""
        try:
            return entries.open_entry(self._sealer, files.read_private(path), dir_name)
        except FileNotFoundError:
            pass
        except files.UnsafeFile as exc:
            self._dir.reject(path, "unsafe file", str(exc))
        except entries.EntryRefused as exc:
            self._dir.reject(path, exc.reason)
        except OSError as exc:
            self._dir.failed("read", exc)
        return None

    def _key_dir(self, key: SessionKey) -> str:
        return self._dir.key_dir(entries.key_dir_name(key.store_id()))

    def __repr__(self) -> str:
        return f"<FileSessionCache {self.directory!r} {self._sealer!r}>"


class _Process:
    """Whose entries an entry's ``writer`` names: a token per process (new after fork)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)


_process = _Process()


def _after_fork_in_child() -> None:
    _process.token = secrets.token_hex(8)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
