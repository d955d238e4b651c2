"""`centerloss list`: what has been trained under an output folder, one line per run, sweeps grouped.

It reads each run folder's config.json and metrics.csv (no torch, no checkpoint) and writes nothing:
whether a run is training now is asked of its lock without taking it.
"""
from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..core.schedule import epochs_left, steps_per_epoch, total_steps
from ..errors import CenterLossError
from ..settings.config import TrainConfig, planned_train_images
from ..settings.schema import counted, number_text, printable
from .files import CONFIG_JSON, DIVERGED, LOCK, METRICS_CSV, RECORD, SWEEPS, read_metrics, recorded_runs, sweep_run
from .records import read_record, settings_of


@dataclass
class Listed:
    name: str
    config: TrainConfig
    done: int  # epochs finished
    total: int  # epochs the settings ask for
    last: dict[str, float]  # the last finished epoch's metrics ({} before the first)
    state: str  # finished, stopped, running or diverged

    def line(self) -> str:
        """name, dataset, λ, α, seed, epochs done of total, the last result, the state."""
        c = self.config
        result = (f"{100 * self.last['test_acc']:6.2f}%  ratio {self.last['test_ratio']:.3f}" if self.last
                  else "no epoch finished yet")
        return (f"{self.name}  {c.dataset}  λ {number_text(c.lam)}  α {number_text(c.alpha)}  seed {c.seed}  "
                f"epoch {self.done}/{self.total}  {result}  {self.state}")


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds the run's lock (it is training), asked without taking or writing it, and
    without waiting: a lock that is not a regular file (a FIFO would block the open) holds no run."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this took


def describe(run_dir: Path, name: str) -> Listed:
    """A run folder's line; CenterLossError where its config.json or metrics.csv cannot be read."""
    config = settings_of(read_record(run_dir), run_dir / CONFIG_JSON)
    history = read_metrics(run_dir) if (run_dir / METRICS_CSV).is_file() else []
    n_train = planned_train_images(config)
    total = total_steps(config, n_train)
    last = history[-1] if history else {}
    if is_locked(run_dir):
        state = "running"
    elif (run_dir / DIVERGED).is_file():
        state = "diverged"
    elif last and last["step"] >= total:
        state = "finished"
    else:
        state = "stopped"
    return Listed(name, config, len(history), epochs_left(0, total, steps_per_epoch(config, n_train)), last, state)


def walk(root: Path) -> tuple[list[Path], list[Path], int]:
    """Every run folder (one with a config.json) and every sweep folder (one with a sweep record) under
    `root`, at any depth, and how many folders were looked in. A run's own folders are not searched, and
    links to folders are not followed (a link back up would never end)."""
    runs, sweeps, looked = [], [], 0
    for top, dirs, files in os.walk(root):
        looked += 1
        here = Path(top)
        dirs.sort()
        if CONFIG_JSON in files:
            runs.append(here)
            dirs.clear()
        elif RECORD in files and here.parent.name == SWEEPS:
            sweeps.append(here)
            dirs.clear()
    return runs, sweeps, looked


def listing(root: Path) -> list[str]:
    """The lines `centerloss list` prints: each sweep with its runs, then the runs of no sweep, each named
    by its path under `root`, then what was looked at. It reads every file as untrusted: a damaged run is
    one line, and the others are still listed."""
    if not root.is_dir():
        raise CenterLossError(f"{printable(str(root))} is not a folder; expected an output folder such as outputs")
    run_dirs, sweep_dirs, looked = walk(root)
    runs: dict[Path, str] = {d: line_of(d, root) for d in run_dirs}
    lines, shown = [], set()
    for folder in sweep_dirs:
        try:
            names = recorded_runs(folder) or []
        except CenterLossError:
            names = []
        lines.append(f"sweep {shown_path(folder, root)}/ ({counted(len(names), 'run')})")
        for name in names:
            run = sweep_run(folder, name)
            lines.append("  " + runs.get(run, f"{shown_path(run, root)}  missing"))
            shown.add(run)
    alone = [line for d, line in runs.items() if d not in shown]
    if alone and lines:
        lines.append("runs of no sweep:")
    lines += [("  " if lines else "") + line for line in alone]
    under = f"under {printable(str(root))}/"
    if not runs:
        return [f"no runs {under} yet (looked in {counted(looked, 'folder')}): centerloss train puts them there"]
    return [*lines, f"{counted(len(runs), 'run')}, {counted(len(sweep_dirs), 'sweep')}; looked in "
                    f"{counted(looked, 'folder')} {under}"]


def line_of(run_dir: Path, root: Path) -> str:
    """A run's line, or the line that says why it cannot be read: a damaged file never stops the listing."""
    name = shown_path(run_dir, root)
    try:
        return describe(run_dir, name).line()
    except (CenterLossError, OSError, ValueError, KeyError, TypeError) as e:
        return f"{name}  cannot be read: {printable(str(e))}"


def shown_path(folder: Path, root: Path) -> str:
    """A folder as `list` names it: its path under the root (the root itself by its own name), printable."""
    relative = folder.relative_to(root)
    return printable(str(relative) if relative.parts else folder.name)
