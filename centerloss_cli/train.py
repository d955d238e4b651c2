"""The training engine: the state of a run, one training step, evaluation, and the one epoch loop.

The loop drives K runs that stand at the same point (same epoch, same batch) through the same
batches. A single run is K = 1 with its own plain step (`PlainStep`); K > 1 runs (`sweep --batched`)
are stacked into one vmap'd model (`StackedStep`). Either way the loop sees per-run losses of shape
(K, 2), so divergence, Ctrl-C, the progress bar and the end of an epoch behave the same.
"""
from __future__ import annotations

import copy
import importlib.util
import math
import signal
import sys
import threading
import time
import types
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from . import plots, runs
from .center_loss import CenterLoss, center_loss, move_centers
from .config import TrainConfig, to_dict
from .data import MNIST, batches, load_mnist, stream_order, subset_indices
from .devices import autocast, float32_precision, resolve_device
from .errors import STOP_SIGNALS, CenterLossError, Diverged, Interrupted
from .metrics import compactness
from .model import LeNetPP
from .runs import EpochFeatures, RunFolder, RunResult

EVAL_BATCH = 1000
# Settings in which the runs of one stacked model may differ.
MEMBER_SETTINGS = {"lambda", "alpha", "name"}


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped; saved and restored whole."""

    config: TrainConfig
    n_train: int
    model: LeNetPP
    center_loss: CenterLoss
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    loss_sums: torch.Tensor  # [softmax, center] summed over the batches done in this epoch, on the device
    threads: int  # CPU threads it trains with: CPU results depend on the count, so a resume keeps it
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in epoch `epoch + 1` (non-zero only after an interruption)
    seconds: float = 0.0  # time spent in epoch `epoch + 1` so far
    history: list[dict[str, float]] = field(default_factory=list)
    tensorboard: Any = None  # a SummaryWriter with --tensorboard; not part of the saved state

    @property
    def run_dir(self):
        return self.config.run_dir

    @property
    def steps_per_epoch(self) -> int:
        return runs.steps_per_epoch(self.config, self.n_train)

    @property
    def total_steps(self) -> int:
        return runs.total_steps(self.config, self.n_train)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps and self.batch == 0

    def epoch_span(self) -> tuple[int, int]:
        """First and end step of the epoch in progress (or about to start). A run stopped mid-epoch with a
        smaller --iterations ends that epoch where it stopped."""
        start = self.step - self.batch
        return start, max(runs.epoch_end(start, self.total_steps, self.steps_per_epoch), self.step)

    @property
    def total_epochs(self) -> int:
        """The epoch the run will end at, as the progress bar shows it."""
        start, _ = self.epoch_span()
        return self.epoch + max(1, runs.epochs_left(start, self.total_steps, self.steps_per_epoch))

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": runs.FORMAT,
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
            "threads": self.threads,
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
        self.seconds, self.threads = d["seconds"], d["threads"]
        self.history = list(d["history"])
        # Training draws nothing from these (the data order is a function of seed and epoch),
        # but restoring them keeps any later random draw identical to an uninterrupted run.
        torch.set_rng_state(d["rng"]["torch"])
        if "cuda" in d["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(d["rng"]["cuda"])


def new_state(config: TrainConfig, n_train: int, device: torch.device | str = "cpu") -> TrainState:
    """A freshly initialised model, centers and optimizer; the same seed gives the same weights."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LeNetPP(classifier_bias=config.classifier_bias, net=config.net)
        center_loss_ = CenterLoss(rule=config.center_update)
    # channels_last measured 1.12x faster per training step and 1.55x per evaluation forward on
    # a 2-core AVX2 CPU (bench/RESULTS.md); it is not measured on a GPU, so it stays CPU-only. A
    # 1-channel NCHW batch is already channels_last, so the inputs need no conversion.
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    center_loss_.to(device)
    # The centers are a buffer, not a parameter: the network's optimizer never reaches them.
    optimizer = torch.optim.SGD(param_groups(model.named_parameters(), config), lr=config.lr, momentum=config.momentum)
    # Milestones count iterations, as in the official solver, so the scheduler steps every batch.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.lr_milestones), gamma=config.lr_gamma
    )
    return TrainState(
        config=config, n_train=n_train, model=model, center_loss=center_loss_, optimizer=optimizer,
        scheduler=scheduler, loss_sums=torch.zeros(2, dtype=torch.float64, device=device),
        threads=torch.get_num_threads(),
    )


