"""--overwrite's deletion of a run's files, all or nothing, and the finishing of one that a kill interrupted."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..errors import CenterLossError
from .files import FEATURES, PLOTS, TENSORBOARD
from .storage import TEMP_MARK, alive, temp_path, writer_of

# --overwrite moves the old run's files into a hidden folder of this name (a temp name of its writer's: see
# storage.temp_path), then deletes it; COMMITTED inside it says that every file was moved, so the deletion stands.
OVERWRITE = "overwrite"
COMMITTED = ".committed"


def delete_all_or_nothing(run_dir: Path, doomed: list[Path]) -> None:
    """Delete `doomed` (files of the run folder) all or none: each is first moved aside into a hidden
    folder, and if any will not move, those already moved go back and nothing is deleted. A kill in the
    middle is finished by the next open (finish_interrupted_overwrites): undone, or done."""
    trash = temp_path(run_dir / OVERWRITE)  # a name nobody can have planted
    trash.mkdir()
    moved: list[tuple[Path, Path]] = []
    try:
        for p in doomed:
            target = trash / p.relative_to(run_dir)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                p.rename(target)
            except OSError as e:
                raise CenterLossError(
                    f"overwrite: {p} cannot be deleted ({e.strerror or e}); nothing was deleted") from None
            moved.append((p, target))
        (trash / COMMITTED).touch()
    except BaseException:
        for p, target in reversed(moved):
            with contextlib.suppress(OSError):
                target.rename(p)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)
    for sub in (FEATURES, PLOTS, TENSORBOARD):  # a folder of the tool's goes when nothing of the user's is left in it
        with contextlib.suppress(OSError):
            (run_dir / sub).rmdir()


def interrupted_overwrites(run_dir: Path) -> list[Path]:
    """The trash folders of --overwrite calls that were killed before they finished (their writer is dead)."""
    prefix = f".{OVERWRITE}{TEMP_MARK}"
    return [p for p in run_dir.iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink()
            and (pid := writer_of(p)) is not None and not alive(pid)]


def finish_interrupted_overwrites(run_dir: Path) -> None:
    """A killed --overwrite is finished: done where it had moved every file (the deletion was decided),
    undone where it had not (each file goes back where it was; one whose place is taken stays in the trash)."""
    for trash in interrupted_overwrites(run_dir):
        if not (trash / COMMITTED).is_file():
            for moved in sorted(p for p in trash.rglob("*") if p.is_file() and not p.is_symlink()):
                back = run_dir / moved.relative_to(trash)
                if not (back.exists() or back.is_symlink()):
                    back.parent.mkdir(parents=True, exist_ok=True)
                    moved.rename(back)
            if any(p.is_file() for p in trash.rglob("*")):
                continue  # something could not go back: the trash stays, nothing is lost
        shutil.rmtree(trash, ignore_errors=True)
