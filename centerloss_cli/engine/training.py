"""Whole runs: settle their settings, open their folders, load the data, restore or start each run, and hand
them to the one epoch loop with the policy of what an epoch leaves (commit.py). `train` is the Python API's
`centerloss train`; `train_stacked` is `sweep --batched`.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..core.state import new_state
from ..core.step import MEMBER_SETTINGS
from ..dataset.fetch import data_fingerprint
from ..dataset.loading import LoadedData, load_dataset
from ..errors import CenterLossError, Interrupted
from ..plots import tensorboard
from ..procs.stop import describe
from ..rundir.files import CHECKPOINT, CONFIG_JSON
from ..rundir.folder import RunFolder, RunResult, named_for_data
from ..rundir.records import environment, read_record
from ..settings.config import SCHEMA, TrainConfig, fit_to_run
from ..settings.devices import check_fits, choose_precision, emulated_bf16_warning, resolve_device
from ..settings.voice import Voice
from .commit import Commit
from .loop import run_epochs
from .run import Run, restore
from .runtime import Runtime, entered, show_bars

# Held while a process trains: torch's random generator, its thread count and the signal handlers belong to
# the whole process, so two trainings in two threads of one would change each other's runs. It is process
# state because what it guards is; the second is refused in one line (alone_in_this_process).
TRAINING_IN_THIS_PROCESS = threading.Lock()


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, runtime: Runtime | None = None,
          progress: bool = True, explicit: frozenset[str] | None = None, position: int | None = None) -> RunResult:
    """Train one run into config.run_dir; with resume=True, continue it exactly where its checkpoint
    stopped (or start it, if it has not started). Returns the run folder, its settings and its history.

    `runtime` is the caller's (a CLI command's, a sweep's); without one, this call makes its own, with
    plots drawn by a background process and errors that name Python arguments. `explicit` names the
    fields the user gave (a resume takes only those); `position` places the progress bar among others.
    """
    with entered(runtime) as rt:
        return train_runs(rt, [config], resume=resume, overwrite=overwrite, explicit=explicit, progress=progress,
                          position=position)[0]


def train_stacked(configs: Sequence[TrainConfig], *, runtime: Runtime | None = None,
                  progress: bool = True) -> list[RunResult]:
    """Train (or resume, or skip when finished) every config, unfinished ones stacked into one model.
    Runs that stand at different points (say, one was resumed alone) are stacked in groups."""
    check_stackable(configs)
    with entered(runtime) as rt:
        return train_runs(rt, list(configs), resume=True, progress=progress)


def train_job(configs: Sequence[TrainConfig], batched: bool, runtime: Runtime) -> list[RunResult]:
    """One job's runs (a Slurm job's): stacked into one model with `batched`, else in turn; each resumed, or
    skipped when finished."""
    if batched:
        return train_stacked(configs, runtime=runtime, progress=False)
    return [train(c, resume=True, runtime=runtime, progress=False) for c in configs]


def check_stackable(configs: Sequence[TrainConfig]) -> None:
    """Members of one stacked model may differ in lambda and alpha only (core.step.MEMBER_SETTINGS)."""
    first = configs[0]
    for c in configs[1:]:
        differ = [k for k in SCHEMA if k not in MEMBER_SETTINGS and getattr(first, k) != getattr(c, k)]
        if differ:
            keys = ", ".join(SCHEMA[k].key for k in differ)
            raise CenterLossError(
                f"runs trained as one stacked model may differ in lambda and alpha only, not in {keys}")


def settle(config: TrainConfig, device: torch.device, resume: bool, say: Callable[[str], None]) -> TrainConfig:
    """The config as it trains: fitted to its run's length (settings.config.fit_to_run, each note said), and
    --precision auto resolved for `device`, where a run begun elsewhere in the other precision goes on in
    its own. The one place a run's (or a sweep's) settings are settled before it is named."""
    config, notes = fit_to_run(config)
    for note in notes:
        say(f"Note: {note}")
    return choose_precision(config, device, started_in(device, resume), say)


def started_in(device: torch.device, resume: bool) -> Callable[[TrainConfig], bool]:
    """For --precision auto: whether a resume finds the run of a config begun in its precision (its
    config.json records it); without resume, nothing counts as begun."""
    def started(config: TrainConfig) -> bool:
        if not resume:
            return False
        path = named_for_data(config, fingerprint_of(config)).run_dir
        if not (path / CONFIG_JSON).is_file():
            return False
        try:
            return read_record(path).get("precision") == config.precision
        except CenterLossError:
            return False
    return started


def fingerprint_of(config: TrainConfig) -> str:
    """The data's fingerprint: verified data is the dataset's own, or loading it fails; other data
    (--no-verify) is read to know it."""
    return data_fingerprint(config.data_dir, config.verify, config.dataset)


def train_runs(rt: Runtime, configs: list[TrainConfig], *, resume: bool, overwrite: bool = False,
               explicit: frozenset[str] | None = None, progress: bool = True,
               position: int | None = None) -> list[RunResult]:
    """Open every run folder (checked and locked), then train those that are not complete, each group of
    runs that stand at the same point through one loop. Everything is checked before the first folder
    changes."""
    device = resolve_device(configs[0].device)
    rt.plots.for_device(device.type)
    # A sweep settled its runs' settings before naming them, and said so once: its runs do not say it again.
    quiet = rt.say if not rt.voice.sweep else (lambda message: None)
    configs = [settle(c, device, resume, quiet) for c in configs]
    with ExitStack() as stack:
        stack.enter_context(alone_in_this_process())
        folders = [open_folder(rt, stack, c, resume, overwrite, explicit) for c in configs]
        if any(f.config.plots for f in folders):
            rt.plots.start()  # its imports overlap the data loading
        results = {f.path: f.finish(rt.plots) for f in folders if f.complete}
        todo = [f for f in folders if not f.complete]
        if todo:
            results |= train_folders(rt, stack, todo, device, progress, position)
        return [results[f.path] for f in folders]


@contextmanager
def alone_in_this_process() -> Iterator[None]:
    """Train only while no other thread of this process does; a second is refused rather than mixed in."""
    if not TRAINING_IN_THIS_PROCESS.acquire(blocking=False):
        raise CenterLossError("another thread of this process is training: torch's random generator and thread "
                              "count belong to the whole process, so runs train one at a time in a process; start "
                              "the second in a process of its own (or run them as a sweep)")
    try:
        yield
    finally:
        TRAINING_IN_THIS_PROCESS.release()


def open_folder(rt: Runtime, stack: ExitStack, config: TrainConfig, resume: bool, overwrite: bool,
                explicit: frozenset[str] | None) -> RunFolder:
    """A run's folder, checked and locked until `stack` closes."""
    known: dict[tuple, str] = {}

    def fingerprint(c: TrainConfig) -> str:  # read once per data: --no-verify data is hashed whole
        key = (c.data_dir, c.verify, c.dataset)
        if key not in known:
            known[key] = fingerprint_of(c)
        return known[key]

    folder = RunFolder.open(named_for_data(config, fingerprint(config)), fingerprint, resume=resume,
                            overwrite=overwrite, explicit=explicit, voice=rt.voice)
    stack.callback(folder.close)
    if resume and not folder.path.exists() and not rt.voice.sweep:  # a sweep starts its runs as a rule
        rt.say(f"no run at {folder.path} yet: it starts now")
    return folder


