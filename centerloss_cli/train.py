"""The training loop: softmax + lambda * center loss on LeNet++, with per-epoch features, plots and checkpoints."""
from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import plots, runs
from .center_loss import CenterLoss
from .config import KEY_TO_FIELD, TrainConfig, to_dict, validate
from .data import MNIST, batches, epoch_permutation, load_mnist, num_batches, subset_indices
from .devices import autocast, float32_precision, resolve_device
from .errors import CenterLossError
from .metrics import compactness
from .model import LeNetPP
from .runs import CHECKPOINT, CONFIG_JSON, EpochFeatures
from .storage import RunLock, remove_stale_temp_files

# Settings that may differ when a run is resumed: they change where or how long it runs, not what it learns.
RESUME_MAY_CHANGE = frozenset({"device", "data_dir", "verify", "epochs", "iterations", "log_every"})
EVAL_BATCH = 1000


class Diverged(CenterLossError):
    exit_code = 1


class Interrupted(CenterLossError):
    exit_code = 130


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped; saved and restored whole."""

    config: TrainConfig
    n_train: int
    model: LeNetPP
    center_loss: CenterLoss
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in epoch `epoch + 1` (non-zero only after an interruption)
    loss_sums: torch.Tensor | None = None  # [softmax, center] summed over those batches, on the device
    seconds: float = 0.0  # time spent in epoch `epoch + 1` so far
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        return num_batches(self.n_train, self.config.batch_size)

    @property
    def total_epochs(self) -> int:
        return total_epochs(self.config, self.n_train)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.total_epochs

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": 1,
            "config": to_dict(self.config),
            "n_train": self.n_train,
            "model": self.model.state_dict(),
            "center_loss": self.center_loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "loss_sums": self.loss_sums.detach().cpu(),
            "seconds": self.seconds,
            "history": self.history,
            "rng": rng,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.model.load_state_dict(d["model"])
        self.center_loss.load_state_dict(d["center_loss"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.scheduler.load_state_dict(d["scheduler"])
        self.epoch, self.step, self.batch = d["epoch"], d["step"], d["batch"]
        self.loss_sums = d["loss_sums"].to(self.loss_sums.device)
        self.seconds = d["seconds"]
        self.history = list(d["history"])
        # Training draws nothing from these (the data order is a function of seed and epoch),
        # but restoring them keeps any later random draw identical to an uninterrupted run.
        torch.set_rng_state(d["rng"]["torch"])
        if "cuda" in d["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(d["rng"]["cuda"])


def total_epochs(config: TrainConfig, n_train: int) -> int:
    """--epochs, or as many whole epochs as the iteration budget (10,000 -> 21 on 60k images)."""
    if config.epochs is not None:
        return config.epochs
    return max(1, round(config.iterations / num_batches(n_train, config.batch_size)))


def new_state(config: TrainConfig, n_train: int, device: torch.device | str = "cpu") -> TrainState:
    """A freshly initialised model, centers and optimizer; the same seed gives the same weights."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LeNetPP(classifier_bias=config.classifier_bias)
        center_loss = CenterLoss(rule=config.center_update)
    # channels_last measured 1.12x faster per training step and 1.55x per evaluation forward on
    # a 2-core AVX2 CPU (bench/RESULTS.md); it is not measured on a GPU, so it stays CPU-only. A
    # 1-channel NCHW batch is already channels_last, so the inputs need no conversion.
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    center_loss.to(device)
    # The centers are a buffer, not a parameter: no weight decay or momentum ever reaches them.
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    # Milestones count iterations, as in the official solver, so the scheduler steps every batch.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.lr_milestones), gamma=config.lr_gamma
    )
    return TrainState(
        config=config, n_train=n_train, model=model, center_loss=center_loss, optimizer=optimizer,
        scheduler=scheduler, loss_sums=torch.zeros(2, dtype=torch.float64, device=device),
    )


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on softmax + lambda * center loss, then the center update. Returns the two losses."""
    cfg = state.config
    state.model.train()
    with autocast(cfg.precision, x.device):
        features, logits = state.model(x)
    # The losses, the centers and their update stay in fp32 whatever the network computes in.
    features, logits = features.float(), logits.float()
    softmax_loss = F.cross_entropy(logits, y)
    center_loss = state.center_loss(features, y)
    # With lambda = 0 the center term is left out entirely, so the network gets exactly the softmax gradient.
    loss = softmax_loss + cfg.lam * center_loss if cfg.lam else softmax_loss
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.center_loss.update(features.detach(), y, cfg.alpha)
    state.step += 1
    return softmax_loss.detach(), center_loss.detach()


@torch.inference_mode()
def extract(model: LeNetPP, images: torch.Tensor, batch_size: int = EVAL_BATCH,
            precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """2-D features and logits of `images`, in eval mode, in large batches."""
    model.eval()
    with autocast(precision, images.device):
        outs = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([f for f, _ in outs]).float(), torch.cat([l for _, l in outs]).float()


def evaluate(state: TrainState, data: MNIST, epoch: int) -> tuple[dict[str, float], EpochFeatures]:
    """Test accuracy and losses, and compactness of the test set and of the fixed plotting subset."""
    model, center_loss = state.model, state.center_loss
    test_feats, test_logits = extract(model, data.test.images, precision=state.config.precision)
    idx = subset_indices(len(data.train), state.config.plot_train_samples)
    train_images = data.train.images if idx is None else data.train.images[idx.to(data.train.images.device)]
    train_labels = data.train.labels if idx is None else data.train.labels[idx.to(data.train.labels.device)]
    train_feats, train_logits = extract(model, train_images, precision=state.config.precision)
    with torch.inference_mode():
        metrics = {
            "test_softmax_loss": F.cross_entropy(test_logits, data.test.labels).item(),
            "test_center_loss": center_loss(test_feats, data.test.labels).item(),
            "test_acc": (test_logits.argmax(1) == data.test.labels).float().mean().item(),
            "train_acc": (train_logits.argmax(1) == train_labels).float().mean().item(),
        }
    feats = EpochFeatures(
        train_features=train_feats.float().cpu().numpy(), train_labels=train_labels.cpu().numpy().astype(np.uint8),
        test_features=test_feats.float().cpu().numpy(), test_labels=data.test.labels.cpu().numpy().astype(np.uint8),
        centers=center_loss.centers.detach().float().cpu().numpy().copy(),
        epoch=epoch, lam=state.config.lam, alpha=state.config.alpha, test_acc=metrics["test_acc"],
    )
    for split in runs.SPLITS:
        c = compactness(*feats.split(split))
        metrics.update({f"{split}_{k}": v for k, v in c.items()})
    return metrics, feats


def save_checkpoint(run_dir: Path, state: TrainState) -> None:
    if state.loss_sums is not None and not torch.isfinite(state.loss_sums).all():
        return  # never replace a good checkpoint with a diverged state
    runs.save_checkpoint(run_dir, state.state_dict())


def environment(device: torch.device) -> dict[str, str]:
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
        "python_version": platform.python_version(), "resolved_device": str(device), "device_name": name,
    }


def reconcile(saved: TrainConfig, given: TrainConfig, explicit: set[str] | None) -> TrainConfig:
    """The config of a resumed run: the saved one, with only the settings that may change taken from `given`.

    `explicit` names the user-facing keys the user actually gave (None: all of them)."""
    given_d, saved_d = to_dict(given), to_dict(saved)
    # A name given by hand that equals the one derived from the settings names the same run.
    given_d["name"], saved_d["name"] = given.run_name, saved.run_name
    keys = set(given_d) if explicit is None else set(explicit)
    differ = [k for k in sorted(keys) if given_d[k] != saved_d[k] and _field(k) not in RESUME_MAY_CHANGE]
    if differ:
        shown = ", ".join(f"{k}: saved {saved_d[k]!r}, given {given_d[k]!r}" for k in differ)
        raise CenterLossError(
            f"cannot resume {saved.run_dir}: its settings differ ({shown}); "
            "drop those flags, or use --overwrite to start again"
        )
    changes = {_field(k): getattr(given, _field(k)) for k in keys if _field(k) in RESUME_MAY_CHANGE}
    return saved.with_(**changes)


def _field(key: str) -> str:
    return KEY_TO_FIELD.get(key, key)


def _check_writable(run_dir: Path) -> None:
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CenterLossError(f"output folder {parent} is not writable; choose another with --output-dir")


@contextmanager
def stop_on_sigint() -> Iterator[list[bool]]:
    """A flag set by Ctrl-C, so the loop can stop at the next batch boundary instead of mid-write."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag[0]:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def resume_command(config: TrainConfig) -> str:
    args = ["centerloss", "train", "--resume", "--output-dir", config.output_dir, "--name", config.run_name]
    return " ".join(args)


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    history: list[dict[str, float]]
    trained_epochs: int  # epochs trained by this call (0 when the run was already complete)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def summary(result: RunResult) -> str:
    f = result.final
    if not f:
        return f"run {result.run_dir}: no epoch finished yet"
    return (
        f"finished {result.run_dir.name}: epoch {int(f['epoch'])}, test accuracy {100 * f['test_acc']:.2f}%, "
        f"compactness ratio (intra/inter) train {f['train_ratio']:.3f}, test {f['test_ratio']:.3f}\n"
        f"  files: {result.run_dir}/ (metrics.csv, checkpoint.pt, features/, plots/)"
    )


