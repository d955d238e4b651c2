"""Files that are never half-written: temp file + fsync + rename."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO, Callable, Iterator

from .errors import StorageError


TEMP_GLOB = ".*.tmp-*"  # the temp files of atomic_open: .NAME.tmp-PID


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temp file beside `path`; only a complete, synced file replaces `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove_orphans(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError):
            reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise StorageError(f"could not write {path}: {reason}; the previous version is intact") from e
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or no pid at all: leave its file alone
    return True


def _remove_orphans(path: Path) -> None:
    """Delete the temp files in `path`'s folder whose writer died (a `plot` killed mid-write, say), so
    that they do not pile up in folders that no resume tidies; a live writer's file stays."""
    for tmp in path.parent.glob(TEMP_GLOB):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isascii() and pid.isdigit() and not _alive(int(pid)) and is_temp_file(tmp):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """`write(f)` into a binary temp file, then rename it over `path`."""
    with atomic_open(path, "wb") as f:
        write(f)


def is_temp_file(path: Path) -> bool:
    """Whether `path` is the temp file of an atomic write (see atomic_open)."""
    return path.name.startswith(".") and ".tmp-" in path.name and path.is_file()


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temp files of writes that a killed process never finished (call with the lock held)."""
    stale = [p for p in Path(folder).rglob(TEMP_GLOB) if is_temp_file(p)]
    for p in stale:
        p.unlink()
    return len(stale)