def param_groups(named: Iterable[tuple[str, torch.Tensor]], config: TrainConfig) -> list[dict[str, Any]]:
    """The official net's two groups: weights (PReLU slopes too) at lr with weight decay, and biases at
    twice the lr with none, as every layer's `lr_mult: 2, decay_mult: 0` for its bias in the prototxt."""
    weights, biases = [], []
    for name, p in named:
        (biases if name.endswith("bias") else weights).append(p)
    return [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": biases, "lr": 2 * config.lr, "weight_decay": 0.0}]


# --- one step: a plain run, or K stacked runs ------------------------------------------------------

def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on softmax + lambda * center loss, then the center update. Returns the two losses."""
    cfg = state.config
    state.model.train()
    with autocast(cfg.precision, x.device):
        features, logits = state.model(x)
    # The losses, the centers and their update stay in fp32 whatever the network computes in.
    features, logits = features.float(), logits.float()
    softmax_loss = F.cross_entropy(logits, y)
    center = state.center_loss(features, y)
    # With lambda = 0 the center term is left out entirely, so the network gets exactly the softmax gradient.
    loss = softmax_loss + cfg.lam * center if cfg.lam else softmax_loss
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    lr = state.optimizer.param_groups[0]["lr"]  # this step's rate, which the caffe center update uses too
    state.optimizer.step()
    state.scheduler.step()
    state.center_loss.update(features.detach(), y, cfg.alpha, lr, cfg.momentum)
    state.step += 1
    return softmax_loss.detach(), center.detach()


class PlainStep:
    """K = 1: the run's own model, stepped by `train_step`."""

    def __init__(self, states: Sequence[TrainState]):
        (self.state,) = states

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack(train_step(self.state, x, y)).unsqueeze(0)

    def finish(self) -> None:
        """Nothing to copy back: the state was stepped in place."""


class StackedStep:
    """K runs as one model: parameters (K, ...), centers (K, C, D), one SGD over the stacked tensors.

    LeNet++ is too small to keep a GPU busy; stacking K runs with torch.func (stack_module_state +
    vmap) turns K small steps into one K-times-larger step. Each member keeps its own weights,
    centers, lambda, alpha and momentum and sees the same batches as it would alone.
    """

    def __init__(self, states: Sequence[TrainState]):
        self.states = list(states)
        first = self.states[0]
        cfg = first.config
        self.params, _ = stack_module_state([s.model for s in states])
        self.base = copy.deepcopy(first.model).to("meta")  # a shell for functional_call; holds no data
        device = first.center_loss.centers.device
        self.lam = torch.tensor([s.config.lam for s in states], device=device)
        self.alpha = torch.tensor([s.config.alpha for s in states], device=device).view(-1, 1, 1)
        self.centers = torch.stack([s.center_loss.centers for s in states])
        self.velocity = torch.stack([s.center_loss.velocity for s in states]) if cfg.center_update == "caffe" else None
        # SGD is elementwise, so one optimizer over stacked tensors is K independent optimizers.
        self.optimizer = torch.optim.SGD(param_groups(self.params.items(), cfg), lr=cfg.lr, momentum=cfg.momentum)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(cfg.lr_milestones), cfg.lr_gamma)
        self.scheduler.load_state_dict(first.scheduler.state_dict())
        for group, own in zip(self.optimizer.param_groups, first.optimizer.param_groups):
            group["lr"] = own["lr"]
        for name, stacked in self.params.items():
            buffers = [_momentum(s, name) for s in states]
            if all(b is not None for b in buffers):
                self.optimizer.state[stacked]["momentum_buffer"] = torch.stack(buffers)
        self.forward = vmap(lambda params, x: functional_call(self.base, params, (x,)), in_dims=(0, None))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.states[0].config
        with autocast(cfg.precision, x.device):
            features, logits = self.forward(self.params, x)  # (K, m, 2), (K, m, 10)
        features, logits = features.float(), logits.float()
        k, m = logits.shape[:2]
        softmax = F.cross_entropy(logits.reshape(k * m, -1), y.repeat(k), reduction="none").view(k, m).mean(1)
        center = center_loss(features, self.centers, y)  # (K,)
        # Members are independent, so the gradient of the sum is each member's own gradient; with
        # lambda = 0 the center term adds exactly zero.
        loss = (softmax + self.lam * center).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        move_centers(self.centers, self.velocity, features.detach(), y, cfg.center_update, self.alpha, lr, cfg.momentum)
        for s in self.states:
            s.step += 1
        return torch.stack([softmax.detach(), center.detach()], dim=1)

    def finish(self) -> None:
        """Copy every member's weights, momentum, lr schedule and centers back into its TrainState."""
        for k, s in enumerate(self.states):
            named = dict(s.model.named_parameters())
            with torch.no_grad():
                for name, stacked in self.params.items():
                    named[name].copy_(stacked[k])
                s.center_loss.centers.copy_(self.centers[k])
                if self.velocity is not None:
                    s.center_loss.velocity.copy_(self.velocity[k])
            for name, stacked in self.params.items():
                buf = self.optimizer.state.get(stacked, {}).get("momentum_buffer")
                if buf is not None:
                    s.optimizer.state[named[name]]["momentum_buffer"] = buf[k].clone()
            for group, own in zip(self.optimizer.param_groups, s.optimizer.param_groups):
                own["lr"] = group["lr"]
            s.scheduler.load_state_dict(self.scheduler.state_dict())