def new_run(folder: RunFolder, n_train: int, device: torch.device, voice: Voice) -> Run:
    """A run's state: new, or its checkpoint loaded; a checkpoint that does not fit is refused before the
    folder changes."""
    run = Run(new_state(folder.config, n_train, device), threads=torch.get_num_threads(),
              fingerprint=folder.fingerprint)
    if folder.checkpoint is not None:
        try:
            restore(run, folder.checkpoint)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CenterLossError(f"{folder.path / CHECKPOINT} does not fit this run ({str(e).splitlines()[0][:200]}); "
                                  f"use {voice.option('overwrite')} to start again") from None
    return run


def train_folders(rt: Runtime, stack: ExitStack, todo: list[RunFolder], device: torch.device, progress: bool,
                  position: int | None) -> dict[Path, RunResult]:
    """Load the data, check that every run fits it, then train the runs, each group that stands at the same
    point through one loop. Nothing is written before every check has passed."""
    config = todo[0].config
    data = load_dataset(config.data_dir, device, config.train_limit, config.test_limit, config.verify,
                        dataset=config.dataset, say=rt.say)
    for f in todo:
        f.check_data(len(data.train), data.fingerprint)
        check_fits(f.config, len(data.train), device)
    if any(f.config.tensorboard for f in todo):
        tensorboard.check_available()
    runs = [new_run(f, len(data.train), device, rt.voice) for f in todo]
    # Said once every check has passed (a refused run says only why), and by a sweep once for all its runs.
    warning = emulated_bf16_warning(config, device, todo[0].checkpoint is not None)
    if warning and not rt.voice.sweep:
        rt.say(warning)
    if rt.stop.requested:  # a stop while the data loaded: nothing has been written yet, so leave it so
        raise Interrupted(f"{describe(rt.stop.signum)} before training; nothing was written", rt.stop.signum)
    groups: dict[tuple[int, ...], list[tuple[RunFolder, Run]]] = {}
    for f, run in zip(todo, runs):
        f.create(environment(device))
        f.repair()
        f.draw_missing(rt.plots, run.state.epoch)
        if f.config.tensorboard:
            run.tensorboard = stack.enter_context(tensorboard.Logger(f.path, run.history))
        s = run.state
        groups.setdefault((s.epoch, s.step, s.total_steps, run.threads), []).append((f, run))
    return {f.path: result for group in groups.values() for f, result in train_group(rt, group, data, progress,
                                                                                     position)}


def train_group(rt: Runtime, group: list[tuple[RunFolder, Run]], data: LoadedData, progress: bool,
                position: int | None) -> list[tuple[RunFolder, RunResult]]:
    """Runs that stand at the same point, through one loop to their end."""
    runs = [run for _, run in group]
    start = runs[0].state.epoch
    named = len(runs) > 1 or position is not None  # several bars or runs at once: each line names its run
    commit = Commit(runs, data, rt.stop, rt.plots, rt.voice, rt.say, named)
    run_epochs(runs, data, commit, rt.stop, show_bars(progress), position)
    return [(f, f.result(run.state.epoch - start, run.history)) for f, run in group]
