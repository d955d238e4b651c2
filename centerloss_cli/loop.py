"""The one epoch loop: it drives one run, or K stacked runs that stand at the same point, through the same
batches, and commits each epoch (features, plots, checkpoint, metrics) to its run folder.

A single run is K = 1 with its own plain step; K > 1 runs (`sweep --batched`) are one vmap'd model.
Either way the loop sees per-run losses of shape (K, 2), so divergence, stops, the progress bar and
the end of an epoch behave the same. How a stop ends an epoch is `_stop_policy`'s, beside the loop.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from tqdm import tqdm

from . import runfiles
from .capture import CapturedStep, can_capture
from .data import MNIST, batches, stream_order
from .devices import float32_precision
from .engine import PlainStep, TrainState, evaluate
from .errors import Diverged, Interrupted
from .runs import Voice
from .runtime import Runtime, show_bars
from .schedule import lr_factor
from .stacked import StackedStep
from .stop import describe
from .storage import atomic_write_text
from .tensorboard import log_epoch

CURVES_EVERY_S = 10.0


@dataclass
class Run:
    """One run as the loop drives it: its training state, its TensorBoard writer (or None), and when its
    curves were last sent to be drawn."""

    state: TrainState
    tensorboard: Any = None
    curves_at: float = -math.inf

    @property
    def run_dir(self):
        return self.state.config.run_dir


def run_epochs(runs: list[Run], data: MNIST, rt: Runtime, progress: bool = True, position: int | None = None) -> None:
    """Train runs that stand at the same epoch and batch to their last epoch, committing each one after
    every epoch: one run with its plain step, several as one stacked model."""
    states = [r.state for r in runs]
    first, k = states[0], len(states)
    cfg = first.config
    device = first.loss_sums.device
    with float32_precision(cfg.precision), cpu_threads(first.threads, device):
        while not first.finished:
            epoch, total_epochs = first.epoch + 1, first.total_epochs
            started = time.perf_counter() - first.seconds
            step = PlainStep(states) if k == 1 else StackedStep(states)
            if can_capture(device, cfg.cuda_graphs):
                step = CapturedStep(step, device, rt.say)
            start, end = first.epoch_span()
            order = stream_order(len(data.train), cfg.seed, start, end - start, cfg.batch_size, device)
            sums = torch.stack([s.loss_sums for s in states])  # (K, 2)
            first_bad = torch.full((k,), -1, device=device)  # per run, the first step whose loss was not finite
            bar = tqdm(total=end - start, initial=first.batch, desc=_label(k, epoch, total_epochs),
                       disable=not show_bars(progress), leave=position is None, position=position,
                       dynamic_ncols=True, file=sys.stderr)
            with bar, _stop_now_while_training(rt, cfg, k, epoch):
                for x, y in batches(data.train, order, cfg.batch_size, start=first.batch):
                    losses = step(x, y).double()
                    sums += losses
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses).all(1), first.step, first_bad)
                    for s in states:
                        s.batch += 1
                    bar.update(1)
                    # Reading a value back forces a device sync: free on the CPU, so check every step
                    # there, but only once per logging interval on an accelerator.
                    log_now = first.batch % cfg.log_every == 0 or first.batch == end - start or rt.stop.requested
                    if log_now or device.type == "cpu":
                        for s, bad in zip(states, first_bad.tolist()):
                            if bad >= 0:
                                raise diverged(s, epoch, bad, rt.voice)
                    if log_now:
                        bar.set_postfix(_postfix(sums / first.batch))
                    if rt.stop.requested:
                        break
            step.finish()
            for s, run_sums in zip(states, sums):
                s.loss_sums.copy_(run_sums)
                s.seconds = time.perf_counter() - started
            if rt.stop.requested:  # a stop while training: save where the epoch stands
                raise _stopped(runs, rt, f"at epoch {epoch}, batch {first.batch}")
            if show_bars(progress):  # the test set takes a while: say so, rather than sit at 100%
                tqdm.write(f"{_label(k, epoch, total_epochs)}: evaluating ...", file=sys.stderr)
            with _stop_now_while_evaluating(runs, rt, epoch):
                for r in runs:
                    end_epoch(r, data, epoch, started, rt)
                    rt.say(epoch_line(r.state, total_epochs, name=k > 1 or position is not None))
            if rt.stop.requested and not first.finished:  # the stop came while evaluating: stop before the next epoch
                raise _stopped(runs, rt, f"after epoch {epoch}", save=False)


# --- what a stop keeps: the policy beside the loop (stop.py says what was asked for) ----------------

@contextmanager
def _stop_now_while_training(rt: Runtime, config: Any, k: int, epoch: int) -> Iterator[None]:
    """A second Ctrl-C (stop.State.STOP_NOW) that lands inside a training step leaves no consistent state
    to save: the run resumes from its last checkpoint, and says so."""
    try:
        yield
    except KeyboardInterrupt:
        kept = "its last checkpoint" if k == 1 else "their last checkpoints"
        raise Interrupted(f"interrupted again in epoch {epoch}: stopped at once; the run resumes from {kept}, "
                          f"training again what followed. Resume with: {rt.voice.resume_command(config)}",
                          signum=signal.SIGINT) from None


@contextmanager
def _stop_now_while_evaluating(runs: list[Run], rt: Runtime, epoch: int) -> Iterator[None]:
    """A second Ctrl-C during evaluation keeps the epoch's training: each run not yet committed is saved
    at the epoch's last batch, and the resume evaluates it first. (During a write it waits for the write.)"""
    try:
        yield
    except KeyboardInterrupt:
        states = [r.state for r in runs]
        with rt.stop.writing():
            for s in states:
                if s.epoch < epoch:
                    save_checkpoint(s)
        raise Interrupted(f"interrupted again while evaluating epoch {epoch}: stopped at once; "
                          f"{_saved(rt.voice, states[0].config, len(states))} (it evaluates the epoch first)",
                          signum=signal.SIGINT) from None


