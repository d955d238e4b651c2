"""What an epoch leaves in its run folder, and what a stop keeps: the commit of an epoch (features, plots,
checkpoint, metrics), the checkpoint a stop saves, the error a divergence leaves, and the line each
finished epoch says. loop.py decides when; this decides what is written, in which order.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from . import runfiles
from .core.schedule import lr_factor
from .core.step import TrainState
from .data import LoadedData
from .errors import Diverged, Interrupted
from .evaluation import evaluate
from .runs import Voice
from .runtime import Runtime
from .stop import describe
from .storage import atomic_write_text
from .tensorboard import log_epoch

CURVES_EVERY_S = 10.0  # the curves figure costs as much as both scatter plots: redrawn at most this often


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


def end_epoch(run: Run, data: LoadedData, epoch: int, started: float, rt: Runtime) -> None:
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
        if cfg.plots:
            rt.plots.submit_epoch(cfg.run_dir, feats, state.history if curves else [], cfg.plot_dpi)
        if curves:
            run.curves_at = now
        state.loss_sums.zero_()
        save_checkpoint(state)
        (cfg.run_dir / runfiles.DIVERGED).unlink(missing_ok=True)  # a resume got past a divergence
        runfiles.write_metrics(cfg.run_dir, state.history)
        if run.tensorboard is not None:
            log_epoch(run.tensorboard, state.history[-1], feats)


def save_checkpoint(state: TrainState) -> None:
    if not torch.isfinite(state.loss_sums).all():
        return  # never replace a good checkpoint with a diverged state
    runfiles.save_checkpoint(state.config.run_dir, runfiles.checkpoint_of(state))


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


def stopped(runs: list[Run], rt: Runtime, where: str, save: bool = True) -> Interrupted:
    """Save each run where it stands (a checkpoint mid-epoch resumes at that batch) and say so."""
    states = [r.state for r in runs]
    if save:
        with rt.stop.writing():
            for s in states:
                save_checkpoint(s)
    return Interrupted(f"{describe(rt.stop.signum)} {where}; {saved(len(states))}", rt.stop.signum,
                       resume=rt.voice.resume_command(states[0].config))


def saved(k: int) -> str:
    return "checkpoint saved" if k == 1 else "checkpoints saved"


@contextmanager
def stop_now_while_training(rt: Runtime, config: Any, k: int, epoch: int) -> Iterator[None]:
    """A second Ctrl-C (stop.State.STOP_NOW) that lands inside a training step leaves no consistent state
    to save: the run resumes from its last checkpoint, and says so."""
    try:
        yield
    except KeyboardInterrupt:
        kept = "its last checkpoint" if k == 1 else "their last checkpoints"
        raise Interrupted(f"interrupted again in epoch {epoch}: stopped at once; the run resumes from {kept}, "
                          "training again what followed", signal.SIGINT,
                          resume=rt.voice.resume_command(config)) from None


@contextmanager
def stop_now_while_evaluating(runs: list[Run], rt: Runtime, epoch: int) -> Iterator[None]:
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
                          f"{saved(len(states))} (it evaluates the epoch first)", signal.SIGINT,
                          resume=rt.voice.resume_command(states[0].config)) from None


def epoch_line(state: TrainState, total_epochs: int, name: bool = False) -> str:
    """One line per finished epoch: what a log file, a notebook or a terminal should show of it."""
    h = state.history[-1]
    run = f"{state.config.run_name}: " if name else ""
    return (f"{run}epoch {int(h['epoch'])}/{total_epochs}  train acc {100 * h['train_acc']:.2f}%  "
            f"test acc {100 * h['test_acc']:.2f}%  softmax {h['train_softmax_loss']:.4f}  "
            f"center {h['train_center_loss']:.4f}  test ratio {h['test_ratio']:.3f}  {h['seconds']:.1f} s")