def _momentum(state: TrainState, name: str) -> torch.Tensor | None:
    param = dict(state.model.named_parameters())[name]
    return state.optimizer.state.get(param, {}).get("momentum_buffer")


def check_stackable(configs: Sequence[TrainConfig]) -> None:
    """Members of one stacked model may differ in lambda and alpha only."""
    first = {k: v for k, v in to_dict(configs[0]).items() if k not in MEMBER_SETTINGS}
    for c in configs[1:]:
        other = {k: v for k, v in to_dict(c).items() if k not in MEMBER_SETTINGS}
        differ = sorted(k for k in first if first[k] != other[k])
        if differ:
            raise CenterLossError(
                f"runs trained as one stacked model may differ in lambda and alpha only, not in {', '.join(differ)}"
            )


# --- evaluation and the end of an epoch --------------------------------------------------------------

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
    model, center_loss_ = state.model, state.center_loss
    test_feats, test_logits = extract(model, data.test.images, precision=state.config.precision)
    idx = subset_indices(len(data.train), state.config.plot_train_samples)
    train_images = data.train.images if idx is None else data.train.images[idx.to(data.train.images.device)]
    train_labels = data.train.labels if idx is None else data.train.labels[idx.to(data.train.labels.device)]
    train_feats, train_logits = extract(model, train_images, precision=state.config.precision)
    with torch.inference_mode():
        metrics = {
            "test_softmax_loss": F.cross_entropy(test_logits, data.test.labels).item(),
            "test_center_loss": center_loss_(test_feats, data.test.labels).item(),
            "test_acc": (test_logits.argmax(1) == data.test.labels).float().mean().item(),
            "train_acc": (train_logits.argmax(1) == train_labels).float().mean().item(),
        }
    feats = EpochFeatures(
        train_features=train_feats.float().cpu().numpy(), train_labels=train_labels.cpu().numpy().astype(np.uint8),
        test_features=test_feats.float().cpu().numpy(), test_labels=data.test.labels.cpu().numpy().astype(np.uint8),
        centers=center_loss_.centers.detach().float().cpu().numpy().copy(),
        epoch=epoch, lam=state.config.lam, alpha=state.config.alpha, test_acc=metrics["test_acc"],
        train_acc=metrics["train_acc"], n_train=len(data.train), dataset=state.config.dataset,
    )
    for split in runs.SPLITS:
        c = compactness(*feats.split(split))
        metrics.update({f"{split}_{k}": v for k, v in c.items()})
    return metrics, feats


