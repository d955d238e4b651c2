"""The run folder's life: opening it (checked and locked), resuming it with the settings it trained
with, creating it, emptying it on --overwrite, and repairing what a crash left.

What the folder holds, and how each file is read and written, is files.py's and records.py's.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import CenterLossError
from ..settings.config import SCHEMA, TrainConfig, resumable
from ..settings.voice import Voice
from .files import (
    CHECKPOINT,
    CONFIG_JSON,
    FEATURES,
    FORMAT,
    LOCK,
    MARK,
    METRICS_CSV,
    PLOTS,
    TENSORBOARD,
    contents,
    metrics_text,
    read_metrics,
    tool_files,
    unproven,
    write_mark,
    write_metrics,
)
from .lock import FolderLock, acquire
from .overwrite import delete_all_or_nothing, finish_interrupted_overwrites, interrupted_overwrites
from .records import OWN_KEYS, load_checkpoint, read_record, settings_of, write_config
from .storage import remove_dead_writers_files

# --- what a run is, and what the user may do about a refusal ------------------------------------------

@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    history: list[dict[str, float]]
    trained_epochs: int  # epochs trained by this call (0 when the run was already complete)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def data_suffix(dataset: str, fingerprint: str) -> str:
    """"_data" and the fingerprint's first 8 hex digits, for data that is not the dataset's own (only
    --no-verify lets such data through); "" for the dataset's own."""
    from ..dataset.fetch import DATASETS

    return "" if fingerprint == DATASETS[dataset].fingerprint else f"_data{fingerprint[:8]}"


def named_for_data(config: TrainConfig, fingerprint: str) -> TrainConfig:
    """The config, its default name suffixed for other data (data_suffix), so that runs on other data
    never share the dataset's folders."""
    suffix = data_suffix(config.dataset, fingerprint)
    return config if config.name is not None or not suffix else config.with_(name=config.run_name + suffix)


def reconcile(saved: TrainConfig, given: TrainConfig, explicit: frozenset[str] | None, voice: Voice,
              path: Path) -> TrainConfig:
    """The config of a resumed run: the saved one, with only the settings that may change taken from `given`.

    `explicit` names the fields the user gave (None: all of them). Where a run lives (its name and
    output folder) is where it was found: a moved or copied folder resumes."""
    keys = (set(SCHEMA) if explicit is None else set(explicit)) - {"name", "output_dir"}
    may_change = resumable(saved)
    differ = [k for k in sorted(keys, key=list(SCHEMA).index)
              if getattr(given, k) != getattr(saved, k) and k not in may_change]
    if differ:
        key = (lambda k: k) if voice.python else (lambda k: SCHEMA[k].key)  # noqa: E731
        shown = ", ".join(f"{key(k)}: saved {getattr(saved, k)!r}, given {getattr(given, k)!r}" for k in differ)
        raise CenterLossError(f"cannot resume {path}: its settings differ ({shown}); {voice.remedy()}")
    changes = {k: getattr(given, k) for k in keys & may_change}
    derived = saved.with_(name=None).run_name
    return saved.with_(**changes, name=None if path.name == derived else path.name, output_dir=str(path.parent))


def _check_writable(run_dir: Path) -> None:
    parent = run_dir
    while not parent.exists():
        if parent.is_symlink():  # exists() follows links: a dangling one, or a loop, ends here
            raise CenterLossError(f"{parent} is a symbolic link to nothing (dangling, or a loop); "
                                  "choose another output folder or name")
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CenterLossError(f"output folder {parent} is not writable; choose another output folder")


def _proven(path: Path, entries: set[str]) -> bool:
    """Whether the folder is the tool's: it holds the mark (a regular file), or a checkpoint that loads as one
    of the tool's, or a config.json that records every key of OWN_KEYS. Keys that many training scripts log
    (lambda, alpha, seed, torch_version) prove nothing by themselves."""
    if MARK in entries and (path / MARK).is_file() and not (path / MARK).is_symlink():
        return True
    if (path / CHECKPOINT).is_file():
        with contextlib.suppress(CenterLossError):
            load_checkpoint(path)
            return True
    if (path / CONFIG_JSON).is_file():
        with contextlib.suppress(CenterLossError):
            record = read_record(path)
            return OWN_KEYS <= set(record)
    return False


