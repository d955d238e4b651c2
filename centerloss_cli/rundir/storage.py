"""Files that are never half-written: temp file + fsync + rename; and the removal of the temp files a
killed writer left, which are recognised by their name and their writer's death, never by a pattern a
user's own file could match."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import IO, Callable, Iterator

from ..errors import StorageError

# .NAME.centerloss-tmp-PID-TOKEN: a temp file of atomic_open, written by process PID. TOKEN is 12 random hex
# digits: nobody can plant a link at the next name, and no user's file is taken for ours by its name alone.
TEMP_MARK = ".centerloss-tmp-"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)" + re.escape(TEMP_MARK) + r"(?P<pid>[0-9]+)-[0-9a-f]{12}")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(6)}")


def _create_exclusively(path: Path) -> tuple[Path, int]:
    """A new temp file beside `path`, created by this call and no one else's: O_EXCL never opens what is
    there already (a file, or a link planted to send the write elsewhere); a taken name draws another."""
    for _ in range(100):
        tmp = temp_path(path)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(path.parent))


def open_temp(path: Path, mode: str) -> tuple[Path, IO]:
    """The temp file of an atomic write of `path`, open in `mode`, and its name."""
    tmp, fd = _create_exclusively(path)
    return tmp, os.fdopen(fd, mode)


def writer_of(path: Path) -> int | None:
    """The pid that wrote `path`, when it is a temp file of atomic_open; None for any other file."""
    m = _TEMP_NAME.fullmatch(path.name)
    return int(m.group("pid")) if m else None


def storage_error(path: Path, e: OSError) -> StorageError:
    """A failed write, in one line that says truly what is left: where the folder itself is gone (deleted or
    moved while a run trained) there is no previous version to speak of."""
    if e.errno == errno.ENOENT and not path.parent.is_dir():
        return StorageError(f"could not write {path}: its folder {path.parent} is gone (deleted or moved while "
                            "this ran); nothing more is written there")
    reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return StorageError(f"could not write {path}: {reason}; the previous version is intact")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temp file beside `path`; only a complete, synced file replaces `path`."""
    path = Path(path)
    remove_dead_writers_files(path.parent)
    tmp = None
    try:
        tmp, f = open_temp(path, mode)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(e, OSError):
            raise storage_error(path, e) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """`write(f)` into a binary temp file, then rename it over `path`."""
    with atomic_open(path, "wb") as f:
        write(f)


def alive(pid: int) -> bool:
    """Whether process `pid` may still be running (another user's is taken as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or no pid at all: leave its file alone
    return True


def remove_dead_writers_files(folder: Path, recursive: bool = False) -> int:
    """Delete the temp files in `folder` (and below it) whose writer died, a `plot` killed mid-write, say;
    a live writer's file stays, and so does every file that is not one of ours."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.rglob(f"*{TEMP_MARK}*") if recursive else folder.glob(f"*{TEMP_MARK}*"):
        pid = writer_of(p)
        if pid is not None and p.is_file() and not p.is_symlink() and not alive(pid):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed += 1
    return removed