def save_checkpoint(state: TrainState) -> None:
    if not torch.isfinite(state.loss_sums).all():
        return  # never replace a good checkpoint with a diverged state
    runs.save_checkpoint(state.run_dir, state.state_dict())


def diverged(state: TrainState, epoch: int, step: int) -> Diverged:
    """The error for a NaN or inf loss, saying truly what is left on disk."""
    if (state.run_dir / runs.CHECKPOINT).is_file():
        kept = "its last good checkpoint is kept"
    else:
        kept = "no checkpoint was written, since no epoch had finished"
    return Diverged(
        f"run {state.config.run_name}: the loss became NaN or inf at epoch {epoch}, step {step}; {kept}. "
        "Try a smaller --lambda or --lr"
    )


def end_epoch(state: TrainState, data: MNIST, epoch: int, started: float,
              plotter: plots.PlotWorker | None = None) -> None:
    """Evaluate, save features and plots, then checkpoint (the commit point) and rewrite metrics.csv."""
    metrics, feats = evaluate(state, data, epoch)
    means = (state.loss_sums / max(state.batch, 1)).tolist()
    if not all(math.isfinite(v) for v in (*means, metrics["test_softmax_loss"], metrics["test_center_loss"])):
        raise diverged(state, epoch, state.step)  # before anything of this epoch is written
    with _STOP.deferred():
        _commit_epoch(state, epoch, started, metrics, feats, means, plotter)


def _commit_epoch(state: TrainState, epoch: int, started: float, metrics: dict[str, float], feats: EpochFeatures,
                  means: list[float], plotter: plots.PlotWorker | None) -> None:
    runs.save_features(state.run_dir, feats)
    state.history.append({
        "epoch": epoch, "step": state.step, "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - started, 3),
        "train_softmax_loss": means[0], "train_center_loss": means[1], **metrics,
    })
    # Plots are derived from the saved features and history: if a kill loses them, resuming draws them again.
    if plotter is not None:
        plotter.submit(state.run_dir, feats, state.history)
    else:
        plots.draw_epoch(state.run_dir, feats, state.history)
    state.epoch, state.batch, state.seconds = epoch, 0, 0.0
    state.loss_sums.zero_()
    # The checkpoint is the commit point; metrics.csv is derived from it, so a crash between the two
    # is repaired when the run resumes.
    save_checkpoint(state)
    runs.write_metrics(state.run_dir, state.history)
    if state.tensorboard is not None:
        log_tensorboard(state.tensorboard, state.history[-1], feats)


# --- TensorBoard, optional ---------------------------------------------------------------------------

TENSORBOARD_MISSING = "--tensorboard needs the tensorboard package: pip install 'centerloss-cli[tensorboard]'"


def tensorboard_writer(run_dir: Path, first_epoch: int) -> Any:
    """A SummaryWriter on RUN/tensorboard; events of epochs from `first_epoch` on, left by a run that was
    killed before it saved them, are purged, so a resumed run logs each epoch once."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(run_dir) / runs.TENSORBOARD), purge_step=first_epoch)


def check_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise CenterLossError(TENSORBOARD_MISSING)


def log_tensorboard(writer: Any, row: dict[str, float], feats: EpochFeatures) -> None:
    """An epoch's metrics.csv row as scalars (losses/, accuracy/, compactness/), and its test scatter."""
    epoch = int(row["epoch"])
    for key, value in row.items():
        if key in ("epoch", "step", "seconds"):
            continue
        group = "losses" if key.endswith("_loss") else "accuracy" if key.endswith("_acc") else \
            "compactness" if key.split("_")[-1] in ("intra", "inter", "ratio") else "schedule"
        writer.add_scalar(f"{group}/{key}", value, epoch)
    writer.add_image("features/test", plots.feature_image(feats, "test"), epoch, dataformats="HWC")
    writer.flush()


