"""The training numerics: the state of a run, one training step, and evaluation.

No files, processes or signals here: the epoch loop (loop.py) drives these, and stacked.py steps K
runs at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .center_loss import CenterLoss, center_loss, move_centers
from .config import TrainConfig
from .data import MNIST, subset_indices
from .devices import autocast
from .metrics import compactness
from .model import LeNetPP
from .runfiles import FORMAT, SPLITS, EpochFeatures
from .schedule import epoch_end, epochs_left, lr_factor, steps_per_epoch, total_steps
from .schema import to_dict
from .solver import SGD

EVAL_BATCH = 1000


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped; saved and restored whole."""

    config: TrainConfig
    n_train: int
    model: LeNetPP
    center_loss: CenterLoss
    optimizer: SGD
    loss_sums: torch.Tensor  # [softmax, center] summed over the batches done in this epoch, on the device
    threads: int  # CPU threads it trains with: CPU results depend on the count, so a resume keeps it
    fingerprint: str = ""  # of the data it trains on (fetch.fingerprint)
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in epoch `epoch + 1` (non-zero only after an interruption)
    seconds: float = 0.0  # time spent in epoch `epoch + 1` so far
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return total_steps(self.config, self.n_train)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps and self.batch == 0

    def epoch_span(self) -> tuple[int, int]:
        """First and end step of the epoch in progress (or about to start). A run stopped mid-epoch with a
        smaller --iterations ends that epoch where it stopped."""
        start = self.step - self.batch
        per_epoch = steps_per_epoch(self.config, self.n_train)
        return start, max(epoch_end(start, self.total_steps, per_epoch), self.step)

    @property
    def total_epochs(self) -> int:
        """The epoch the run will end at, as the progress bar shows it."""
        start, _ = self.epoch_span()
        return self.epoch + max(1, epochs_left(start, self.total_steps, steps_per_epoch(self.config, self.n_train)))

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": FORMAT, "config": to_dict(self.config), "data_fingerprint": self.fingerprint,
            "n_train": self.n_train, "model": self.model.state_dict(), "center_loss": self.center_loss.state_dict(),
            "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step, "batch": self.batch,
            "loss_sums": self.loss_sums.detach().cpu(), "seconds": self.seconds, "threads": self.threads,
            "history": self.history, "rng": rng,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.model.load_state_dict(d["model"])
        self.center_loss.load_state_dict(d["center_loss"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.epoch, self.step, self.batch = d["epoch"], d["step"], d["batch"]
        self.loss_sums = d["loss_sums"].to(self.loss_sums.device)
        self.seconds, self.threads = d["seconds"], d["threads"]
        self.history = list(d["history"])
        # Training draws nothing from these (the data order is a function of seed and step), but
        # restoring them keeps any later random draw identical to an uninterrupted run.
        torch.set_rng_state(d["rng"]["torch"])
        if "cuda" in d["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(d["rng"]["cuda"])


def new_state(config: TrainConfig, n_train: int, device: torch.device | str = "cpu") -> TrainState:
    """A freshly initialised model, centers and optimizer; the same seed gives the same weights."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LeNetPP(classifier_bias=config.classifier_bias, net=config.net)
        center_loss = CenterLoss(rule=config.center_update)
    # channels_last measured 1.12x faster per training step and 1.55x per evaluation forward on a 2-core
    # AVX2 CPU (bench/RESULTS.md); not measured on a GPU, so CPU-only. A 1-channel NCHW batch is already
    # channels_last, so the inputs need no conversion.
    model.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format)
    center_loss.to(device)
    # The centers are a buffer, not a parameter: the network's optimizer never reaches them.
    optimizer = SGD(model.named_parameters(), config.lr, config.momentum, config.weight_decay)
    return TrainState(config=config, n_train=n_train, model=model, center_loss=center_loss, optimizer=optimizer,
                      loss_sums=torch.zeros(2, dtype=torch.float64, device=device), threads=torch.get_num_threads())


def set_lr(optimizer: SGD, config: TrainConfig, step: int, total: int) -> float:
    """Put the learning rate of step `step` of `total` (schedule.lr_factor) into the optimizer; returns the
    weights' rate."""
    lr = config.lr * lr_factor(config, step, total)
    optimizer.set_lr(lr)
    return lr


def step_numerics(state: TrainState, x: torch.Tensor, y: torch.Tensor, lr: float | torch.Tensor,
                  graph: bool = False) -> torch.Tensor:
    """The work of one step: forward, softmax + lambda * center loss, backward, SGD at `lr`, the centers'
    step. Returns the two losses. The gradients are None on entry; `lr` is a number, or a tensor on the
    device in a CUDA graph (`graph`), which replays this with each step's rate written into it."""
    cfg = state.config
    state.model.train()
    with autocast(cfg.precision, x.device, cache=not graph):
        features, logits = state.model(x)
    # The losses, the centers and their update stay in fp32 whatever the network computes in.
    features, logits = features.float(), logits.float()
    softmax_loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    center = center_loss(features, state.center_loss.centers, y)
    # With lambda = 0 the center term is left out entirely, so the network gets exactly the softmax gradient.
    loss = softmax_loss + cfg.lam * center if cfg.lam else softmax_loss
    loss.backward()
    if cfg.grad_clip:
        state.optimizer.clip(cfg.grad_clip)
    state.optimizer.step(lr)
    move_centers(state.center_loss.centers, getattr(state.center_loss, "velocity", None), features.detach(), y,
                 cfg.center_update, cfg.alpha, lr, cfg.momentum)  # lr: this step's rate, which caffe's centers use
    return torch.stack([softmax_loss.detach(), center.detach()])


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on softmax + lambda * center loss, then the center update. Returns the two losses."""
    state.optimizer.zero_grad()
    losses = step_numerics(state, x, y, set_lr(state.optimizer, state.config, state.step, state.total_steps))
    state.step += 1
    return losses[0], losses[1]


class PlainStep:
    """K = 1: the run's own model, stepped by `train_step`; per-run losses of shape (1, 2), as K runs give.
    `prepare`, `body` and `advance` are a step's three parts for a CUDA graph (capture.py)."""

    def __init__(self, states: list[TrainState]):
        (self.state,) = states

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack(train_step(self.state, x, y)).unsqueeze(0)

    def prepare(self, clear_grads: bool = True) -> float:
        """The host's part: this step's learning rate (the gradients cleared, but for a graph's replay)."""
        if clear_grads:
            self.state.optimizer.zero_grad()
        return set_lr(self.state.optimizer, self.state.config, self.state.step, self.state.total_steps)

    def body(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, graph: bool = True) -> torch.Tensor:
        return step_numerics(self.state, x, y, lr, graph).unsqueeze(0)

    def advance(self) -> None:
        self.state.step += 1

    def finish(self) -> None:
        """Nothing to copy back: the state was stepped in place."""


@torch.inference_mode()
def extract(model: LeNetPP, images: torch.Tensor, batch_size: int = EVAL_BATCH,
            precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """2-D features and logits of `images`, in eval mode, in large batches."""
    model.eval()
    with autocast(precision, images.device):
        outs = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([f for f, _ in outs]).float(), torch.cat([logits for _, logits in outs]).float()


def evaluate(state: TrainState, data: MNIST, epoch: int) -> tuple[dict[str, float], EpochFeatures]:
    """Test accuracy and losses, and compactness of the test set and of the fixed plotting subset."""
    cfg = state.config
    test_feats, test_logits = extract(state.model, data.test.images, precision=cfg.precision)
    idx = subset_indices(len(data.train), cfg.plot_train_samples)
    train_images = data.train.images if idx is None else data.train.images[idx.to(data.train.images.device)]
    train_labels = data.train.labels if idx is None else data.train.labels[idx.to(data.train.labels.device)]
    train_feats, train_logits = extract(state.model, train_images, precision=cfg.precision)
    with torch.inference_mode():
        metrics = {
            "test_softmax_loss": F.cross_entropy(test_logits, data.test.labels).item(),
            "test_center_loss": state.center_loss(test_feats, data.test.labels).item(),
            "test_acc": (test_logits.argmax(1) == data.test.labels).float().mean().item(),
            "train_acc": (train_logits.argmax(1) == train_labels).float().mean().item(),
        }
    feats = EpochFeatures(
        train_features=train_feats.cpu().numpy(), train_labels=train_labels.cpu().numpy().astype(np.uint8),
        test_features=test_feats.cpu().numpy(), test_labels=data.test.labels.cpu().numpy().astype(np.uint8),
        centers=state.center_loss.centers.detach().float().cpu().numpy().copy(),
        epoch=epoch, lam=cfg.lam, alpha=cfg.alpha, test_acc=metrics["test_acc"], train_acc=metrics["train_acc"],
        n_train=len(data.train), dataset=cfg.dataset,
    )
    for split in SPLITS:
        metrics.update({f"{split}_{k}": v for k, v in compactness(*feats.split(split)).items()})
    return metrics, feats
