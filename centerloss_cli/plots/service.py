"""The plotting processes: an epoch's plots are drawn in the background, so training never waits for
matplotlib, and on a fast device several processes draw side by side.

`PlotService` is the trainer's side; drawing.serve is a plotting process's whole life (child.py starts it).
A plotting process imports no torch, keeps the stop signals blocked (its parent handles a stop, then
closes it), and ends when its parent's pipe ends: after a `close`, or when the parent was killed.
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ChildFailed, PlotError
from ..procs.processes import Child, Failure, ready
from ..rundir.files import CHECKPOINT, SPLITS, EpochFeatures, curves_path, features_path, plot_path

PENDING_EPOCHS = 2  # epochs a process may have outstanding: each holds up to 20k features
# A plot takes seconds (a 10k-point scatter or the curves at 200 dpi: 1-5 s on 2 busy cores); a process that
# answers nothing for this long is taken for stopped (kill -STOP) or hung, killed, and its plots drawn later.
PLOT_STALL_S = 120.0
# The drawings a plotting process makes (`draw`), by name: the trainer never loads matplotlib.
SCATTER = "scatter"  # (run_dir, feats, splits, centers, dpi)
SAVED_SCATTER = "saved scatter"  # (run_dir, epoch, splits, dpi)
CURVES = "curves"  # (run_dir, history or None, dpi)


class PlotService:
    """`processes` plotting processes, started on first use and kept for every run that follows (the runs
    of a sweep, a notebook's trainings). A run's curves always go to the same process, so they are
    drawn in epoch order; its scatter plots go to whichever process has least to do. At most
    PENDING_EPOCHS epochs per process are outstanding: `submit` waits beyond that. `wait` returns once
    every plot is written; a failure is raised there or at the next submit."""

    def __init__(self, processes: int = 1, say: Callable[[str], None] = lambda message: None,
                 patience: Callable[[], float] = lambda: PLOT_STALL_S):
        self.processes = max(1, processes)
        self._say = say  # the runtime's voice: a plotting process that died is news, not an error
        # How long a process with work may answer nothing before it is killed and replaced (asked anew while
        # waiting: the runtime waits less once a stop is asked for).
        self._patience = patience
        self._children: list[Child] = []
        self._pending: dict[int, deque[str]] = {}  # child index -> what it was sent, oldest first
        self._curves_owner: dict[Path, int] = {}
        self._failure: PlotError | None = None

    @property
    def started(self) -> bool:
        return bool(self._children)

    def for_device(self, device_type: str) -> None:
        """Plot with more processes where training outruns one: on a GPU an epoch takes seconds, and its plots
        about as long. On the CPU the cores are the training's."""
        if device_type != "cpu" and self.processes == 1 and not self._children:
            self.processes = max(1, min(4, (os.cpu_count() or 2) - 1))

    def start(self) -> None:
        """Start the processes now (they import matplotlib meanwhile), rather than at the first plot."""
        if not self._children:
            self._children = [Child("plot") for _ in range(self.processes)]
            self._pending = {i: deque() for i in range(self.processes)}

    def _send(self, index: int, what: str, drawing: str, *args: Any) -> None:
        self._children[index].send((drawing, args))
        self._pending[index].append(what)

    def _collect(self, timeout: float | None) -> int:
        """Take in the replies waiting (waiting up to `timeout` for one); returns how many came."""
        busy = [c for i, c in enumerate(self._children) if self._pending[i]]
        came = ready(busy, timeout)
        for child in came:
            index = self._children.index(child)
            try:
                reply = child.recv()
            except ChildFailed as e:
                # Plots derive from the saved features: training goes on, a new process draws the next ones,
                # and those that were lost are drawn again when the run is next opened (or by `plot`).
                lost = ", ".join(self._pending[index])
                self._pending[index].clear()
                self._children[index] = Child("plot")
                self._say(f"{e}; training goes on, and its lost plots ({lost}) are "
                          "drawn again when the run is next opened, or by centerloss plot RUN_DIR")
                continue
            what = self._pending[index].popleft()
            if isinstance(reply, str):
                self._say(reply)
            if isinstance(reply, Failure) and self._failure is None:
                self._failure = PlotError(f"drawing plots failed ({what}): {reply.text.splitlines()[-1]}")
        return len(came)

    def _drain(self, done: Callable[[], bool]) -> None:
        """Take in replies until `done()`. Every wait ends: processes that answer nothing for the runtime's
        patience (stopped with kill -STOP, say, or hung) are killed, and their plots left to be drawn again."""
        last = time.monotonic()
        while not done():
            patience = self._patience()
            left = last + patience - time.monotonic()
            if left <= 0:
                self._abandon(patience)
                return
            if self._collect(min(left, 1.0)):  # in slices, so that a stop asked for meanwhile shortens the wait
                last = time.monotonic()

    def _raise(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _least_busy(self) -> int:
        return min(range(self.processes), key=lambda i: len(self._pending[i]))

    def submit_epoch(self, run_dir: Path, feats: EpochFeatures, history: Sequence[dict[str, float]], dpi: int) -> None:
        """Queue one epoch's scatter plots, and the run's curves up to it; waits while too much is outstanding."""
        self.start()
        run_dir = Path(run_dir).absolute()  # a plotting process outlives the working folder of one run
        limit = (len(SPLITS) + 1) * PENDING_EPOCHS * self.processes
        self._drain(lambda: sum(map(len, self._pending.values())) < limit)
        self._collect(0)
        self.start()  # again: a stalled process was just abandoned
        self._raise()
        for split in SPLITS:
            self._send(self._least_busy(), f"{split} plot of epoch {feats.epoch}", SCATTER, run_dir, feats, (split,),
                       None, dpi)
        if history:
            owner = self._curves_owner.setdefault(run_dir, len(self._curves_owner) % self.processes)
            self._send(owner, f"curves up to epoch {feats.epoch}", CURVES, run_dir, list(history), dpi)

    def draw_missing(self, run_dir: Path, epochs: Sequence[int], dpi: int) -> int:
        """Queue the plots of finished epochs that are missing (a kill while they were being drawn), and the
        curves when they are missing or older than the checkpoint; returns how many epochs lacked plots."""
        run_dir = Path(run_dir).absolute()
        curves, checkpoint = curves_path(run_dir), run_dir / CHECKPOINT
        jobs: list[tuple[str, str, tuple]] = []
        if epochs and checkpoint.is_file() and (
                not curves.is_file() or curves.stat().st_mtime < checkpoint.stat().st_mtime):
            jobs.append(("curves", CURVES, (run_dir, None, dpi)))
        for e in epochs:
            missing = tuple(s for s in SPLITS if not plot_path(run_dir, s, e).is_file())
            if missing and features_path(run_dir, e).is_file():
                jobs.append((f"plots of epoch {e}", SAVED_SCATTER, (run_dir, e, missing, dpi)))
        if jobs:
            self.start()
            owner = self._curves_owner.setdefault(run_dir, len(self._curves_owner) % self.processes)
            for what, drawing, args in jobs:
                self._send(owner if drawing == CURVES else self._least_busy(), what, drawing, *args)
        return len(jobs)

    def wait(self) -> None:
        """Return once every queued plot is written, or once the processes still drawing have answered nothing
        for the runtime's patience (_drain); raise if any plot failed."""
        self._drain(lambda: not any(self._pending.values()))
        self._raise()

    def _abandon(self, waited: float) -> None:
        """Kill the processes that did not finish in time, end the others; new ones start when next needed."""
        lost = [what for pending in self._pending.values() for what in pending]
        for i, child in enumerate(self._children):
            if self._pending[i]:
                child.process.kill()
            child.close()
        self._children, self._pending = [], {}
        self._say(f"the plotting process answered nothing for {waited:g} s (stopped, or hung): killed; its plots "
                  f"({', '.join(lost)}) are drawn again when the run is next opened, or by centerloss plot RUN_DIR")

    def close(self) -> None:
        """End the plotting processes, once they have drawn what they were sent."""
        children, self._children = self._children, []
        for child in children:
            child.close()
        self._pending.clear()
