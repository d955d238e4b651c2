"""The schedule as arithmetic on step numbers: epochs, their ends, and the learning rate at each step.

Pure functions of the settings and the step, so a run resumed at any step continues exactly, and the
CLI can say how long a run will be without importing torch. `config` is a TrainConfig (settings/config.py),
or any object with the fields read here, as everywhere in core/.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any


def steps_per_epoch(config: Any, n_train: int) -> int:
    """An epoch is ceil(n / batch) steps: every image once, and the last batch filled from the next pass."""
    return -(-n_train // config.batch_size)


def total_steps(config: Any, n_train: int) -> int:
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


def warmup_steps(config: Any, total: int) -> int:
    """The steps the rate warms up over in a run of `total` steps: --warmup, or half the run where --warmup
    is not shorter than it (else the rate would never peak nor decay). The setting stays as given, so a run
    is named and resumed by what the user asked for, and a resume that extends the run warms up as asked."""
    return config.warmup if config.warmup < total or total <= 1 else total // 2


def lr_factor(config: Any, step: int, total: int) -> float:
    """The learning rate of step `step` (counted from 0) of `total` as a multiple of --lr.

    The warm-up first (warmup_steps): (step + 1) / warmup over its steps. Then step (the official
    solver's): --lr-gamma for each of --lr-milestones passed; linear or cosine: from 1 down to 0 at step
    `total`, over the steps after the warm-up. A resume that extends the run stretches that decay over the
    new total."""
    warmup = warmup_steps(config, total)
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "step":
        return config.lr_gamma ** bisect_right(sorted(config.lr_milestones), step)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1 - t if config.lr_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * t))
