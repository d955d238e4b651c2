"""The center loss (paper Eq. 2) and the three ways of moving the centers."""
from __future__ import annotations

import torch
from torch import nn

from .config import CENTER_UPDATES
from .model import xavier_caffe_


def center_loss(features: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_C = sum_i ||x_i - c_{y_i}||^2 / (2m), the official layer's form of Eq. 2.

    features [..., m, D] and centers [..., C, D] share their leading dims (none for one run, K for K
    stacked runs); the result has those leading dims. The gradient to x_i is (x_i - c_{y_i}) / m.
    """
    return (features - centers[..., labels, :]).pow(2).sum((-2, -1)) / (2 * features.shape[-2])


class CenterLoss(nn.Module):
    """L_C = sum_i ||x_i - c_{y_i}||^2 / (2m), with the centers kept as a buffer.

    The centers are never trained by the network's optimizer (so no weight decay ever reaches them);
    `update` moves them after every optimizer step, by the rule chosen (see `move_centers`).
    """

    def __init__(self, num_classes: int = 10, feat_dim: int = 2, rule: str = "paper"):
        super().__init__()
        if rule not in CENTER_UPDATES:
            raise ValueError(f"center update {rule!r}: expected one of {', '.join(CENTER_UPDATES)}")
        self.rule = rule
        # Filled as the official Caffe layer fills its centers.
        self.register_buffer("centers", xavier_caffe_(torch.empty(num_classes, feat_dim)))
        if rule == "caffe":  # the official solver's momentum history of the centers
            self.register_buffer("velocity", torch.zeros(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gives the features the gradient (x_i - c_{y_i}) / m and the centers none."""
        return center_loss(features, self.centers, labels)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, alpha: float, lr: float = 0.0,
               momentum: float = 0.0) -> None:
        """Move the centers toward the batch's (detached) features of their class. `alpha` is the paper's
        and sgd's rate; `lr` (the network's current one) and `momentum` are caffe's."""
        features = features.detach().to(self.centers.dtype)
        move_centers(self.centers, getattr(self, "velocity", None), features, labels, self.rule, alpha, lr, momentum)


@torch.no_grad()
def move_centers(centers: torch.Tensor, velocity: torch.Tensor | None, features: torch.Tensor, labels: torch.Tensor,
                 rule: str, alpha: float | torch.Tensor, lr: float = 0.0, momentum: float = 0.0) -> None:
    """One step of the centers, in place, for one run or K stacked ones (alpha then of shape (K, 1, 1)).

    paper, sgd: c <- c - alpha * delta.
    caffe: the official code makes the centers a solver parameter whose "gradient" is Eq. 4's delta, and
    Caffe's SGD applies it with the network's lr (lr_mult 1), its schedule and momentum, and no weight
    decay: v <- momentum * v + lr * delta; c <- c - v. Caffe keeps lr inside the history, where PyTorch's
    SGD multiplies it outside; the two differ only after an lr drop, and this follows Caffe.
    """
    delta = center_delta(centers, features, labels, rule)
    if rule == "caffe":
        velocity.mul_(momentum).add_(delta, alpha=lr)
        centers.sub_(velocity)
    else:
        centers.sub_(alpha * delta)


def center_delta(centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, rule: str = "paper") -> torch.Tensor:
    """The step the centers take, before it is scaled by alpha: c <- c - alpha * delta.

    "paper" and "caffe" (Eq. 4): delta_j = sum_{y_i=j} (c_j - x_i) / (1 + n_j); a class absent from the batch has
    delta 0. It uses neither lambda, nor the batch size, nor the network's lr.
    "sgd": delta = dL_C/dc, the autograd gradient of L_C (which divides by m), as in popular
    re-implementations that train the centers as a parameter, but without their 1/lambda rescaling,
    so lambda = 0 is fine.
    Centers may be (C, D) with features (m, D), or stacked runs (K, C, D) with features (K, m, D).
    """
    if rule in ("paper", "caffe"):
        diff = centers[..., labels, :] - features
        delta = torch.zeros_like(centers).index_add_(centers.dim() - 2, labels, diff)
        # n_j by index_add_, not bincount: on CUDA bincount reads the labels' maximum back to the host.
        ones = torch.ones(labels.shape, dtype=centers.dtype, device=centers.device)
        counts = torch.zeros(centers.shape[-2], dtype=centers.dtype, device=centers.device).index_add_(0, labels, ones)
        return delta / (1.0 + counts).unsqueeze(-1)
    with torch.enable_grad():
        c = centers.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(center_loss(features, c, labels).sum(), c)
    return grad
