"""Whole runs: open their folders, load the data, restore or start their states, and hand them to the
one epoch loop. `train` is the Python API's `centerloss train`; `train_stacked` is `sweep --batched`.
"""
from __future__ import annotations

import os
import resource
import threading
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from . import tensorboard
from .commit import Run
from .config import MAX_STEPS, SCHEMA, TrainConfig, fit_to_run
from .core.schedule import total_steps
from .core.stacked import MEMBER_SETTINGS
from .core.step import TrainState, new_state
from .data import LoadedData, load_dataset
from .devices import choose_precision, emulated_bf16_warning, resolve_device
from .errors import CenterLossError, Interrupted
from .fetch import DATASETS, data_root, find_files
from .loop import run_epochs
from .runfiles import CHECKPOINT, CONFIG_JSON, environment, read_record, restore_state
from .runs import RunFolder, RunResult, Voice, named_for_data
from .runtime import Runtime, entered
from .stop import describe

# Held while a process trains: torch's random generator, its thread count and the signal handlers belong to
# the whole process, so two trainings in two threads of one would change each other's runs. It is process
# state because what it guards is; the second is refused in one line (alone_in_this_process).
TRAINING_IN_THIS_PROCESS = threading.Lock()

# Memory one training image takes in a step (activations kept for the backward pass, their gradients,
# the input): about 1.5 MB for LeNet++ in fp32, measured as the growth of peak memory from batch 128 to 1024.
BYTES_PER_IMAGE = 1_600_000


def check_stackable(configs: Sequence[TrainConfig]) -> None:
    """Members of one stacked model may differ in lambda and alpha only (stacked.MEMBER_SETTINGS)."""
    first = configs[0]
    for c in configs[1:]:
        differ = [k for k in SCHEMA if k not in MEMBER_SETTINGS and getattr(first, k) != getattr(c, k)]
        if differ:
            keys = ", ".join(SCHEMA[k].key for k in differ)
            raise CenterLossError(
                f"runs trained as one stacked model may differ in lambda and alpha only, not in {keys}")


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


def load_data(rt: Runtime, config: TrainConfig, device: torch.device) -> LoadedData:
    """The config's data on `device`, loaded once per runtime (and again if its files change)."""
    root = data_root(config.data_dir, config.dataset)
    files = find_files(root, config.dataset) if root.is_dir() else None
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (files or {}).values())
    key = (config.dataset, str(root), config.verify, config.train_limit, config.test_limit, str(device), stamp)
    return rt.data(key, lambda: load_dataset(config.data_dir, device, config.train_limit, config.test_limit,
                                             config.verify, dataset=config.dataset, say=rt.say))


def fingerprint_of(rt: Runtime, config: TrainConfig, device: torch.device) -> str:
    """The data's fingerprint: verified data is the dataset's own, or loading it fails; other data
    (--no-verify) is read to know it."""
    if config.verify:
        return DATASETS[config.dataset].fingerprint
    return load_data(rt, config, device).fingerprint


def started_in(rt: Runtime, device: torch.device, resume: bool) -> Callable[[TrainConfig], bool]:
    """For --precision auto: whether a resume finds the run of a config begun in its precision (its
    config.json records it); without resume, nothing counts as begun."""
    def started(config: TrainConfig) -> bool:
        if not resume:
            return False
        path = named_for_data(config, fingerprint_of(rt, config, device)).run_dir
        if not (path / CONFIG_JSON).is_file():
            return False
        try:
            return read_record(path).get("precision") == config.precision
        except CenterLossError:
            return False
    return started


def fitted(config: TrainConfig, say: Callable[[str], None]) -> TrainConfig:
    """The config fitted to its run's length (schedule.fit_to_run), each change said through `say`."""
    config, notes = fit_to_run(config)
    for note in notes:
        say(f"Note: {note}")
    return config


def check_fits(config: TrainConfig, n_train: int, device: torch.device) -> None:
    """Sizes that the data and the machine bound, refused before anything is allocated."""
    if config.batch_size > n_train:
        raise CenterLossError(f"batch_size = {config.batch_size}: larger than the {n_train} training images; "
                              f"expected at most {n_train}")
    steps = total_steps(config, n_train)
    if steps > MAX_STEPS:
        raise CenterLossError(f"epochs = {config.epochs}: {steps:,} steps of {config.batch_size} images, more than "
                              f"the {MAX_STEPS:,} any run can finish; give fewer")
    need, free = config.batch_size * BYTES_PER_IMAGE, free_memory(device)
    if free is not None and need > free:
        raise CenterLossError(f"batch_size = {config.batch_size}: a step needs about {need / 2**30:.1f} GiB, and "
                              f"{device} has {free / 2**30:.1f} GiB free; give a smaller batch size")
    left = address_space_left() if device.type == "cpu" else None
    if left is not None and need > left:
        raise CenterLossError(f"batch_size = {config.batch_size}: a step needs about {need / 2**30:.1f} GiB, and this "
                              f"process may map only {left / 2**30:.1f} GiB more (its limit, ulimit -v); give a "
                              "smaller batch size, or raise the limit")


