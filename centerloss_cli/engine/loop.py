"""The one epoch loop: one run, or K stacked runs that stand at the same point, through the same batches to
their last epoch. It is handed the policy of what an epoch, a stop and a divergence leave on disk (commit.py),
and the stop controller; it decides only when.

It ends one way per reason: the last epoch committed (it returns), a stop asked for (Ctrl-C, SIGTERM:
commit.stopped), a NaN or inf loss (commit.diverged), a second Ctrl-C inside a step (commit.interruptible).
"""
from __future__ import annotations

import sys
import time
from functools import partial
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from ..core.capture import CapturedStep, can_capture
from ..core.precision import float32_precision
from ..core.step import Stack, step_numerics, take_step
from ..dataset.loading import LoadedData, batches, stream_order
from ..procs.stop import StopController
from ..settings.devices import cpu_threads

if TYPE_CHECKING:
    from .commit import Commit
    from .run import Run


def run_epochs(runs: list[Run], data: LoadedData, commit: Commit, stop: StopController, bars: bool,
               position: int | None = None) -> None:
    """Train `runs` to their last epoch, committing each epoch as it ends; raise what a stop or a divergence
    leaves (an Interrupted or a Diverged, from `commit`)."""
    first = runs[0].state
    with float32_precision(first.config.precision), cpu_threads(runs[0].threads, first.loss_sums.device):
        while not first.finished:
            epoch, total = first.epoch + 1, first.total_epochs
            started = time.perf_counter() - first.seconds
            train_epoch(runs, data, commit, stop, epoch, started, bars, position)
            if not stop.requested:
                if bars:  # the test set takes a while: say so, rather than sit at 100%
                    tqdm.write(f"{_label(len(runs), epoch, total)}: evaluating ...", file=sys.stderr)
                commit.epoch(epoch, total, started)
            if stop.requested and not first.finished:
                raise commit.stopped(epoch)


def train_epoch(runs: list[Run], data: LoadedData, commit: Commit, stop: StopController, epoch: int,
                started: float, bars: bool, position: int | None) -> None:
    """The epoch's batches, from where the runs stand to the epoch's end, or to a stop."""
    states = [r.state for r in runs]
    first, cfg, device = states[0], states[0].config, states[0].loss_sums.device
    stack = Stack(states)
    captured = can_capture(device, cfg.cuda_graphs)
    step = CapturedStep(stack, partial(step_numerics, stack, graph=True), device, commit.say) if captured \
        else partial(take_step, stack)
    start, end = first.epoch_span()
    order = stream_order(len(data.train), cfg.seed, start, end - start, cfg.batch_size, device)
    sums = torch.stack([s.loss_sums for s in states])  # (K, 2)
    first_bad = torch.full((len(states),), -1, device=device)  # per run, the first step whose loss was not finite
    bar = tqdm(total=end - start, initial=first.batch, desc=_label(len(states), epoch, first.total_epochs),
               disable=not bars, leave=position is None, position=position, dynamic_ncols=True, file=sys.stderr)
    with bar, commit.interruptible(epoch):
        for x, y in batches(data.train, order, cfg.batch_size, start=first.batch):
            losses = step(x, y).double()
            sums += losses
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses).all(1), first.step, first_bad)
            for s in states:
                s.batch += 1
            bar.update(1)
            # Reading a value back forces a device sync: free on the CPU, so check every step there, but
            # only once per logging interval on an accelerator.
            log_now = first.batch % cfg.log_every == 0 or first.batch == end - start or stop.requested
            if log_now or device.type == "cpu":
                check_finite(runs, first_bad, epoch, commit)
            if log_now:
                bar.set_postfix(_postfix(sums / first.batch))
            if stop.requested:
                break
    stack.finish()
    for s, run_sums in zip(states, sums):
        s.loss_sums.copy_(run_sums)
        s.seconds = time.perf_counter() - started


def check_finite(runs: list[Run], first_bad: torch.Tensor, epoch: int, commit: Commit) -> None:
    """Diverged for the first run whose loss was NaN or inf at some step of this epoch."""
    for run, bad in zip(runs, first_bad.tolist()):
        if bad >= 0:
            raise commit.diverged(run, epoch, bad)


def _label(k: int, epoch: int, total: int) -> str:
    return ("" if k == 1 else f"{k} runs, ") + f"epoch {epoch}/{total}"


def _postfix(means: torch.Tensor) -> dict[str, str]:
    """The progress bar's losses: the values for one run, the range over runs for several."""
    lo, hi = means.min(0).values.tolist(), means.max(0).values.tolist()
    show = lambda i: f"{lo[i]:.4f}" if len(means) == 1 else f"{lo[i]:.4f}..{hi[i]:.4f}"  # noqa: E731
    return {"softmax": show(0), "center": show(1)}