# --- the loop ------------------------------------------------------------------------------------------

class Stop:
    """Which stop signal arrived (0: none yet); set by the handler, read at batch boundaries."""

    def __init__(self) -> None:
        self.signum = 0
        self.holding = 0  # > 0 while files are written: a second Ctrl-C then waits for the write to end

    def __bool__(self) -> bool:
        return self.signum != 0

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1


# One per process: a signal caught while no loop runs (see catch_stop_signals) is kept for the next loop.
_STOP = Stop()


def _on_stop_signal(signum: int, on_stop: Callable[[int], None] | None = None) -> None:
    if _STOP:
        if signum == signal.SIGINT == _STOP.signum and not _STOP.holding:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (run_epochs saves what it can)
        return
    _STOP.signum = signum
    if on_stop is not None:
        on_stop(signum)


@contextmanager
def stop_on_signals(on_stop: Callable[[int], None] | None = None) -> Iterator[Stop]:
    """A Stop set by any of STOP_SIGNALS, so the loop can stop at the next batch boundary instead of
    mid-write; `on_stop(signum)` is called on the first one (a sweep passes it on to its workers). A
    second Ctrl-C stops at once; other repeats change nothing. Once the block is left, the stop has been
    dealt with (a checkpoint saved, Interrupted raised), and the next run of this process starts afresh."""
    if threading.current_thread() is not threading.main_thread():
        yield _STOP
        return
    previous = {s: signal.signal(s, lambda signum, frame: _on_stop_signal(signum, on_stop)) for s in STOP_SIGNALS}
    try:
        yield _STOP
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _STOP.signum = 0


def catch_stop_signals() -> None:
    """For a process that only trains (a `sweep --jobs` worker): a stop signal that arrives outside a run's
    loop, while the data loads say, is kept instead of killing the process, and the loop stops at its
    first batch boundary, saving a checkpoint."""
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: _on_stop_signal(signum))


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


