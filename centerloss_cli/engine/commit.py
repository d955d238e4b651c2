"""What an epoch leaves in its run folder and in which order, what a stop keeps, what a divergence leaves:
the policy that the epoch loop (loop.py) is handed. The loop decides when; this decides what is written.

An epoch commits as: evaluation, features, plots (queued), the checkpoint (the commit point), metrics.csv and
TensorBoard, each derived from what was committed before it, so that a resume repairs a crash between them.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..core.schedule import lr_factor
from ..dataset.loading import LoadedData
from ..errors import Diverged, Interrupted
from ..procs.stop import StopController, describe
from ..rundir import files as runfiles
from ..rundir import records
from ..rundir.storage import atomic_write_text
from ..settings.voice import Voice
from .evaluation import evaluate
from .run import Run, checkpoint_of

CURVES_EVERY_S = 10.0  # the curves figure costs as much as both scatter plots: redrawn at most this often


class Commit:
    """The commits of K runs that train through one loop. `plots` is the entry point's plotting service
    (plots/service.py), `say` its voice."""

    def __init__(self, runs: list[Run], data: LoadedData, stop: StopController, plots: Any, voice: Voice,
                 say: Callable[[str], None], named: bool):
        self.runs, self.data, self.stop, self.plots, self.voice, self.say = runs, data, stop, plots, voice, say
        self.named = named  # several runs, or several bars: each line names its run

    def epoch(self, epoch: int, total: int, started: float) -> None:
        """Evaluate and commit each run's epoch, and say its line. A second Ctrl-C meanwhile keeps the epoch's
        training: each run not yet committed is saved at the epoch's last batch, and its resume evaluates it
        first (during a write it waits for the write)."""
        try:
            for run in self.runs:
                self._commit(run, epoch, started)
                self.say(epoch_line(run, total, self.named))
        except KeyboardInterrupt:
            with self.stop.writing():
                for run in self.runs:
                    if run.state.epoch < epoch:
                        save_checkpoint(run)
            raise Interrupted(f"interrupted again while evaluating epoch {epoch}: stopped at once; "
                              f"{saved(len(self.runs))} (it evaluates the epoch first)", self.stop.signum,
                              resume=self.voice.resume_command(self.runs[0].state.config)) from None

    def _commit(self, run: Run, epoch: int, started: float) -> None:
        state, cfg = run.state, run.state.config
        metrics, feats = evaluate(state, self.data, epoch)
        means = (state.loss_sums / max(state.batch, 1)).tolist()
        if not all(math.isfinite(v) for v in (*means, metrics["test_softmax_loss"], metrics["test_center_loss"])):
            raise self.diverged(run, epoch, state.step)  # before anything of this epoch is written
        with self.stop.writing():
            runfiles.save_features(cfg.run_dir, feats)
            run.history.append({
                "epoch": epoch, "step": state.step, "lr": cfg.lr * lr_factor(cfg, state.step, state.total_steps),
                "seconds": round(time.perf_counter() - started, 3),
                "train_softmax_loss": means[0], "train_center_loss": means[1], **metrics,
            })
            state.epoch, state.batch, state.seconds = epoch, 0, 0.0
            # The curves figure costs as much as both scatter plots: redrawn at most every CURVES_EVERY_S, and
            # after the last epoch and at a stop (a resume redraws curves older than the checkpoint).
            now = time.monotonic()
            curves = state.finished or self.stop.requested or now - run.curves_at >= CURVES_EVERY_S
            if cfg.plots:
                self.plots.submit_epoch(cfg.run_dir, feats, run.history if curves else [], cfg.plot_dpi)
            if curves:
                run.curves_at = now
            state.loss_sums.zero_()
            save_checkpoint(run)
            (cfg.run_dir / runfiles.DIVERGED).unlink(missing_ok=True)  # a resume got past a divergence
            runfiles.write_metrics(cfg.run_dir, run.history)
            if run.tensorboard is not None:
                run.tensorboard.log_epoch(run.history[-1], feats)

    def stopped(self, epoch: int) -> Interrupted:
        """A stop (Ctrl-C, SIGTERM): the runs saved where they stand (a checkpoint mid-epoch resumes at that
        batch; after a committed epoch there is nothing more to save), and the line that says so."""
        first = self.runs[0].state
        if first.batch:
            with self.stop.writing():
                for run in self.runs:
                    save_checkpoint(run)
        where = f"at epoch {epoch}, batch {first.batch}" if first.batch else f"after epoch {first.epoch}"
        return Interrupted(f"{describe(self.stop.signum)} {where}; {saved(len(self.runs))}", self.stop.signum,
                           resume=self.voice.resume_command(first.config))

    def diverged(self, run: Run, epoch: int, step: int) -> Diverged:
        """The error for a NaN or inf loss, saying truly what is left on disk (and leaving diverged.txt)."""
        cfg = run.state.config
        if (cfg.run_dir / runfiles.CHECKPOINT).is_file():
            kept = "its last good checkpoint is kept"
        else:
            kept = "no checkpoint was written, since no epoch had finished"
        error = Diverged(f"run {cfg.run_name}: the loss became NaN or inf at epoch {epoch}, step {step}; {kept}. "
                         f"Try a smaller {self.voice.option('lam', '...')} or {self.voice.option('lr', '...')}")
        if cfg.run_dir.is_dir():  # `centerloss list` tells a diverged run from a stopped one by this
            atomic_write_text(cfg.run_dir / runfiles.DIVERGED, str(error) + "\n")
        return error

    @contextmanager
    def interruptible(self, epoch: int) -> Iterator[None]:
        """A second Ctrl-C (stop.State.STOP_NOW) inside a training step leaves no consistent state to save: the
        run resumes from its last checkpoint, and says so."""
        try:
            yield
        except KeyboardInterrupt:
            kept = "its last checkpoint" if len(self.runs) == 1 else "their last checkpoints"
            raise Interrupted(f"interrupted again in epoch {epoch}: stopped at once; the run resumes from {kept}, "
                              "training again what followed", self.stop.signum,
                              resume=self.voice.resume_command(self.runs[0].state.config)) from None


def save_checkpoint(run: Run) -> None:
    if run.state.loss_sums.isfinite().all():  # never replace a good checkpoint with a diverged state
        records.save_checkpoint(run.run_dir, checkpoint_of(run))


def saved(k: int) -> str:
    return "checkpoint saved" if k == 1 else "checkpoints saved"


def epoch_line(run: Run, total: int, name: bool = False) -> str:
    """One line per finished epoch (of `total`): what a log file, a notebook or a terminal should show of it."""
    h = run.history[-1]
    prefix = f"{run.state.config.run_name}: " if name else ""
    return (f"{prefix}epoch {int(h['epoch'])}/{total}  train acc {100 * h['train_acc']:.2f}%  "
            f"test acc {100 * h['test_acc']:.2f}%  softmax {h['train_softmax_loss']:.4f}  "
            f"center {h['train_center_loss']:.4f}  test ratio {h['test_ratio']:.3f}  {h['seconds']:.1f} s")