def _check_layout(path: Path) -> None:
    """The entries the tool would use have the kind it would make: a file where a folder should be (or
    the other way round, or a link for the lock) is refused before anything is written. A hard link is
    not refused: every file is replaced by a rename, never written through, and the lock is given a file
    of its own (acquire), so that a `cp -al` snapshot of a run resumes."""
    for name, is_dir in ((LOCK, False), (MARK, False), (CONFIG_JSON, False), (METRICS_CSV, False), (CHECKPOINT, False),
                         (FEATURES, True), (PLOTS, True), (TENSORBOARD, True)):
        p = path / name
        if not (p.exists() or p.is_symlink()):
            continue
        if p.is_symlink() or p.is_dir() != is_dir:
            kind = "a symbolic link" if p.is_symlink() else "a folder" if p.is_dir() else "a file"
            raise CenterLossError(f"{p} is {kind}, where the tool keeps its own {'folder' if is_dir else 'file'}; "
                                  "move it away, or choose another name")
        if not is_dir and not p.is_file():  # a FIFO or a device: reading it would hang the resume
            raise CenterLossError(f"{p} is not a regular file, where the tool keeps its own file; "
                                  "move it away, or choose another name")


class RunFolder:
    """One run folder, checked and locked while open: `with RunFolder.open(...) as run:`.

    Opening refuses a folder that is busy, occupied without resume or overwrite, holds a user's files
    and no run, or holds another run (other settings, other data). Nothing on disk changes until
    `create`, not even a lock file in a folder that is refused; call `create` only once everything
    else (the data above all) has been checked.
    """

    def __init__(self, config: TrainConfig, fingerprint: str, *, overwrite: bool = False,
                 checkpoint: dict[str, Any] | None = None, lock: FolderLock | None = None):
        self.config, self.fingerprint, self.overwrite = config, fingerprint, overwrite
        self.path = config.run_dir
        self.checkpoint = checkpoint
        self._lock = lock

    @classmethod
    def open(cls, config: TrainConfig, fingerprint: str | Callable[[TrainConfig], str], *, resume: bool = False,
             overwrite: bool = False, explicit: frozenset[str] | None = None, voice: Voice = Voice()) -> "RunFolder":
        """`fingerprint`: the data's, or how to get it for a config; a resume asks it for the data of the
        settings the run trained with, which the user need not give again."""
        fingerprint_of = fingerprint if callable(fingerprint) else (lambda c: fingerprint)
        if resume and overwrite:
            raise CenterLossError(f"{voice.option('resume')} and {voice.option('overwrite')} contradict each other: "
                                  "give one")
        path = config.run_dir
        if path.exists() and not path.is_dir():
            raise CenterLossError(f"run folder {path} exists and is not a folder")
        _check_writable(path)
        if not path.is_dir():
            return cls(config, fingerprint_of(config), overwrite=overwrite)
        if interrupted_overwrites(path):  # a killed --overwrite: finished (or undone) before anything is judged
            held = acquire(path)
            try:
                finish_interrupted_overwrites(path)
            finally:
                held.release()
        entries = contents(path)
        if entries and not _proven(path, entries):
            raise CenterLossError(f"{unproven(path, entries)} it is left alone, resume, overwrite or not; choose "
                                  "another name or output folder")
        if entries and not (resume or overwrite):
            raise CenterLossError(f"run folder {path} already exists: add {voice.option('resume')} to continue it or "
                                  f"{voice.option('overwrite')} to start again")
        _check_layout(path)
        lock = acquire(path)
        try:
            if resume:
                config, fingerprint, checkpoint = _resumed(path, config, fingerprint_of, explicit, voice)
                return cls(config, fingerprint, checkpoint=checkpoint, lock=lock)
            return cls(config, fingerprint_of(config), overwrite=overwrite, lock=lock)
        except BaseException:
            lock.release()
            raise

    @property
    def complete(self) -> bool:
        """Whether the checkpoint holds every step the config asks for, its last epoch finished."""
        from ..core.schedule import total_steps

        ckpt = self.checkpoint
        return ckpt is not None and ckpt["step"] >= total_steps(self.config, ckpt["n_train"]) and ckpt["batch"] == 0

    @property
    def history(self) -> list[dict[str, float]]:
        return list(self.checkpoint["history"]) if self.checkpoint else []

    def repair(self) -> None:
        """Bring what derives from the checkpoint in line with it, as a crash may have left it: temp files
        of killed writes go, metrics.csv is the checkpoint's history and config.json its settings.
        (The plots of saved epochs are drawn again by draw_missing.)"""
        remove_dead_writers_files(self.path, recursive=True)
        try:
            current = (self.path / METRICS_CSV).read_text(encoding="utf-8")
        except (OSError, ValueError):
            current = None
        if current != metrics_text(self.history):
            write_metrics(self.path, self.history)
        if self.config.plots:
            (self.path / PLOTS).mkdir(exist_ok=True)

    def draw_missing(self, plots: Any, epochs: int) -> None:
        """Queue on `plots` (the entry point's plots.service.PlotService) the plots of the first `epochs` epochs
        that a kill left undrawn; a --no-plots run has none."""
        if self.config.plots:
            plots.draw_missing(self.path, range(1, epochs + 1), self.config.plot_dpi)

    def finish(self, plots: Any) -> RunResult:
        """A complete run's result, its folder first repaired and its missing plots queued."""
        self.repair()
        self.draw_missing(plots, len(self.history))
        return self.result()

    def result(self, trained_epochs: int = 0, history: list[dict[str, float]] | None = None) -> RunResult:
        return RunResult(self.path, self.config, self.history if history is None else history, trained_epochs)

    def check_data(self, n_train: int, fingerprint: str) -> None:
        """A run trains only on the data it was opened for, and a checkpoint resumes only on as many
        training images as it was trained on."""
        if fingerprint != self.fingerprint:
            raise CenterLossError(f"run {self.path}: the data loaded ({fingerprint[:8]}) is not the data "
                                  f"checked when it was opened ({self.fingerprint[:8]}); did the files change?")
        if self.checkpoint is not None and self.checkpoint["n_train"] != n_train:
            raise CenterLossError(
                f"cannot resume {self.path}: it trained on {self.checkpoint['n_train']} images, this data has {n_train}"
            )

    def create(self, env: dict[str, str]) -> None:
        """Lay the folder out and record the settings: from here on the disk changes. Call `repair`
        next, which also removes the temp files of killed writes."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if self._lock is None:
                self._lock = acquire(self.path)
                if any(p.name != LOCK for p in self.path.iterdir()):
                    raise CenterLossError(f"run folder {self.path} was created by another process meanwhile")
            write_mark(self.path)  # a folder made before the mark existed gets it now
            if self.overwrite:
                delete_all_or_nothing(self.path, tool_files(self.path))
            (self.path / FEATURES).mkdir(exist_ok=True)  # plots/: by repair, where the run draws them
            write_config(self.path, self.config, {"format": FORMAT, "data_fingerprint": self.fingerprint, **env})
        except OSError as e:  # /proc, a read-only mount, a file that will not go: one line, not a traceback
            raise CenterLossError(f"run folder {self.path}: cannot write {e.filename or self.path} "
                                  f"({e.strerror or e})") from None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resumed(path: Path, given: TrainConfig, fingerprint_of: Callable[[TrainConfig], str],
             explicit: frozenset[str] | None, voice: Voice) -> tuple[TrainConfig, str, dict[str, Any] | None]:
    """The settings a resume trains with, the fingerprint of their data, and the checkpoint it resumes
    from (None: nothing trained yet).

    The checkpoint holds the settings the run trained with: it is the authority. config.json must
    agree with it (an edit by hand is refused), and may be missing: it is written again on create."""
    record = read_record(path) if (path / CONFIG_JSON).is_file() else None
    if record is not None and record.get("format") != FORMAT:
        raise CenterLossError(
            f"cannot resume {path}: it was made by an older centerloss (folder format {record.get('format', 1)}, "
            f"this one writes {FORMAT}: another network and schedule); {voice.remedy()}")
    checkpoint = load_checkpoint(path) if (path / CHECKPOINT).is_file() else None
    if checkpoint is None and (recorded := _recorded_epochs(path)):
        # Starting again would rewrite metrics.csv from an empty history: refuse, and touch nothing.
        raise CenterLossError(
            f"cannot resume {path}: its {CHECKPOINT} is missing, but {METRICS_CSV} records {recorded} finished "
            f"epoch(s); nothing was changed. Put {CHECKPOINT} back to resume, or use {voice.option('overwrite')} "
            "to start again, which deletes them")
    if checkpoint is not None:
        saved = settings_of(checkpoint["config"], path / CHECKPOINT)
        if record is not None:
            on_disk = settings_of(record, path / CONFIG_JSON)
            _check_not_edited(path, saved, on_disk)
            # What a resume may change (epochs, say) may be changed in config.json too.
            saved = saved.with_(**{k: getattr(on_disk, k) for k in resumable(saved)})
    elif record is not None:
        saved = settings_of(record, path / CONFIG_JSON)
    else:
        return given, fingerprint_of(given), None  # an empty folder: the run starts here
    config = reconcile(saved, given, explicit, voice, path)
    fingerprint = fingerprint_of(config)
    recorded = (checkpoint or {}).get("data_fingerprint") or (record or {}).get("data_fingerprint")
    if recorded is None and checkpoint is not None and data_suffix(config.dataset, fingerprint):
        raise CenterLossError(
            f"cannot resume {path}: it records no data fingerprint (an earlier version made it), so it resumes "
            f"only on the {config.dataset} files it was verified against, not on other data ({fingerprint[:8]}, "
            f"from {config.data_dir}); {voice.remedy()}")
    if recorded is not None and recorded != fingerprint:
        raise CenterLossError(
            f"cannot resume {path}: it was trained on other data (data fingerprint: saved {str(recorded)[:8]}, "
            f"given {fingerprint[:8]}, from {config.data_dir or '$CENTERLOSS_DATA or ./data'}); {voice.remedy()}")
    return config, fingerprint, checkpoint


def _check_not_edited(path: Path, trained: TrainConfig, on_disk: TrainConfig) -> None:
    """A config.json edited by hand would make a resume train on with other settings: any difference in
    a setting that a resume may not change is refused. Where the run lives is not what it trained with."""
    fixed = set(SCHEMA) - resumable(trained) - {"name", "output_dir"}
    differ = [k for k in SCHEMA if k in fixed and getattr(trained, k) != getattr(on_disk, k)]
    if differ:
        shown = ", ".join(f"{SCHEMA[k].key}: checkpoint {getattr(trained, k)!r}, {CONFIG_JSON} {getattr(on_disk, k)!r}"
                          for k in differ)
        raise CenterLossError(f"cannot resume {path}: its {CONFIG_JSON} was edited after training ({shown}); "
                              f"nothing was changed. Put the checkpoint's values back in {CONFIG_JSON} to resume, "
                              "or train the new settings as a new run")


def _recorded_epochs(path: Path) -> int:
    """How many finished epochs metrics.csv records (it is written only after their checkpoint)."""
    try:
        return len(read_metrics(path))
    except CenterLossError:
        return 0


def completed(config: TrainConfig, fingerprint: str, plots: Any, voice: Voice) -> RunResult | None:
    """The result of a run whose folder holds all of its epochs (repaired on the way: metrics.csv, temp
    files, missing plots, queued on `plots`); None when it has more to do. Opening checks the folder, so a
    sweep refuses a conflicting run before it trains any."""
    with RunFolder.open(config, fingerprint, resume=True, voice=voice) as folder:
        return folder.finish(plots) if folder.complete else None