def stopped_by(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


@contextmanager
def _second_ctrl_c_stops_at_once(epoch: int, config: TrainConfig, k: int) -> Iterator[None]:
    """A second Ctrl-C that lands inside a step leaves no consistent state to save: say what is kept."""
    try:
        yield
    except KeyboardInterrupt:
        kept = "its last checkpoint" if k == 1 else "their last checkpoints"
        raise Interrupted(f"interrupted again in epoch {epoch}: stopped at once; the run resumes from {kept}, "
                          f"training again what followed. Resume with: {runs.resume_command(config)}",
                          signum=signal.SIGINT) from None


def show_bars(progress: bool) -> bool:
    """Progress bars only on a terminal: in a log file (nohup, a cluster job) they are lines joined by \\r,
    and the one line per epoch says what matters there."""
    return progress and sys.stderr.isatty()


def epoch_line(state: TrainState, total_epochs: int, name: bool = False) -> str:
    """One line per finished epoch: what a log file, a notebook or a terminal should show of it."""
    h = state.history[-1]
    run = f"{state.config.run_name}: " if name else ""
    return (f"{run}epoch {int(h['epoch'])}/{total_epochs}  train acc {100 * h['train_acc']:.2f}%  "
            f"test acc {100 * h['test_acc']:.2f}%  softmax {h['train_softmax_loss']:.4f}  "
            f"center {h['train_center_loss']:.4f}  test ratio {h['test_ratio']:.3f}  {h['seconds']:.1f} s")


def _postfix(means: torch.Tensor) -> dict[str, str]:
    """The progress bar's losses: the values for one run, the range over runs for several."""
    lo, hi = means.min(0).values.tolist(), means.max(0).values.tolist()
    show = lambda i: f"{lo[i]:.4f}" if len(means) == 1 else f"{lo[i]:.4f}..{hi[i]:.4f}"  # noqa: E731
    return {"softmax": show(0), "center": show(1)}


def run_epochs(states: Sequence[TrainState], data: MNIST, progress: bool = True, position: int | None = None,
               plotter: plots.PlotWorker | None = None) -> None:
    """Train runs that stand at the same epoch and batch to their last epoch, checkpointing each one after
    every epoch: one run with its plain step, several as one stacked model. Plots go to `plotter` (a
    background process) when given, else are drawn here."""
    first, k = states[0], len(states)
    cfg = first.config
    device = first.loss_sums.device
    with stop_on_signals() as stop, float32_precision(cfg.precision), cpu_threads(first.threads, device):
        while not first.finished:
            epoch = first.epoch + 1
            started = time.perf_counter() - first.seconds
            step = PlainStep(states) if k == 1 else StackedStep(states)
            start, end = first.epoch_span()
            steps = end - start
            order = stream_order(len(data.train), cfg.seed, start, steps, cfg.batch_size, device)
            sums = torch.stack([s.loss_sums for s in states])  # (K, 2)
            first_bad = torch.full((k,), -1, device=device)  # per run, the first step whose loss was not finite
            runs_text = "" if k == 1 else f"{k} runs, "
            total_epochs = first.total_epochs
            bar = tqdm(total=steps, initial=first.batch, desc=f"{runs_text}epoch {epoch}/{total_epochs}",
                       disable=not show_bars(progress), leave=position is None, position=position, dynamic_ncols=True,
                       file=sys.stderr)
            with bar, _second_ctrl_c_stops_at_once(epoch, cfg, k):
                for x, y in batches(data.train, order, cfg.batch_size, start=first.batch):
                    losses = step(x, y).double()
                    sums += losses
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses).all(1), first.step, first_bad)
                    for s in states:
                        s.batch += 1
                    bar.update(1)
                    # Reading a value back forces a device sync: free on the CPU, so check every step
                    # there, but only once per logging interval on an accelerator.
                    log_now = first.batch % cfg.log_every == 0 or first.batch == steps or stop
                    if log_now or device.type == "cpu":
                        for s, bad in zip(states, first_bad.tolist()):
                            if bad >= 0:
                                raise diverged(s, epoch, bad)
                    if log_now:
                        bar.set_postfix(_postfix(sums / first.batch))
                    if stop:
                        break
            step.finish()
            for s, run_sums in zip(states, sums):
                s.loss_sums.copy_(run_sums)
                s.seconds = time.perf_counter() - started
            saved = ("checkpoint saved" if k == 1 else "checkpoints saved") + ". Resume with: " + \
                runs.resume_command(cfg) + ("" if k == 1 else ", or run the same sweep again")
            if stop:
                with stop.deferred():
                    for s in states:
                        save_checkpoint(s)
                raise Interrupted(f"{stopped_by(stop.signum)} at epoch {epoch}, batch {first.batch}; {saved}",
                                  signum=stop.signum)
            if show_bars(progress):  # the test set takes a while: say so, rather than sit at 100%
                tqdm.write(f"{runs_text}epoch {epoch}/{total_epochs}: evaluating ...", file=sys.stderr)
            try:
                for s in states:
                    end_epoch(s, data, epoch, started, plotter)
                    tqdm.write(epoch_line(s, total_epochs, name=k > 1 or position is not None), file=sys.stdout)
            except KeyboardInterrupt:  # a second Ctrl-C while evaluating: keep the epoch's training, not its evaluation
                with stop.deferred():
                    for s in states:
                        if s.epoch < epoch:
                            save_checkpoint(s)
                raise Interrupted(f"interrupted again while evaluating epoch {epoch}: stopped at once; {saved} "
                                  "(it evaluates the epoch first)", signum=signal.SIGINT) from None
            if stop and not first.finished:  # the signal came while evaluating: stop before the next epoch
                raise Interrupted(f"{stopped_by(stop.signum)} after epoch {epoch}; {saved}", signum=stop.signum)


# --- whole runs: the run folders around the engine -------------------------------------------------

