"""Small files in a directory private to one user, shared by that user's processes.

What :class:`~aiotlspool.FileSessionCache` needs from the file system, each a few system calls:
a directory created 0700 (or refused when it is a symlink, another user's, or open to group or
others), files created 0600 and replaced atomically (temporary file, optional fsync, rename), and
reads that refuse anything but a regular file of this user that nobody else may read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time

__all__ = [
    "MAX_FILE_BYTES",
    "UnsafeFile",
    "Ledger",
    "private_directory",
    "read_private",
    "remove",
    "remove_stale_temporaries",
    "rmdir",
    "touch",
    "write_atomically",
]

MAX_FILE_BYTES = 64 * 1024
TEMP_PREFIX = ".tmp-"
CLAIM_PREFIX = ".claim-"
# A temporary or claimed file older than this was left by a process that died mid-operation.
STALE_AFTER = 60.0

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(ValueError):
    """A file that is not what this store writes: not a regular file, another owner, readable
    by others, or too large."""


def _uid() -> int:
    return os.geteuid()


def private_directory(path: str) -> str:
    """``path`` made absolute, created 0700 if missing; PermissionError naming it if an existing
    one is not a directory of this user closed to group and others."""
    path = os.path.abspath(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    else:
        os.chmod(path, 0o700)  # exactly 0700, whatever the umask
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise PermissionError(
            f"refusing the session store directory {path!r}: it is a symbolic link "
            "(give the real path of a directory of your own)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"the session store path {path!r} is not a directory")
    if st.st_uid != _uid():
        raise PermissionError(
            f"refusing the session store directory {path!r}: it belongs to uid {st.st_uid}, "
            f"not to this process's user (uid {_uid()}); stored sessions are secrets"
        )
    if st.st_mode & 0o077:
        raise PermissionError(
            f"refusing the session store directory {path!r}: mode "
            f"{stat.S_IMODE(st.st_mode):04o} lets group or others in; stored sessions are "
            f"secrets (chmod 700 {path!r})"
        )
    return path


def write_atomically(
    directory: str, name: str, data: bytes, *, fsync: bool, mtime_ns: int | None = None
) -> None:
    """Create ``directory/name`` (0600) holding ``data``, all or nothing: written to a
    temporary file, optionally synced, then renamed into place."""
    temp = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        os.replace(temp, os.path.join(directory, name))
    except BaseException:
        remove(temp)
        raise


def read_private(path: str) -> bytes:
    """The contents of ``path``; UnsafeFile if it is not a regular file of this user, closed to
    group and others, of at most MAX_FILE_BYTES. FileNotFoundError when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if _NOFOLLOW and exc.errno == errno.ELOOP:
            raise UnsafeFile("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile("not a regular file")
        if st.st_uid != _uid():
            raise UnsafeFile(f"owned by uid {st.st_uid}")
        if st.st_mode & 0o077:
            raise UnsafeFile(f"mode {stat.S_IMODE(st.st_mode):04o} opens it to others")
        if st.st_size > MAX_FILE_BYTES:
            raise UnsafeFile(f"{st.st_size} bytes")
        chunks = []
        left = MAX_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_FILE_BYTES:
            raise UnsafeFile("grew while being read")
        return data
    finally:
        os.close(fd)


def remove(path: str) -> bool:
    """Unlink ``path`` (or remove it if it is an empty directory); whether this call removed
    it. Never raises: False when it was gone already or cannot be removed."""
    try:
        os.unlink(path)
    except IsADirectoryError:
        try:
            os.rmdir(path)
        except OSError:
            return False
    except OSError:
        return False
    return True


class Ledger:
    """A file every process appends one byte to per event: its size counts the events of all.

    The file stays open (appends are atomic with O_APPEND, across processes and a fork); when
    it was removed or replaced, :meth:`add` says so once (None) and opens it again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def add(self) -> int | None:
        """Count one event; the ledger's size after, or None if it cannot be trusted now."""
        try:
            if self._fd < 0:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
                self._fd = os.open(self.path, flags, 0o600)
            os.write(self._fd, b"\n")
            st = os.fstat(self._fd)
        except OSError:
            self.close()
            return None
        if st.st_nlink == 0:  # removed (a store directory deleted and made again)
            self.close()
            return None
        return st.st_size

    def size(self) -> int:
        """The ledger's size (0 when missing or unreadable)."""
        try:
            return os.lstat(self.path).st_size
        except OSError:
            return 0

    def reset(self) -> None:
        with contextlib.suppress(OSError):
            os.truncate(self.path, 0)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def rmdir(directory: str) -> None:
    """Remove ``directory`` if it is empty (not empty: another process just wrote)."""
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def touch(path: str) -> None:
    """Set ``path``'s mtime to now, if it is still there."""
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(path, ns=(now, now))


def remove_stale_temporaries(directory: str, names: list[str]) -> None:
    """Remove the temporary and claimed files among ``names`` that a dead process left."""
    limit = time.time() - STALE_AFTER
    for name in names:
        if name.startswith((TEMP_PREFIX, CLAIM_PREFIX)):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            # A claim (a rename) keeps the file's mtime but sets its ctime.
            if (st.st_ctime if name.startswith(CLAIM_PREFIX) else st.st_mtime) < limit:
                remove(path)
