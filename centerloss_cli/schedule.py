"""The schedule as arithmetic on step numbers: epochs, their ends, and the learning rate at each step.

Pure functions of the settings and the step, so a run resumed at any step continues exactly, and the
CLI can say how long a run will be without importing torch.
"""
from __future__ import annotations

import math
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


def lr_factor(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of step `step` (counted from 0) of `total` as a multiple of --lr.

    --warmup first: (step + 1) / warmup over its steps. Then step (the official solver's): --lr-gamma for
    each of --lr-milestones passed; linear or cosine: from 1 down to 0 at step `total`, over the steps
    after the warm-up. A resume that extends the run stretches that decay over the new total."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.lr_schedule == "step":
        return config.lr_gamma ** bisect_right(sorted(config.lr_milestones), step)
    t = min(1.0, (step - config.warmup) / max(1, total - config.warmup))
    return 1 - t if config.lr_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * t))


FULL_TRAIN_SET = 60_000  # MNIST's and Fashion-MNIST's training images, of which --train-limit takes a part


def planned_train_images(config: TrainConfig) -> int:
    """The training images a run of `config` will have, known before any data is read (MNIST's and
    Fashion-MNIST's full sets, or --train-limit of them); other data (--no-verify) may have fewer."""
    return min(config.train_limit or FULL_TRAIN_SET, FULL_TRAIN_SET)


def fit_to_run(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """A config made for a longer run (a built-in one shrunk by --train-limit or --epochs), fitted to this
    run, and a line for each change or trap: a warm-up at least as long as the run is clipped to half of it
    (else the rate never peaks nor decays), plot samples beyond the training images are clipped to them
    (so the name says what is plotted), and milestones of the user's past the last step are named, since
    they never act."""
    n_train = planned_train_images(config)
    total = total_steps(config, n_train)
    changes, notes = {}, []
    if config.warmup >= total > 1:
        changes["warmup"] = total // 2
        notes.append(f"warmup = {config.warmup} is not shorter than this run's {total} steps, so the rate would "
                     f"never reach lr nor decay: clipped to {total // 2}, half the run")
    if config.train_limit is not None and config.plot_train_samples > n_train and \
            config.plot_train_samples != TrainConfig().plot_train_samples:
        changes["plot_train_samples"] = n_train
        notes.append(f"plot_train_samples = {config.plot_train_samples} is more than the {n_train} training "
                     f"images: clipped to {n_train}")
    late = [m for m in config.lr_milestones if m >= total]
    # The paper's own milestones on a short run are what a quick look at the paper's solver means: no word.
    if config.lr_schedule == "step" and late and config.lr_milestones != TrainConfig().lr_milestones:
        notes.append(f"lr_milestones {', '.join(map(str, late))} fall at or after this run's last step ({total}): "
                     "they never lower the rate")
    return (config.with_(**changes) if changes else config), notes