def address_space_left() -> int | None:
    """Bytes this process may still map under its own limit (RLIMIT_AS, `ulimit -v`); None without one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="utf-8") as f:  # closed here: train() left one open per call
            status = dict(line.split(":", 1) for line in f)
        mapped = int(status["VmSize"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return max(0, soft - mapped)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for training on `device`; None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu" and hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + _reclaimable()
    return None


def _reclaimable() -> int:
    """The page cache the kernel gives back on demand (MemAvailable - MemFree), on Linux."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info = dict(line.split(":", 1) for line in f)
        return max(0, int(info["MemAvailable"].split()[0]) - int(info["MemFree"].split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def restore(folder: RunFolder, n_train: int, device: torch.device, voice: Voice) -> TrainState:
    """A run's state: new, or its checkpoint loaded; a checkpoint that does not fit is refused before the
    folder changes."""
    state = new_state(folder.config, n_train, device)
    state.fingerprint = folder.fingerprint
    if folder.checkpoint is not None:
        try:
            restore_state(state, folder.checkpoint)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CenterLossError(f"{folder.path / CHECKPOINT} does not fit this run ({str(e).splitlines()[0][:200]}); "
                                  f"use {voice.option('overwrite')} to start again") from None
    return state


def train_runs(rt: Runtime, configs: list[TrainConfig], *, resume: bool, overwrite: bool = False,
               explicit: frozenset[str] | None = None, progress: bool = True,
               position: int | None = None) -> list[RunResult]:
    """Open every run folder (checked and locked), then train those that are not complete, each group of
    runs that stand at the same point through one loop. Everything is checked before the first folder
    changes."""
    device = resolve_device(configs[0].device)
    rt.plot_processes_for(device.type)
    # A sweep fitted its runs' settings before naming them, and said so once: its runs do not say it again.
    notes = rt.say if not rt.voice.sweep else (lambda message: None)
    configs = [choose_precision(fitted(c, notes), device, started_in(rt, device, resume), rt.say) for c in configs]
    with ExitStack() as stack:
        stack.enter_context(alone_in_this_process())
        folders = [open_folder(rt, stack, c, device, resume, overwrite, explicit) for c in configs]
        if any(f.config.plots for f in folders):
            rt.plots.start()  # its imports overlap the data loading
        results = {}
        for f in folders:
            if f.complete:
                f.repair()
                rt.draw_missing(f.path, f.config, len(f.history))
                results[f.path] = f.result()
        todo = [f for f in folders if not f.complete]
        warning = emulated_bf16_warning(todo[0].config, device, todo[0].checkpoint is not None) if todo else None
        if warning and not rt.voice.sweep:  # a sweep says it once for all its runs
            rt.say(warning)
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


def open_folder(rt: Runtime, stack: ExitStack, config: TrainConfig, device: torch.device, resume: bool,
                overwrite: bool, explicit: frozenset[str] | None) -> RunFolder:
    """A run's folder, checked and locked until `stack` closes."""
    folder = rt.open_run(named_for_data(config, fingerprint_of(rt, config, device)),
                         lambda c: fingerprint_of(rt, c, device), resume=resume, overwrite=overwrite, explicit=explicit)
    stack.callback(rt.close_run, folder)
    if resume and not folder.path.exists() and not rt.voice.sweep:  # a sweep starts its runs as a rule
        rt.say(f"no run at {folder.path} yet: it starts now")
    return folder


def train_folders(rt: Runtime, stack: ExitStack, todo: list[RunFolder], device: torch.device, progress: bool,
                  position: int | None) -> dict[Path, RunResult]:
    """Load the data, check that every run fits it, then train the runs, each group that stands at the same
    point through one loop. Nothing is written before every check has passed."""
    data = load_data(rt, todo[0].config, device)
    for f in todo:
        f.check_data(len(data.train), data.fingerprint)
        check_fits(f.config, len(data.train), device)
    if any(f.config.tensorboard for f in todo):
        tensorboard.check_available()
    states = [restore(f, len(data.train), device, rt.voice) for f in todo]
    if rt.stop.requested:  # a stop while the data loaded: nothing has been written yet, so leave it so
        raise Interrupted(f"{describe(rt.stop.signum)} before training; nothing was written", rt.stop.signum)
    groups: dict[tuple[int, ...], list[tuple[RunFolder, Run]]] = {}
    for f, state in zip(todo, states):
        f.create(environment(device))
        f.repair()
        rt.draw_missing(f.path, f.config, state.epoch)
        writer = stack.enter_context(closing(tensorboard.open_writer(f.path, state.history))) \
            if f.config.tensorboard else None
        groups.setdefault((state.epoch, state.step, state.total_steps, state.threads), []).append(
            (f, Run(state, writer)))
    results = {}
    for group in groups.values():
        start = group[0][1].state.epoch
        run_epochs([r for _, r in group], data, rt, progress, position)
        for f, r in group:
            results[f.path] = f.result(r.state.epoch - start, r.state.history)
    return results