def completed_result(config: TrainConfig) -> RunResult | None:
    """The result of a run whose folder holds all of its epochs, read from disk; None when it has more to do."""
    if not (config.run_dir / CHECKPOINT).is_file():
        return None
    config = reconcile(runs.read_config(config.run_dir), config, explicit=None)
    ckpt = runs.load_checkpoint(config.run_dir)
    if ckpt["epoch"] < total_epochs(config, ckpt["n_train"]):
        return None
    return RunResult(config.run_dir, config, list(ckpt["history"]), trained_epochs=0)


def prepare_run(config: TrainConfig, resume: bool, overwrite: bool, explicit: set[str] | None) -> tuple[TrainConfig, bool]:
    """The config to run with, and whether a checkpoint is to be resumed. Touches nothing on disk, and
    runs before MNIST is loaded, so an unusable run folder fails fast."""
    if resume and overwrite:
        raise CenterLossError("--resume and --overwrite contradict each other: give one")
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise CenterLossError(f"run folder {run_dir} exists and is not a folder")
    _check_writable(run_dir)
    RunLock(run_dir).check_free()
    occupied = run_dir.is_dir() and any(p.name != ".lock" for p in run_dir.iterdir())
    if occupied and not (resume or overwrite):
        raise CenterLossError(
            f"run folder {run_dir} already exists: add --resume to continue it or --overwrite to start again"
        )
    if resume and (run_dir / CONFIG_JSON).is_file():
        config = reconcile(runs.read_config(run_dir), config, explicit)
    return config, resume and (run_dir / CHECKPOINT).is_file()


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    explicit: set[str] | None = None,
    data: MNIST | None = None,
    progress: bool = True,
    position: int | None = None,
) -> RunResult:
    """Train one run into config.run_dir; with resume, continue it exactly where its checkpoint stopped.

    `explicit` names the settings the user gave (for resuming with only some flags); `data` lets
    callers that run several trainings load MNIST once; `position` places the progress bar among others.
    """
    validate(config)
    config, has_checkpoint = prepare_run(config, resume, overwrite, explicit)
    if has_checkpoint and (done := completed_result(config)) is not None:
        return done
    device = resolve_device(config.device)
    if data is None:
        data = load_mnist(config.data_dir, device, config.train_limit, config.test_limit, config.verify)
    with open_run(config, has_checkpoint, overwrite, data, device) as state, plots.PlotWorker() as plotter:
        start_epoch = state.epoch
        run_epochs(state, data, config.run_dir, progress, position, plotter)
        return RunResult(config.run_dir, config, state.history, trained_epochs=state.epoch - start_epoch)


