"""`centerloss list`: what has been trained under an output folder, one line per run, sweeps grouped.

It reads each run folder's config.json and metrics.csv (no torch, no checkpoint) and writes nothing:
whether a run is training now is asked of its lock without taking it.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig, planned_train_images
from .core.schedule import epochs_left, steps_per_epoch, total_steps
from .errors import CenterLossError
from .runfiles import (
    CONFIG_JSON,
    DIVERGED,
    LOCK,
    METRICS_CSV,
    RECORD,
    SWEEPS,
    read_metrics,
    read_record,
    recorded_runs,
    settings_of,
)
from .schema import number_text


@dataclass
class Listed:
    name: str
    config: TrainConfig
    done: int  # epochs finished
    total: int  # epochs the settings ask for
    last: dict[str, float]  # the last finished epoch's metrics ({} before the first)
    state: str  # finished, stopped, running or diverged

    def line(self) -> str:
        c = self.config
        result = (f"{100 * self.last['test_acc']:6.2f}%  ratio {self.last['test_ratio']:.3f}" if self.last
                  else "no epoch finished yet")
        return (f"{self.name}  {c.dataset}  λ {number_text(c.lam)}  α {number_text(c.alpha)}  seed {c.seed}  "
                f"epoch {self.done}/{self.total}  {result}  {self.state}")


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds the run's lock (it is training), asked without taking or writing it."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this took


def describe(run_dir: Path) -> Listed:
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
    return Listed(run_dir.name, config, len(history), epochs_left(0, total, steps_per_epoch(config, n_train)), last,
                  state)


def sweeps_of(root: Path) -> dict[str, list[str]]:
    """Each sweep folder's name and the names of the runs its record lists (none where it is damaged)."""
    found = {}
    for record in sorted((root / SWEEPS).glob(f"*/{RECORD}")):
        try:
            found[record.parent.name] = recorded_runs(record.parent) or []
        except CenterLossError:
            found[record.parent.name] = []
    return found


def listing(root: Path) -> list[str]:
    """The lines `centerloss list` prints: each sweep with its runs, then the runs of no sweep."""
    if not root.is_dir():
        raise CenterLossError(f"{root} is not a folder; expected an output folder such as outputs")
    runs: dict[str, Listed | str] = {}
    for d in sorted(p for p in root.iterdir() if (p / CONFIG_JSON).is_file()):
        try:
            runs[d.name] = describe(d)
        except CenterLossError as e:
            runs[d.name] = f"{d.name}  cannot be read: {e}"
    lines, shown = [], set()
    for sweep, names in sweeps_of(root).items():
        lines.append(f"sweep {sweep}/ ({len(names)} run{'s' if len(names) != 1 else ''})")
        for name in names:
            entry = runs.get(name, f"{name}  missing")
            lines.append("  " + (entry.line() if isinstance(entry, Listed) else entry))
            shown.add(name)
    alone = [entry for name, entry in runs.items() if name not in shown]
    if alone and lines:
        lines.append("runs of no sweep:")
    lines += [("  " if len(lines) else "") + (e.line() if isinstance(e, Listed) else e) for e in alone]
    return lines or [f"no runs under {root}/ yet: centerloss train puts them there"]
