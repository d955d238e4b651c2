"""One run's training state: the network, its centers and optimizer, and where it stands in its schedule,
freshly made or as a checkpoint holds it.

`config` is a TrainConfig (settings/config.py), or any object with the fields read here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .center_loss import CenterLoss
from .model import LeNetPP
from .schedule import epoch_end, epochs_left, steps_per_epoch, total_steps
from .solver import SGD


@dataclass
class TrainState:
    """The numerics of a run at a step: enough to take the next step exactly as an uninterrupted run would."""

    config: Any
    n_train: int
    model: LeNetPP
    center_loss: CenterLoss
    optimizer: SGD
    loss_sums: torch.Tensor  # [softmax, center] summed over the batches done in this epoch, on the device
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in epoch `epoch + 1` (non-zero only after an interruption)
    seconds: float = 0.0  # time spent in epoch `epoch + 1` so far

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


def new_state(config: Any, n_train: int, device: torch.device | str = "cpu") -> TrainState:
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
                      loss_sums=torch.zeros(2, dtype=torch.float64, device=device))