def load_data(config: TrainConfig, device: torch.device) -> MNIST:
    return load_mnist(config.data_dir, device, config.train_limit, config.test_limit, config.verify,
                      dataset=config.dataset)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    explicit: set[str] | None = None,
    data: MNIST | None = None,
    progress: bool = True,
    position: int | None = None,
    sweep: bool = False,
) -> RunResult:
    """Train one run into config.run_dir; with resume, continue it exactly where its checkpoint stopped.

    `explicit` names the settings the user gave (for resuming with only some flags); `data` lets
    callers that run several trainings load MNIST once; `position` places the progress bar among others;
    `sweep` makes refusals give a sweep's remedies.
    """
    return _train([config], resume=resume, overwrite=overwrite, explicit=explicit, data=data,
                  progress=progress, position=position, sweep=sweep)[0]


def train_stacked(configs: Sequence[TrainConfig], *, data: MNIST | None = None, progress: bool = True) -> list[RunResult]:
    """Train (or resume, or skip when finished) every config, unfinished ones stacked into one model.

    Runs that stand at different points (say, one was resumed alone) are stacked in groups."""
    check_stackable(configs)
    return _train(configs, resume=True, data=data, progress=progress, sweep=True)


def _restore(folder: RunFolder, n_train: int, device: torch.device) -> TrainState:
    """A run's state: new, or its checkpoint loaded; a checkpoint that does not fit is refused before the
    folder changes."""
    state = new_state(folder.config, n_train, device)
    if folder.checkpoint is not None:
        try:
            state.load_state_dict(folder.checkpoint)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CenterLossError(f"{folder.path / runs.CHECKPOINT} does not fit this run ({str(e).splitlines()[0][:200]}); "
                                  "use --overwrite to start again") from None
    return state


def _train(configs: Sequence[TrainConfig], *, resume: bool, overwrite: bool = False, explicit: set[str] | None = None,
           data: MNIST | None = None, progress: bool = True, position: int | None = None,
           sweep: bool = False) -> list[RunResult]:
    """Open every run folder (checked and locked), then train those that are not complete, each group
    of runs that stand at the same point through one loop."""
    with ExitStack() as opened:
        folders = [opened.enter_context(RunFolder(runs.named_for_data(c), resume=resume, overwrite=overwrite,
                                                  explicit=explicit, sweep=sweep))
                   for c in configs]
        todo = [f for f in folders if not f.complete]
        results = {}
        for f in folders:
            if f.complete:
                f.repair()
                results[f.path] = f.result()
        if todo:
            device = resolve_device(todo[0].config.device)
            if data is None:
                data = load_data(todo[0].config, device)
            for f in todo:
                f.check_data(len(data.train), data.fingerprint)  # everything is checked before the first folder changes
            if any(f.config.tensorboard for f in todo):
                check_tensorboard()
            states = [_restore(f, len(data.train), device) for f in todo]
            groups: dict[tuple[int, ...], list[tuple[RunFolder, TrainState]]] = {}
            for f, state in zip(todo, states):
                f.create(runs.environment(device))
                f.repair()
                if f.config.tensorboard:
                    state.tensorboard = opened.enter_context(closing(tensorboard_writer(f.path, state.epoch + 1)))
                key = (state.epoch, state.step, state.total_steps, state.threads)
                groups.setdefault(key, []).append((f, state))
            plotter = opened.enter_context(plots.PlotWorker())
            for group in groups.values():
                start = group[0][1].epoch
                run_epochs([s for _, s in group], data, progress, position, plotter)
                for f, s in group:
                    results[f.path] = f.result(s.epoch - start, s.history)
        return [results[f.path] for f in folders]


# `from centerloss_cli import train` gives this module, since a package's submodule of that name takes
# the name over; making the module callable lets that import serve as the function too:
# train(config) is train.train(config), while train.run_epochs and the rest stay where they are.
class _CallableModule(types.ModuleType):
    def __call__(self, config: TrainConfig, **options: Any) -> RunResult:
        return train(config, **options)


sys.modules[__name__].__class__ = _CallableModule
