"""The one epoch loop: it drives one run, or K stacked runs that stand at the same point, through the same
batches, and hands each finished epoch to commit.py.

A single run is K = 1 with its own plain step; K > 1 runs (`sweep --batched`) are one vmap'd model.
Either way the loop sees per-run losses of shape (K, 2), so divergence, stops, the progress bar and
the end of an epoch behave the same. What a stop or an epoch leaves on disk is commit.py's.
"""
from __future__ import annotations

import sys
import time

import torch
from tqdm import tqdm

from .commit import Run, diverged, end_epoch, epoch_line, stop_now_while_evaluating, stop_now_while_training, stopped
from .core.capture import CapturedStep, can_capture
from .core.precision import float32_precision
from .core.stacked import StackedStep
from .core.step import PlainStep, TrainState
from .data import LoadedData, batches, stream_order
from .devices import cpu_threads
from .runtime import Runtime, show_bars


def run_epochs(runs: list[Run], data: LoadedData, rt: Runtime, progress: bool = True,
               position: int | None = None) -> None:
    """Train runs that stand at the same epoch and batch to their last epoch, committing each one after
    every epoch. A stop (Ctrl-C, SIGTERM) raises Interrupted once what it keeps is saved; a NaN loss
    raises Diverged."""
    first = runs[0].state
    named = len(runs) > 1 or position is not None  # several bars or runs at once: each line names its run
    with float32_precision(first.config.precision), cpu_threads(first.threads, first.loss_sums.device):
        while not first.finished:
            epoch, total_epochs = first.epoch + 1, first.total_epochs
            started = time.perf_counter() - first.seconds
            train_epoch(runs, data, rt, epoch, started, progress, position)
            if show_bars(progress):  # the test set takes a while: say so, rather than sit at 100%
                tqdm.write(f"{_label(len(runs), epoch, total_epochs)}: evaluating ...", file=sys.stderr)
            with stop_now_while_evaluating(runs, rt, epoch):
                for r in runs:
                    end_epoch(r, data, epoch, started, rt)
                    rt.say(epoch_line(r.state, total_epochs, name=named))
            if rt.stop.requested and not first.finished:  # the stop came while evaluating: stop before the next epoch
                raise stopped(runs, rt, f"after epoch {epoch}", save=False)


def train_epoch(runs: list[Run], data: LoadedData, rt: Runtime, epoch: int, started: float, progress: bool,
                position: int | None) -> None:
    """The epoch's batches, from where the runs stand to the epoch's end, or to a stop, which saves them
    where they stand (a checkpoint mid-epoch resumes at that batch)."""
    states = [r.state for r in runs]
    first, cfg, device = states[0], states[0].config, states[0].loss_sums.device
    step = PlainStep(states) if len(states) == 1 else StackedStep(states)
    if can_capture(device, cfg.cuda_graphs):
        step = CapturedStep(step, device, rt.say)
    start, end = first.epoch_span()
    order = stream_order(len(data.train), cfg.seed, start, end - start, cfg.batch_size, device)
    sums = torch.stack([s.loss_sums for s in states])  # (K, 2)
    first_bad = torch.full((len(states),), -1, device=device)  # per run, the first step whose loss was not finite
    bar = tqdm(total=end - start, initial=first.batch, desc=_label(len(states), epoch, first.total_epochs),
               disable=not show_bars(progress), leave=position is None, position=position, dynamic_ncols=True,
               file=sys.stderr)
    with bar, stop_now_while_training(rt, cfg, len(states), epoch):
        for x, y in batches(data.train, order, cfg.batch_size, start=first.batch):
            losses = step(x, y).double()
            sums += losses
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses).all(1), first.step, first_bad)
            for s in states:
                s.batch += 1
            bar.update(1)
            # Reading a value back forces a device sync: free on the CPU, so check every step there, but
            # only once per logging interval on an accelerator.
            log_now = first.batch % cfg.log_every == 0 or first.batch == end - start or rt.stop.requested
            if log_now or device.type == "cpu":
                check_finite(states, first_bad, epoch, rt)
            if log_now:
                bar.set_postfix(_postfix(sums / first.batch))
            if rt.stop.requested:
                break
    step.finish()
    for s, run_sums in zip(states, sums):
        s.loss_sums.copy_(run_sums)
        s.seconds = time.perf_counter() - started
    if rt.stop.requested:
        raise stopped(runs, rt, f"at epoch {epoch}, batch {first.batch}")


def check_finite(states: list[TrainState], first_bad: torch.Tensor, epoch: int, rt: Runtime) -> None:
    """Diverged for the first run whose loss was NaN or inf at some step of this epoch."""
    for s, bad in zip(states, first_bad.tolist()):
        if bad >= 0:
            raise diverged(s, epoch, bad, rt.voice)


def _label(k: int, epoch: int, total: int) -> str:
    return ("" if k == 1 else f"{k} runs, ") + f"epoch {epoch}/{total}"

def _postfix(means: torch.Tensor) -> dict[str, str]:
    """The progress bar's losses: the values for one run, the range over runs for several."""
    lo, hi = means.min(0).values.tolist(), means.max(0).values.tolist()
    show = lambda i: f"{lo[i]:.4f}" if len(means) == 1 else f"{lo[i]:.4f}..{hi[i]:.4f}"  # noqa: E731
    return {"softmax": show(0), "center": show(1)}
