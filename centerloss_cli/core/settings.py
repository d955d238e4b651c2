"""The settings the numerics read, by name. config.TrainConfig is the one the tool passes (it declares each
setting once, with its default, check and flag); a notebook may pass any object that has these."""
from __future__ import annotations

from typing import Protocol

# The choices the numerics understand (config.py offers them as settings).
CENTER_UPDATES = ("paper", "sgd", "caffe")  # center_loss.move_centers says what each does
NETS = ("official", "table1")  # the official Caffe prototxt, and the paper's Table 1 (model.py)


class Settings(Protocol):
    # The loss and the centers (paper Eq. 2 and 4).
    lam: float
    alpha: float
    center_update: str  # one of CENTER_UPDATES
    # The network.
    net: str  # one of NETS
    classifier_bias: bool
    seed: int  # of the initial weights
    # The solver.
    lr: float
    momentum: float
    weight_decay: float
    grad_clip: float  # 0: off
    label_smoothing: float
    precision: str  # fp32, tf32 or bf16 (auto is resolved before training)
    # The schedule.
    batch_size: int
    iterations: int
    epochs: int | None  # whole epochs instead of iterations
    warmup: int
    lr_schedule: str  # step, linear or cosine
    lr_milestones: tuple[int, ...]
    lr_gamma: float
