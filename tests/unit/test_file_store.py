"""FileSessionCache beyond the store contract (tests/unit/test_cache.py): restarts, privacy of
the directory, entries refused when tampered with, key rotation, encryption, several processes
and threads, I/O errors.

Sessions are real native sessions (tests/support/stores.py); a real second process resuming
through a real server is in tests/pool/test_file_store.py.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import resource
import secrets
import shutil
import signal
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from aiotlspool import EntrySealer, FileSessionCache, SessionKey
from aiotlspool.engines.libssl import NativeSession
from aiotlspool.sessions import private_files
from aiotlspool.sessions.file_entries import EntryName, key_dir_name, seal_entry

from ..support.helpers import FORK, key, make_session, run, run_forked
from ..support.memory_tls import libssl_or_skip_module
from ..support.stores import SECRET, native_record

libssl_or_skip_module()

IS_ROOT = os.geteuid() == 0
NOBODY = 65534


def new_store(directory: Path, **options: object) -> FileSessionCache:
    options.setdefault("secret", SECRET)
    return FileSessionCache(directory, **options)  # type: ignore[arg-type]


def entry_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.entry"))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


# -- surviving a restart ----------------------------------------------------------------------


def test_a_new_instance_on_the_same_directory_finds_the_sessions(directory: Path) -> None:
    first = new_store(directory)
    tls12, tls13 = native_record("TLSv1.2"), native_record("TLSv1.3")
    run(first.put(key("a"), tls12))
    run(first.put(key("b"), tls13))
    del first
    again = new_store(directory)
    assert again.size() == 2
    got = run(again.get(key("b")))
    assert isinstance(got.handle, NativeSession) and got.engine == "native"
    assert got.handle.to_der() == tls13.handle.to_der()
    assert (got.session_id, got.lifetime, got.created_at) == (
        tls13.session_id,
        tls13.lifetime,
        tls13.created_at,
    )
    assert run(new_store(directory).get(key("b"))) is None  # a ticket is taken once, anywhere
    for _ in range(2):  # a TLS 1.2 session stays for every instance
        assert run(new_store(directory).get(key("a"))).session_id == tls12.session_id


def test_file_names_hold_no_server_name_and_entries_no_plain_der(directory: Path) -> None:
    cache = new_store(directory)
    record = native_record("TLSv1.2")
    run(cache.put(key("secret-host.example"), record))
    [entry] = entry_files(directory)
    assert "secret-host" not in str(entry.relative_to(directory))
    assert record.handle.to_der() not in entry.read_bytes()  # (base64 in a sealed envelope)


# -- a private directory -----------------------------------------------------------------------


def test_directory_is_created_0700_and_entries_0600_whatever_the_umask(directory: Path) -> None:
    old = os.umask(0)
    try:
        cache = new_store(directory)
        run(cache.put(key(), native_record()))
    finally:
        os.umask(old)
    [entry] = entry_files(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711, 0o701, 0o770])
def test_a_directory_open_to_group_or_others_is_refused(directory: Path, mode: int) -> None:
    directory.mkdir()
    os.chmod(directory, mode)
    with pytest.raises(PermissionError, match=re.escape(repr(str(directory))) + ".*chmod 700"):
        new_store(directory)


def test_a_directory_of_another_user_is_refused(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory.mkdir(mode=0o700)
    if IS_ROOT:
        os.chown(directory, NOBODY, NOBODY)
    else:  # (only root can give a directory away: pretend to be someone else instead)
        monkeypatch.setattr(private_files, "_uid", lambda: os.geteuid() + 1)
    with pytest.raises(PermissionError, match=re.escape(repr(str(directory))) + ".*belongs"):
        new_store(directory)


def test_a_symlink_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(PermissionError, match="symbolic link"):
        new_store(tmp_path / "link")


# -- refused entries ---------------------------------------------------------------------------


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _zero_the_mac(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-32] + bytes(32))


def _unsigned_export(path: Path) -> None:
    # What Pool.export_session writes: a well-formed envelope, but nothing vouches for it.
    record = native_record("TLSv1.2")
    envelope = {"format": "aiotlspool-session", "version": 2, "server_hostname": "a.test"}
    envelope["der"] = base64.b64encode(record.handle.to_der()).decode()
    path.write_bytes(json.dumps(envelope).encode())


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "one byte flipped": (_flip_a_byte, "tampered"),
    "MAC replaced": (_zero_the_mac, "tampered"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:40]), "corrupt"),
    "emptied": (lambda p: p.write_bytes(b""), "corrupt"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(900)), "corrupt"),
    "an unsigned export": (_unsigned_export, "corrupt"),
    "readable by others": (lambda p: os.chmod(p, 0o644), "unsafe file"),
    "a symlink": (lambda p: (p.unlink(), p.symlink_to("/etc/hostname")), "unsafe file"),
    "a directory": (lambda p: (p.unlink(), p.mkdir()), "unsafe file"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_a_damaged_entry_is_refused_counted_and_deleted(
    directory: Path, damage: str, version: str
) -> None:
    run(new_store(directory).put(key(), native_record(version)))
    [entry] = entry_files(directory)
    spoil, reason = DAMAGE[damage]
    spoil(entry)
    cache = new_store(directory)  # (another process: the writer remembers what it wrote)
    assert run(cache.get(key())) is None
    assert cache.rejections == Counter({reason: 1}) and cache.rejected_entries == 1
    assert not os.path.lexists(entry) and cache.size() == 0
    assert not list(entry.parent.glob(".claim-*"))


def test_an_entry_of_another_owner_is_refused(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(new_store(directory).put(key(), native_record("TLSv1.2")))
    [entry] = entry_files(directory)
    if IS_ROOT:
        os.chown(entry, NOBODY, NOBODY)
    else:
        monkeypatch.setattr(private_files, "_uid", lambda: os.geteuid() + 1)
    cache = new_store(directory)
    assert run(cache.get(key())) is None
    assert cache.rejections == Counter({"unsafe file": 1})


def test_the_writer_offers_its_own_copy_and_never_the_damaged_file(directory: Path) -> None:
    # An entry never changes under its name, so the instance that wrote (or verified) it keeps
    # the parsed session rather than parsing the DER again (~250 us) at every get.
    writer = new_store(directory)
    record = native_record("TLSv1.2")
    run(writer.put(key(), record))
    [entry] = entry_files(directory)
    entry.write_bytes(os.urandom(900))
    assert run(writer.get(key())) is record
    assert writer.rejected_entries == 0
    reader = new_store(directory)
    assert run(reader.get(key())) is None and reader.rejections == Counter({"corrupt": 1})
    assert run(writer.get(key())) is None  # gone from disk: gone for the writer too


def test_an_entry_signed_with_an_unknown_key_is_refused_as_foreign(directory: Path) -> None:
    run(new_store(directory).put(key(), native_record("TLSv1.2")))
    other = new_store(directory, secret=secrets.token_bytes(32))
    assert run(other.get(key())) is None
    assert other.rejections == Counter({"foreign": 1}) and other.size() == 0


def test_an_entry_moved_under_another_key_is_refused(directory: Path) -> None:
    cache = new_store(directory)
    run(cache.put(key("a.test"), native_record("TLSv1.2")))
    run(cache.put(key("b.test"), native_record("TLSv1.2")))
    [a_entry] = (directory / key_dir_name(key("a.test").store_id())).glob("*.entry")
    [b_entry] = (directory / key_dir_name(key("b.test").store_id())).glob("*.entry")
    b_entry.unlink()
    os.link(a_entry, b_entry.parent / a_entry.name)  # a.test's session filed under b.test
    assert run(cache.get(key("b.test"))) is None
    assert cache.rejections == Counter({"tampered": 1})
    assert run(cache.get(key("a.test"))) is not None  # the original is untouched


def test_a_file_that_is_no_entry_is_refused(directory: Path) -> None:
    cache = new_store(directory)
    run(cache.put(key(), native_record("TLSv1.2")))
    [entry] = entry_files(directory)
    (entry.parent / "notes.txt").write_text("hello")
    assert run(cache.get(key())) is not None
    assert cache.rejections == Counter({"foreign file": 1})
    assert not (entry.parent / "notes.txt").exists()


def test_expiry_is_decided_by_the_authenticated_contents_not_the_name(directory: Path) -> None:
    sealer = EntrySealer(SECRET)
    cache = new_store(directory, secret=sealer)
    # Authentic, but its server lifetime (10 s from 60 s ago) has run out; its name lies.
    record = native_record("TLSv1.2", lifetime=10, created_at=time.time() - 60)
    name, sealed = seal_entry(sealer, record, key(), time.time_ns(), "0" * 16)
    fresh = EntryName(name.stored_ns, 10**10, name.tls13, name.tag, name.writer)
    key_dir = directory / key_dir_name(key().store_id())
    key_dir.mkdir(mode=0o700)
    private_files.write_atomically(str(key_dir), fresh.file_name, sealed, fsync=False)
    assert run(cache.get(key())) is None
    assert cache.expired == 1 and cache.rejected_entries == 0 and cache.size() == 0


def test_the_readers_ttl_applies_to_what_others_stored(directory: Path) -> None:
    run(new_store(directory, ttl=3600).put(key(), native_record("TLSv1.2")))
    reader = new_store(directory, ttl=0.05)
    time.sleep(0.1)
    assert run(reader.get(key())) is None and reader.expired == 1


# -- what is not stored ------------------------------------------------------------------------


def test_sessions_of_the_stdlib_engine_are_skipped_and_counted(directory: Path) -> None:
    cache = new_store(directory)
    run(cache.put(key(), make_session()))  # (a stdlib session cannot be serialized)
    assert cache.skipped_puts == 1 and cache.size() == 0


def test_client_certificate_sessions_are_stored_only_when_asked(directory: Path) -> None:
    with_cert = SessionKey(1, "a.test", 443, verification="v", client_certificate=True)
    cache = new_store(directory)
    run(cache.put(with_cert, native_record()))
    assert cache.skipped_puts == 1 and cache.size() == 0
    asked = new_store(directory, store_client_certificate_sessions=True)
    run(asked.put(with_cert, native_record()))
    assert asked.size() == 1 and run(asked.get(with_cert)) is not None


def test_the_same_session_is_stored_once(directory: Path) -> None:
    cache = new_store(directory)
    record = native_record()
    run(cache.put(key(), record))
    run(cache.put(key(), record))
    assert cache.size() == 1


# -- rotation and encryption -------------------------------------------------------------------


def test_key_rotation_old_keys_verify_the_new_key_signs(directory: Path) -> None:
    old_key, new_key = secrets.token_bytes(32), secrets.token_bytes(32)
    run(new_store(directory, secret=old_key).put(key("a"), old := native_record("TLSv1.2")))
    rotating = new_store(directory, secret=EntrySealer(new_key, verification_keys=[old_key]))
    assert run(rotating.get(key("a"))).session_id == old.session_id
    run(rotating.put(key("b"), new := native_record("TLSv1.2")))
    # The new entry is signed with the new key alone: a process that only knows the new key
    # reads it, one that only knows the old key refuses it.
    assert run(new_store(directory, secret=new_key).get(key("b"))).session_id == new.session_id
    still_old = new_store(directory, secret=old_key)
    assert run(still_old.get(key("b"))) is None
    assert still_old.rejections == Counter({"foreign": 1})


def test_encrypted_entries_read_back_and_hold_nothing_in_clear(directory: Path) -> None:
    pytest.importorskip("cryptography")
    encryption_key = secrets.token_bytes(32)
    cache = new_store(directory, secret=EntrySealer(SECRET, encryption_key=encryption_key))
    record = native_record("TLSv1.2")
    run(cache.put(key("secret-host.example"), record))
    [entry] = entry_files(directory)
    data = entry.read_bytes()
    der = record.handle.to_der()
    for clear in (b"secret-host", b"aiotlspool-session", base64.b64encode(der), der):
        assert clear not in data
    assert run(cache.get(key("secret-host.example"))).session_id == record.session_id
    # The MAC key alone does not open it: without the encryption key it is foreign.
    plain = new_store(directory)
    assert run(plain.get(key("secret-host.example"))) is None
    assert plain.rejections == Counter({"foreign": 1})


def test_encryption_key_rotation(directory: Path) -> None:
    pytest.importorskip("cryptography")
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    writer = new_store(directory, secret=EntrySealer(SECRET, encryption_key=old))
    run(writer.put(key(), record := native_record("TLSv1.2")))
    rotated = EntrySealer(SECRET, encryption_key=new, decryption_keys=[old])
    assert run(new_store(directory, secret=rotated).get(key())).session_id == record.session_id


def test_sealer_refuses_short_or_non_bytes_keys() -> None:
    with pytest.raises(ValueError, match="signing_key must be at least 32"):
        EntrySealer(b"x" * 31)
    with pytest.raises(TypeError, match="signing_key must be bytes"):
        EntrySealer("x" * 40)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="verification_keys"):
        EntrySealer(SECRET, verification_keys=[b"short"])
    with pytest.raises(ValueError, match="encryption_key must be at least 32"):
        EntrySealer(SECRET, encryption_key=b"short")
    with pytest.raises(ValueError, match="at least 32"):
        FileSessionCache("/nonexistent-never-created", secret=b"short")


def test_reprs_show_no_key(directory: Path) -> None:
    sealer = EntrySealer(SECRET, encryption_key=SECRET[::-1])
    text = repr(sealer) + repr(new_store(directory, secret=sealer))
    assert SECRET.hex() not in text and SECRET[::-1].hex() not in text and "encrypts=True" in text


def test_encryption_without_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ImportError, match=re.escape("aiotlspool[encryption]")):
        EntrySealer(SECRET, encryption_key=secrets.token_bytes(32))
    EntrySealer(SECRET)  # authentication alone needs only the standard library


def test_the_sealer_binds_entries_to_their_associated_data() -> None:
    sealer = EntrySealer(SECRET)
    sealed = sealer.seal(b"payload", b"key one")
    assert sealer.open(sealed, b"key one") == b"payload"
    with pytest.raises(ValueError, match="MAC does not match") as caught:
        sealer.open(sealed, b"key two")
    assert caught.value.reason == "tampered"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "options",
    [{"max_entries": 0}, {"ttl": 0}, {"tickets_per_endpoint": 0}, {"fsync": "yes"}],
)
def test_invalid_options_are_refused(directory: Path, options: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError), match=next(iter(options))):
        new_store(directory, **options)


# -- processes and threads ---------------------------------------------------------------------


def take_all(cache: FileSessionCache, limit: int = 1000) -> list[bytes]:
    """The ids of every session taken until the store has none (at most ``limit``: a store
    that handed a ticket out again would otherwise never run dry)."""
    taken = []
    for _ in range(limit):
        got = cache.get_nowait(key())
        if got is None:
            break
        taken.append(got.session_id)
    return taken


def test_each_ticket_is_claimed_by_exactly_one_process(directory: Path) -> None:
    """Four processes store tickets and take them at the same time; every ticket is taken
    exactly once (what the children leave, the parent takes)."""
    options = {"tickets_per_endpoint": 100, "fsync": False}
    new_store(directory, **options)
    native_record()  # (made before the fork: the children reuse its handshake)
    processes, per_process = 4, 12
    start = FORK.Barrier(processes)

    def worker() -> tuple[list[bytes], list[bytes], int, int]:
        cache = new_store(directory, **options)
        start.wait()
        written, taken = [], []
        for _ in range(per_process):
            record = native_record()
            written.append(record.session_id)
            cache.put_nowait(key(), record)
            got = cache.get_nowait(key())
            if got is not None:
                taken.append(got.session_id)
        taken += take_all(cache)
        return written, taken, cache.rejected_entries, cache.failed_operations

    outcomes = run_forked([worker] * processes)
    parent = new_store(directory, **options)
    leftover = take_all(parent)
    written = [sid for outcome in outcomes for sid in outcome[0]]
    taken = [sid for outcome in outcomes for sid in outcome[1]] + leftover
    assert len(written) == processes * per_process
    assert Counter(taken) == Counter(written)  # each exactly once
    assert all(outcome[2:] == (0, 0) for outcome in outcomes)
    assert {len(outcome[1]) for outcome in outcomes} != {0}


def test_each_ticket_is_claimed_by_exactly_one_thread(directory: Path) -> None:
    cache = new_store(directory, tickets_per_endpoint=100, fsync=False)
    stored = [native_record() for _ in range(60)]
    for record in stored:
        cache.put_nowait(key(), record)
    taken: list[bytes] = []
    start = threading.Barrier(4)

    def take() -> None:
        start.wait()
        taken.extend(take_all(cache))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert Counter(taken) == Counter(record.session_id for record in stored)


def test_writers_in_several_processes_stay_near_the_bound(directory: Path) -> None:
    """Each writer recounts when its own count passes the bound: the store ends within the
    bound plus what the others wrote since they last counted."""
    options = {"max_entries": 20, "fsync": False}
    new_store(directory, **options)
    native_record("TLSv1.2")
    processes, per_process = 4, 15

    def worker(number: int) -> None:
        cache = new_store(directory, **options)
        for i in range(per_process):
            cache.put_nowait(key(f"h{number}-{i}.test"), native_record("TLSv1.2"))

    run_forked([functools.partial(worker, n) for n in range(processes)])
    assert len(entry_files(directory)) <= 20 + processes


def test_invalidate_where_reads_only_this_processs_entries_also_after_fork(directory: Path) -> None:
    cache = new_store(directory)
    old = SessionKey(7, "a.test", 443, verification="old")
    new = SessionKey(7, "a.test", 443, verification="new")
    elsewhere = SessionKey(7, "b.test", 443, verification="old")
    run(cache.put(old, native_record("TLSv1.2")))
    run(cache.put(new, native_record("TLSv1.2")))

    def another_process() -> None:  # (the same instance, forked: a process of its own)
        cache.put_nowait(elsewhere, native_record("TLSv1.2"))

    run_forked([another_process])
    assert cache.size() == 3
    seen: list[SessionKey] = []

    def stale(key: SessionKey) -> bool:
        seen.append(key)
        return key.context == 7 and key.verification == "old"

    assert run(cache.invalidate_where(stale)) == 1
    assert sorted(seen, key=repr) == sorted([old, new], key=repr)  # rebuilt exactly
    assert run(cache.get(old)) is None
    assert run(cache.get(new)) is not None
    assert run(cache.get(elsewhere)) is not None  # another process's: kept


# -- never suspending, never raising -----------------------------------------------------------


def test_every_operation_completes_without_suspending(directory: Path) -> None:
    cache = new_store(directory)
    record = native_record()
    for coro in (
        cache.put(key(), record),
        cache.get(key()),
        cache.invalidate(key(), record),
        cache.invalidate(key()),
        cache.invalidate_where(lambda k: True),
        cache.clear(),
    ):
        with pytest.raises(StopIteration):
            coro.send(None)


def test_a_file_in_place_of_a_key_directory_is_an_io_error_counted_not_raised(
    directory: Path,
) -> None:
    cache = new_store(directory)
    (directory / key_dir_name(key().store_id())).write_bytes(b"")
    run(cache.put(key(), native_record()))
    assert run(cache.get(key())) is None
    assert cache.failed_operations >= 2 and cache.size() == 0


def test_a_removed_store_directory_is_not_made_again_with_other_permissions(
    directory: Path,
) -> None:
    cache = new_store(directory)
    shutil.rmtree(directory)
    run(cache.put(key(), native_record()))
    assert cache.failed_operations == 1 and not directory.exists()
    assert run(cache.get(key())) is None


def test_a_failed_write_is_counted_and_leaves_no_file(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = new_store(directory)
    run(cache.put(key("other"), native_record()))  # (the key directory exists, and one entry)
    previous_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, hard))  # an entry is ~1.4 KB: EFBIG
    try:
        run(cache.put(key(), native_record()))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_signal)
    assert cache.failed_operations == 1 and "put failed" in caplog.text
    assert cache.size() == 1 and not list(directory.glob("*/.tmp-*"))
    run(cache.put(key(), native_record()))  # and it works again
    assert cache.size() == 2


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only directories")
def test_a_read_only_directory_counts_failed_puts(directory: Path) -> None:
    cache = new_store(directory)
    os.chmod(directory, 0o500)
    try:
        run(cache.put(key(), native_record()))
        assert cache.failed_operations == 1 and run(cache.get(key())) is None
    finally:
        os.chmod(directory, 0o700)


def test_stale_temporary_files_are_cleaned_up(directory: Path) -> None:
    cache = new_store(directory)
    run(cache.put(key(), native_record("TLSv1.2")))
    [entry] = entry_files(directory)
    # (A claimed file's age is its ctime - set by the rename - which a test cannot backdate.)
    stale, fresh = entry.parent / ".tmp-dead", entry.parent / ".tmp-in-flight"
    for path in (stale, fresh):
        path.write_bytes(b"x")
    long_ago = time.time() - 3600
    os.utime(stale, (long_ago, long_ago))
    assert run(cache.get(key())) is not None
    assert not stale.exists() and fresh.exists()
    assert cache.rejected_entries == 0
