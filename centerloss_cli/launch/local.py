"""The local launcher of a sweep: its runs trained one after another in this process, or by `--jobs N`
worker processes that split the CPU threads between them.

A worker is a child process with its own entry point (child.py), so a user's script is never
re-imported. It has its own Runtime (stop controller, plotting process); the sweep passes a stop on to
it, and it stops by itself, saving its run, when the sweep's process dies (kill -9 included). A worker
that dies is one line naming it, and its run resumes from its last checkpoint next time.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Callable, Iterator, Sequence

from ..engine.runtime import Runtime
from ..errors import ChildFailed, Interrupted
from ..procs import stop
from ..procs.processes import Channel, Child, Failure, ready
from ..rundir.folder import RunResult
from ..settings.config import TrainConfig
from ..settings.voice import Voice


def train_in_turn(rt: Runtime, configs: Sequence[TrainConfig], train: Callable[..., RunResult], progress: bool,
                  position: int | None = None) -> Iterator[RunResult]:
    """Train (or resume, or skip when finished) each run in this process with `train` (engine.training's),
    one after another, yielding each result as it comes."""
    for c in configs:
        yield train(c, resume=True, runtime=rt, progress=progress, position=position)


def train_in_processes(rt: Runtime, configs: Sequence[TrainConfig], jobs: int, progress: bool,
                       done: Callable[[RunResult], None]) -> None:
    """Train `configs` in `jobs` worker processes, each with cores / jobs threads; `done` hears each result.
    After a stop or a failure no queued run starts; the runs in progress end first (a stop saves them)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    queue = list(configs)
    workers = [Child("train") for _ in range(min(jobs, len(queue)))]
    busy: dict[Child, TrainConfig] = {}
    failure: BaseException | None = None

    def pass_on(signum: int) -> None:
        # Ctrl-C at a terminal reaches the workers too, but a `kill` of this process (or Slurm's SIGTERM to
        # it alone) does not: pass the stop on, so that no worker trains on.
        for w in workers:
            w.signal(signal.SIGTERM)

    remove = rt.stop.on_stop(pass_on)
    try:
        while queue or busy:
            for i, w in enumerate(workers):
                if w not in busy and queue and failure is None and not rt.stop.requested:
                    busy[w] = queue.pop(0)
                    w.send((busy[w], threads, progress, 1 + i))
            if not busy:
                break
            for w in ready(list(busy), timeout=1.0):
                config = busy.pop(w)
                try:
                    reply = w.recv()
                except ChildFailed as e:  # killed (-9, the OOM killer): the others stop too, saving their runs
                    failure = failure or ChildFailed(
                        f"a sweep worker died: {e} while training {config.run_name}; its run resumes from its last "
                        f"checkpoint: run {rt.voice.sweep_again()}")
                    pass_on(signal.SIGTERM)
                    continue
                if isinstance(reply, Failure):
                    failure = failure or reply.error or ChildFailed(f"training {config.run_name} failed: {reply.text}")
                else:
                    done(reply)
        if rt.stop.requested and not isinstance(failure, ChildFailed):
            raise Interrupted(failure.message if isinstance(failure, Interrupted) else
                              f"{stop.describe(rt.stop.signum)}; every finished run is saved", rt.stop.signum)
        if failure is not None:
            raise failure
    finally:
        remove()
        for w in workers:
            w.close()


def serve(channel: Channel, parent: int, train: Callable[..., RunResult]) -> None:
    """A sweep worker: train each run it is sent with `train` (engine.training's, handed by child.py), in its
    own Runtime, until its input ends. A stop (its own signal, the sweep's, or its parent's death) ends the
    run in progress with a checkpoint; runs sent after a stop do not start."""
    rt = Runtime(voice=Voice(sweep=True))
    try:
        with rt:
            stop.unblock()  # started with them blocked (processes.Child): one held back arrives now, and is kept
            stop.stop_when_orphaned(parent)
            while True:
                try:
                    job = channel.recv()
                except (EOFError, OSError):
                    break
                try:
                    channel.send(train_one(rt, train, *job))
                except OSError:
                    break  # the sweep is gone: nothing to report to
    except KeyboardInterrupt:
        pass  # a second Ctrl-C between runs: the run was saved; the sweep reports it
    finally:
        rt.close()


def train_one(rt: Runtime, train: Callable[..., RunResult], config: TrainConfig, threads: int, progress: bool,
              position: int | None) -> Any:
    """A worker's run: its RunResult, or the Failure that ended it; none after a stop."""
    import torch

    if rt.stop.requested:
        return Failure.of(Interrupted(f"run {config.run_name} not started", rt.stop.signum))
    torch.set_num_threads(threads)
    try:
        return train(config, resume=True, runtime=rt, progress=progress, position=position)
    except Exception as e:
        return Failure.of(e)
