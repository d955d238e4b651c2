"""One run's training state and one training step: forward, softmax + lambda * center loss, backward, SGD,
the centers' step. The epoch loop (loop.py) drives it; stacked.py steps K runs at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .center_loss import CenterLoss, center_loss, move_centers
from .model import LeNetPP
from .precision import autocast
from .schedule import epoch_end, epochs_left, lr_factor, steps_per_epoch, total_steps
from .settings import Settings
from .solver import SGD

EVAL_BATCH = 1000


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped; saved and restored whole."""

    config: Settings
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


def new_state(config: Settings, n_train: int, device: torch.device | str = "cpu") -> TrainState:
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


def set_lr(optimizer: SGD, config: Settings, step: int, total: int) -> float:
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
    move_centers(state.center_loss.centers, state.center_loss.velocity, features.detach(), y,
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
