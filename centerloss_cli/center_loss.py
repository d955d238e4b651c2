"""The center loss (paper Eq. 2) and the two ways of moving the centers."""
from __future__ import annotations

import torch
from torch import nn

from .model import xavier_caffe_

CENTER_UPDATES = ("paper", "sgd")


class CenterLoss(nn.Module):
    """L_C = sum_i ||x_i - c_{y_i}||^2 / (2m), with the centers kept as a buffer.

    The centers are never trained by the network's optimizer (so no weight decay and no momentum
    reach them); `update` moves them after every optimizer step.
    """

    def __init__(self, num_classes: int = 10, feat_dim: int = 2, rule: str = "paper"):
        super().__init__()
        if rule not in CENTER_UPDATES:
            raise ValueError(f"center update {rule!r}: expected one of {', '.join(CENTER_UPDATES)}")
        self.rule = rule
        # Filled as the official Caffe layer fills its centers.
        self.register_buffer("centers", xavier_caffe_(torch.empty(num_classes, feat_dim)))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gives the features the gradient (x_i - c_{y_i}) / m and the centers none."""
        return (features - self.centers[labels]).pow(2).sum() / (2 * features.shape[0])

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, alpha: float) -> None:
        """Move the centers toward the batch's (detached) features of their class.

        "paper" (Eq. 4): c_j -= alpha * sum_{y_i=j} (c_j - x_i) / (1 + n_j); a class absent from
        the batch has delta 0. It uses neither lambda, nor the batch size, nor the network's lr.
        "sgd": c -= alpha * dL_C/dc, the autograd gradient of L_C (which divides by m), as in
        popular re-implementations that train the centers as a parameter, but without their
        1/lambda rescaling, so lambda = 0 is fine.
        """
        features = features.detach().to(self.centers.dtype)
        if self.rule == "paper":
            diff = self.centers[labels] - features
            delta = torch.zeros_like(self.centers).index_add_(0, labels, diff)
            counts = torch.bincount(labels, minlength=self.centers.shape[0]).to(self.centers.dtype)
            self.centers.sub_(alpha * delta / (1.0 + counts).unsqueeze(1))
        else:
            with torch.enable_grad():
                centers = self.centers.clone().requires_grad_(True)
                loss = (features - centers[labels]).pow(2).sum() / (2 * features.shape[0])
                (grad,) = torch.autograd.grad(loss, centers)
            self.centers.sub_(alpha * grad)