def _saved(voice: Voice, config: Any, k: int) -> str:
    return ("checkpoint saved" if k == 1 else "checkpoints saved") + ". Resume with: " + voice.resume_command(config)


def _stopped(runs: list[Run], rt: Runtime, where: str, save: bool = True) -> Interrupted:
    """Save each run where it stands (a checkpoint mid-epoch resumes at that batch) and say so."""
    states = [r.state for r in runs]
    if save:
        with rt.stop.writing():
            for s in states:
                save_checkpoint(s)
    return Interrupted(f"{describe(rt.stop.signum)} {where}; {_saved(rt.voice, states[0].config, len(states))}",
                       signum=rt.stop.signum)


def save_checkpoint(state: TrainState) -> None:
    if not torch.isfinite(state.loss_sums).all():
        return  # never replace a good checkpoint with a diverged state
    runfiles.save_checkpoint(state.config.run_dir, state.state_dict())


def diverged(state: TrainState, epoch: int, step: int, voice: Voice) -> Diverged:
    """The error for a NaN or inf loss, saying truly what is left on disk."""
    if (state.config.run_dir / runfiles.CHECKPOINT).is_file():
        kept = "its last good checkpoint is kept"
    else:
        kept = "no checkpoint was written, since no epoch had finished"
    error = Diverged(f"run {state.config.run_name}: the loss became NaN or inf at epoch {epoch}, step {step}; {kept}. "
                     f"Try a smaller {voice.option('lam', '...')} or {voice.option('lr', '...')}")
    if state.config.run_dir.is_dir():  # `centerloss list` tells a diverged run from a stopped one by this
        atomic_write_text(state.config.run_dir / runfiles.DIVERGED, str(error) + "\n")
    return error


def end_epoch(run: Run, data: MNIST, epoch: int, started: float, rt: Runtime) -> None:
    """Evaluate, then commit the epoch: features and plots, the checkpoint (the commit point), metrics.csv
    and TensorBoard, each derived from what was committed before it, so a resume repairs a crash between."""
    state = run.state
    cfg = state.config
    metrics, feats = evaluate(state, data, epoch)
    means = (state.loss_sums / max(state.batch, 1)).tolist()
    if not all(math.isfinite(v) for v in (*means, metrics["test_softmax_loss"], metrics["test_center_loss"])):
        raise diverged(state, epoch, state.step, rt.voice)  # before anything of this epoch is written
    with rt.stop.writing():
        runfiles.save_features(cfg.run_dir, feats)
        state.history.append({
            "epoch": epoch, "step": state.step, "lr": cfg.lr * lr_factor(cfg, state.step, state.total_steps),
            "seconds": round(time.perf_counter() - started, 3),
            "train_softmax_loss": means[0], "train_center_loss": means[1], **metrics,
        })
        state.epoch, state.batch, state.seconds = epoch, 0, 0.0
        # The curves figure costs as much as both scatter plots: redrawn at most every CURVES_EVERY_S, and
        # after the last epoch and at a stop (a resume redraws curves older than the checkpoint).
        now = time.monotonic()
        curves = state.finished or rt.stop.requested or now - run.curves_at >= CURVES_EVERY_S
        rt.plots.submit_epoch(cfg.run_dir, feats, state.history if curves else [], cfg.plot_dpi)
        if curves:
            run.curves_at = now
        state.loss_sums.zero_()
        save_checkpoint(state)
        (cfg.run_dir / runfiles.DIVERGED).unlink(missing_ok=True)  # a resume got past a divergence
        runfiles.write_metrics(cfg.run_dir, state.history)
        if run.tensorboard is not None:
            log_epoch(run.tensorboard, state.history[-1], feats)


@contextmanager
def cpu_threads(threads: int, device: torch.device) -> Iterator[None]:
    """Train on the CPU with the thread count the run started with: CPU results depend on it (the order of
    a sum's partial results), so this keeps a resume exact whichever process resumes it."""
    if device.type != "cpu" or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def epoch_line(state: TrainState, total_epochs: int, name: bool = False) -> str:
    """One line per finished epoch: what a log file, a notebook or a terminal should show of it."""
    h = state.history[-1]
    run = f"{state.config.run_name}: " if name else ""
    return (f"{run}epoch {int(h['epoch'])}/{total_epochs}  train acc {100 * h['train_acc']:.2f}%  "
            f"test acc {100 * h['test_acc']:.2f}%  softmax {h['train_softmax_loss']:.4f}  "
            f"center {h['train_center_loss']:.4f}  test ratio {h['test_ratio']:.3f}  {h['seconds']:.1f} s")


def _label(k: int, epoch: int, total: int) -> str:
    return ("" if k == 1 else f"{k} runs, ") + f"epoch {epoch}/{total}"


def _postfix(means: torch.Tensor) -> dict[str, str]:
    """The progress bar's losses: the values for one run, the range over runs for several."""
    lo, hi = means.min(0).values.tolist(), means.max(0).values.tolist()
    show = lambda i: f"{lo[i]:.4f}" if len(means) == 1 else f"{lo[i]:.4f}..{hi[i]:.4f}"  # noqa: E731
    return {"softmax": show(0), "center": show(1)}

