"""Files that are never half-written: temp file + fsync + rename, and one lock per run folder."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO, Callable, Iterator

from .errors import CenterLossError


class StorageError(CenterLossError):
    """A file could not be written (full disk, no permission); what was there before is intact."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temp file beside `path`; only a complete, synced file replaces `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """`write(f)` into a binary temp file, then rename it over `path`."""
    with atomic_open(path, "wb") as f:
        write(f)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder: a `.lock` file holding the owner's pid.

    A lock whose pid no longer runs was left by a killed process and is taken over.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def holder(self) -> int | None:
        """The pid of a live process that holds the lock, or None (no lock, or a stale one)."""
        try:
            pid = int(self.path.read_text().strip() or "0")
        except (OSError, ValueError):
            return None
        return pid if pid and pid != os.getpid() and _pid_alive(pid) else None

    def check_free(self) -> None:
        if (pid := self.holder()) is not None:
            raise CenterLossError(f"run folder {self.path.parent} is in use by another process (pid {pid})")

    def acquire(self) -> "RunLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.check_free()
                # Stale: its owner is gone. Remove it and try again.
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise CenterLossError(f"could not lock run folder {self.path.parent}")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temp files of writes that a killed process never finished (call with the lock held)."""
    stale = [p for p in Path(folder).rglob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)
