"""The center loss (paper Eq. 2) and the three ways of moving the centers, for one process or several.

    center_loss = CenterLoss(num_classes, feat_dim).to(device)
    loss = softmax_loss + lam * center_loss(features, labels)      # the network's gradient
    loss.backward(); optimizer.step()
    center_loss.update(features, labels, alpha)                     # the centers' step (Eq. 4)

Under torch.distributed (DistributedDataParallel), `update` all-reduces the per-class sums and counts in
one collective, so every rank moves its centers by the whole global batch and all ranks keep identical
centers.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterator

import torch
from torch import nn

from .choices import CENTER_UPDATES
from .model import xavier_caffe_

Reduce = Callable[[torch.Tensor], None]  # sums a tensor in place over every process (an all-reduce)


def center_loss(features: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_C = sum_i ||x_i - c_{y_i}||^2 / (2m), the official layer's form of Eq. 2.

    features [..., m, D] and centers [..., C, D] share their leading dims (none for one run, K for K
    stacked runs); the result has those leading dims. The gradient to x_i is (x_i - c_{y_i}) / m.
    """
    return (features - centers[..., labels, :]).pow(2).sum((-2, -1)) / (2 * features.shape[-2])


def distributed_sum() -> Reduce | None:
    """An in-place all-reduce over torch.distributed's default group, when one is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return lambda t: torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return None


def center_delta(centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, rule: str = "paper",
                 reduce: Reduce | None = None) -> torch.Tensor:
    """The step the centers take, before it is scaled by alpha: c <- c - alpha * delta.

    "paper" and "caffe" (Eq. 4): delta_j = sum_{y_i=j} (c_j - x_i) / (1 + n_j); a class absent from the
    batch has delta 0. It uses neither lambda, nor the batch size, nor the network's lr.
    "sgd": delta = dL_C/dc = sum_{y_i=j} (c_j - x_i) / m, the gradient of L_C, as in popular
    re-implementations that train the centers as a parameter, but without their 1/lambda rescaling,
    so lambda = 0 is fine.
    `reduce` sums the per-class sums, the counts n_j and the batch size m over processes (one
    collective), so the step is the one of the whole global batch.
    Centers may be (C, D) with features (m, D), or stacked runs (K, C, D) with features (K, m, D).
    """
    diff = centers[..., labels, :] - features
    sums = torch.zeros_like(centers).index_add_(centers.dim() - 2, labels, diff)
    # n_j by index_add_, not bincount: on CUDA bincount reads the labels' maximum back to the host.
    ones = torch.ones(labels.shape, dtype=centers.dtype, device=centers.device)
    counts = torch.zeros(centers.shape[-2], dtype=centers.dtype, device=centers.device).index_add_(0, labels, ones)
    m = torch.full((1,), features.shape[-2], dtype=centers.dtype, device=centers.device)
    if reduce is not None:
        packed = torch.cat([sums.flatten(), counts, m])
        reduce(packed)
        sums, counts, m = packed[: sums.numel()].view_as(sums), packed[sums.numel() : -1], packed[-1:]
    if rule == "sgd":
        return sums / m
    return sums / (1.0 + counts).unsqueeze(-1)


@torch.no_grad()
def move_centers(centers: torch.Tensor, velocity: torch.Tensor | None, features: torch.Tensor, labels: torch.Tensor,
                 rule: str, alpha: float | torch.Tensor, lr: float | torch.Tensor = 0.0, momentum: float = 0.0,
                 reduce: Reduce | None = None) -> None:
    """One step of the centers, in place, for one run or K stacked ones (alpha then of shape (K, 1, 1)).

    paper, sgd: c <- c - alpha * delta.
    caffe: the official code makes the centers a solver parameter whose "gradient" is Eq. 4's delta, and
    Caffe's SGD applies it with the network's lr (lr_mult 1), its schedule and momentum, and no weight
    decay: v <- momentum * v + lr * delta; c <- c - v. Caffe keeps lr inside the history, where PyTorch's
    SGD multiplies it outside; the two differ only after an lr drop, and this follows Caffe.
    """
    delta = center_delta(centers, features, labels, rule, reduce)
    if rule == "caffe":
        velocity.mul_(momentum)
        if isinstance(lr, torch.Tensor):  # a CUDA graph's rate, on the device
            velocity.add_(delta * lr)
        else:
            velocity.add_(delta, alpha=lr)
        centers.sub_(velocity)
    else:
        centers.sub_(alpha * delta)


class CenterLoss(nn.Module):
    """L_C = sum_i ||x_i - c_{y_i}||^2 / (2m), with the centers kept as a buffer, for any number of classes
    and any feature dimension.

    The centers are never trained by an optimizer (so no weight decay ever reaches them): `update` moves
    them after every optimizer step, by the rule chosen (see `move_centers`), over all processes under
    torch.distributed. They stay fp32 whatever precision the features come in (bf16 or fp16 autocast).
    """

    def __init__(self, num_classes: int = 10, feat_dim: int = 2, rule: str = "paper"):
        super().__init__()
        if rule not in CENTER_UPDATES:
            raise ValueError(f"center update {rule!r}: expected one of {', '.join(CENTER_UPDATES)}")
        self.rule = rule
        # Filled as the official Caffe layer fills its centers.
        self.register_buffer("centers", xavier_caffe_(torch.empty(num_classes, feat_dim)))
        # caffe's momentum history of the centers; None (and so not in the state dict) for the other rules.
        self.register_buffer("velocity", torch.zeros(num_classes, feat_dim) if rule == "caffe" else None)
        self._training_forwards = 0  # forwards that will back-propagate, since the last update
        self._updated = False

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gives the features the gradient (x_i - c_{y_i}) / m and the centers none."""
        self._check(features, labels)
        if features.requires_grad and torch.is_grad_enabled():
            self._training_forwards += 1
            if self._training_forwards == 2 and not self._updated:
                warnings.warn("CenterLoss: the centers have not moved: the loss was computed for training twice, "
                              "and update() never called. Call center_loss.update(features, labels, alpha) after "
                              "each optimizer.step() (docs/center-loss.md)", stacklevel=2)
        if not labels.numel():  # an empty batch pulls nothing: 0, not the 0/0 of a mean over no features
            return features.sum() * 0.0
        return center_loss(features, self.centers, labels.long())

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, alpha: float, lr: float = 0.0,
               momentum: float = 0.0) -> None:
        """Move the centers toward the batch's (detached) features of their class. `alpha` is the paper's
        and sgd's rate; `lr` (the network's current one) and `momentum` are caffe's."""
        self._check(features, labels)
        self._updated, self._training_forwards = True, 0
        reduce = distributed_sum()
        if not labels.numel() and reduce is None:  # no feature, no other process: no center moves
            return  # (sgd's mean over an empty batch was 0/0: every center NaN)
        features = features.detach().to(self.centers.dtype)
        # Class indices as int64: uint8 labels would index as a boolean mask.
        move_centers(self.centers, self.velocity, features, labels.long(), self.rule, alpha, lr,
                     momentum, reduce)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """None: the centers are a buffer. An optimizer built on them would never move them (torch refuses an
        empty parameter list); they are moved by `update`."""
        warnings.warn("CenterLoss has no parameters: its centers are a buffer moved by update(features, labels, "
                      "alpha), not by an optimizer; delete the center optimizer (docs/center-loss.md)", stacklevel=2)
        return super().parameters(recurse)

    def _check(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Shapes, types and label range, refused in one line naming them."""
        classes, dim = self.centers.shape
        if features.dim() != 2 or features.shape[1] != dim:
            raise ValueError(f"features of shape {tuple(features.shape)}: expected (batch, {dim})")
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels of shape {tuple(labels.shape)}: expected ({features.shape[0]},), one per "
                             f"row of the features")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"labels of dtype {labels.dtype}: expected integer class indices")
        if not labels.numel():
            return
        if labels.device.type == "cpu":
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= classes:
                raise ValueError(f"labels must be in [0, {classes}): got {lo if lo < 0 else hi}")
        else:  # checked on the device, without waiting for it (a host sync would stall every step)
            torch._assert_async(((labels >= 0) & (labels < classes)).all(), f"labels must be in [0, {classes})")
