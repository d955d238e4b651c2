"""A folder's lock: a kernel lock (flock) on its .lock file, held by the process that writes the folder (a run
training, a sweep writing its outputs), which dies with that process however it ends."""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ..errors import CenterLossError
from .files import LOCK
from .storage import atomic_write_bytes


class FolderLock:
    """A kernel lock (flock) on a folder's .lock, held while its descriptor is open: it dies with its process,
    however that ends. The file holds the holder's pid, only to name it in a refusal."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def acquire(path: Path, what: str = "run folder") -> FolderLock:
    """The folder's lock, taken at once or refused in one line naming its holder. A lock file that is a hard
    link (a `cp -al` snapshot shares it with the run it copied) is first replaced by a file of its own while
    the old one is held, so that the two folders no longer share a lock and nothing is written through the
    link; a lock file replaced meanwhile by another process is locked again where it now is."""
    lock_path = path / LOCK
    for _ in range(5):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise CenterLossError(f"{what} {path}: cannot lock {lock_path} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise CenterLossError(_in_use(path, what)) from None
            raise CenterLossError(f"{what} {path}: cannot lock {lock_path} ({e.strerror or e})") from None
        held = os.fstat(fd)
        try:
            now = os.stat(lock_path, follow_symlinks=False)
            same = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
        except OSError:
            same = False
        if same and held.st_nlink == 1:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return FolderLock(fd)
        try:
            if same:  # a hard link: a lock of the folder's own replaces it, while the shared one is held
                atomic_write_bytes(lock_path, b"")
        finally:
            os.close(fd)
    raise CenterLossError(f"{what} {path}: its lock file kept being replaced by another process; try again")


def _in_use(path: Path, what: str) -> str:
    try:
        pid = int((path / LOCK).read_text())
    except (OSError, ValueError):
        pid = None
    if pid == os.getpid():
        return f"{what} {path} is already open in this process: two runs of this command map to the same folder"
    holder = f" (pid {pid})" if pid else ""
    return f"{what} {path} is in use by another process{holder}"
