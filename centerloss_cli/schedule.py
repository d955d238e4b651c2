"""The schedule as arithmetic on step numbers: epochs, their ends, and the learning rate at each step.

Pure functions of the settings and the step, so a run resumed at any step continues exactly, and the
CLI can say how long a run will be without importing torch.
"""
from __future__ import annotations

from bisect import bisect_right

from .config import TrainConfig


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    """An epoch is ceil(n / batch) steps: every image once, and the last batch filled from the next pass."""
    return -(-n_train // config.batch_size)


def total_steps(config: TrainConfig, n_train: int) -> int:
    """--epochs whole epochs, else exactly --iterations steps (the official solver's 10,000)."""
    if config.epochs is not None:
        return config.epochs * steps_per_epoch(config, n_train)
    return config.iterations


def epoch_end(start: int, total: int, per_epoch: int) -> int:
    """The step at which the epoch that starts at step `start` ends: epochs end on multiples of the steps
    per epoch, and at the last step (10,000 steps of 128 on 60k images: 21 epochs of 469 and one of 151)."""
    return min((start // per_epoch + 1) * per_epoch, total)


def epochs_left(start: int, total: int, per_epoch: int) -> int:
    """How many epochs, this one included, run from step `start` to step `total`: the multiples of
    `per_epoch` between them, and `total` itself."""
    if start >= total:
        return 0
    return (total - 1) // per_epoch - start // per_epoch + 1


def lr_factor(config: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (counted from 0) as a multiple of --lr: the official solver's
    multistep schedule, --lr-gamma for each of --lr-milestones passed."""
    return config.lr_gamma ** bisect_right(sorted(config.lr_milestones), step)