@contextmanager
def open_run(config: TrainConfig, has_checkpoint: bool, overwrite: bool, data: MNIST,
             device: torch.device) -> Iterator[TrainState]:
    """The run folder, locked and laid out, and its training state: fresh, or restored from the checkpoint."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        remove_stale_temp_files(run_dir)
        if overwrite:
            for p in run_dir.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        (run_dir / "features").mkdir(exist_ok=True)
        (run_dir / "plots").mkdir(exist_ok=True)
        runs.write_config(run_dir, config, environment(device))
        state = new_state(config, len(data.train), device)
        if has_checkpoint:
            ckpt = runs.load_checkpoint(run_dir, device)
            if ckpt["n_train"] != len(data.train):
                raise CenterLossError(
                    f"cannot resume {run_dir}: it trained on {ckpt['n_train']} images, this data has {len(data.train)}"
                )
            state.load_state_dict(ckpt)
        runs.write_metrics(run_dir, state.history)
        plots.draw_missing_plots(run_dir, range(1, state.epoch + 1))
        yield state


def run_epochs(state: TrainState, data: MNIST, run_dir: Path, progress: bool = True, position: int | None = None,
               plotter: plots.PlotWorker | None = None) -> None:
    """Train from wherever `state` stands to the last epoch, checkpointing after each one; plots go to
    `plotter` (a background process) when given, else are drawn here."""
    cfg = state.config
    device = state.loss_sums.device
    with stop_on_sigint() as stop, float32_precision(cfg.precision):
        while not state.finished:
            epoch = state.epoch + 1
            started = time.perf_counter() - state.seconds
            order = epoch_permutation(len(data.train), cfg.seed, epoch, device)
            first_bad = torch.tensor(-1, device=device)  # the first step whose loss was not finite
            bar = tqdm(total=state.steps_per_epoch, initial=state.batch, desc=f"epoch {epoch}/{state.total_epochs}",
                       disable=not progress, leave=position is None, position=position, dynamic_ncols=True,
                       file=sys.stderr)
            with bar:
                for x, y in batches(data.train, order, cfg.batch_size, start=state.batch):
                    softmax_loss, center_loss = train_step(state, x, y)
                    losses = torch.stack([softmax_loss, center_loss]).double()
                    state.loss_sums += losses
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses).all(), state.step, first_bad)
                    state.batch += 1
                    bar.update(1)
                    # Reading a value back forces a device sync: free on the CPU, so check every step
                    # there, but only once per logging interval on an accelerator.
                    log_now = state.batch % cfg.log_every == 0 or state.batch == state.steps_per_epoch or stop[0]
                    if (log_now or device.type == "cpu") and (bad := int(first_bad)) >= 0:
                        raise diverged(epoch, bad)
                    if log_now:
                        means = (state.loss_sums / state.batch).tolist()
                        bar.set_postfix(softmax=f"{means[0]:.4f}", center=f"{means[1]:.4f}")
                    if stop[0]:
                        state.seconds = time.perf_counter() - started
                        save_checkpoint(run_dir, state)
                        raise Interrupted(
                            f"interrupted at epoch {epoch}, batch {state.batch}; checkpoint saved. "
                            f"Resume with: {resume_command(cfg)}"
                        )
            end_epoch(state, data, run_dir, epoch, started, plotter)


def diverged(epoch: int, step: int) -> Diverged:
    return Diverged(
        f"the loss became NaN or inf at epoch {epoch}, step {step}; the last good checkpoint is kept. "
        "Try a smaller --lambda or --lr"
    )


def end_epoch(state: TrainState, data: MNIST, run_dir: Path, epoch: int, started: float,
              plotter: plots.PlotWorker | None = None) -> None:
    """Evaluate, save features and plots, then checkpoint (the commit point) and rewrite metrics.csv."""
    metrics, feats = evaluate(state, data, epoch)
    means = (state.loss_sums / max(state.batch, 1)).tolist()
    if not all(math.isfinite(v) for v in (*means, metrics["test_softmax_loss"], metrics["test_center_loss"])):
        raise diverged(epoch, state.step)  # before anything of this epoch is written
    runs.save_features(run_dir, feats)
    # Plots are derived from the saved features: if a kill loses them, resuming draws them again.
    if plotter is not None:
        plotter.submit(run_dir, feats)
    else:
        plots.draw_epoch_plots(run_dir, feats)
    state.history.append({
        "epoch": epoch, "step": state.step, "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - started, 3),
        "train_softmax_loss": means[0], "train_center_loss": means[1], **metrics,
    })
    state.epoch, state.batch, state.seconds = epoch, 0, 0.0
    state.loss_sums.zero_()
    # The checkpoint is the commit point; metrics.csv is derived from it, so a crash between the two
    # is repaired when the run resumes.
    save_checkpoint(run_dir, state)
    runs.write_metrics(run_dir, state.history)
