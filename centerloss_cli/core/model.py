"""LeNets++ with a 2-D feature layer: the official Caffe net by default, the paper's Table 1 on request.

The two differ in stage 3's pooling only. The official prototxt pools the 7x7 conv3 map with kernel 3,
stride 2 in Caffe's ceil mode: windows at rows/columns 0-2, 2-4 and 4-6, so every position reaches the
feature layer. Table 1's 2x2 stride-2 pool gives the same 3x3 output, but from rows/columns 0-5 only:
13 of the 49 positions (row and column 6) never reach it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .choices import NETS
from .precision import autocast


@torch.no_grad()
def xavier_caffe_(weight: torch.Tensor) -> torch.Tensor:
    """Caffe's XavierFiller, as the official net uses: U(-a, a) with a = sqrt(3 / fan_in).

    PyTorch's xavier_uniform_ averages fan_in and fan_out instead, which makes the first conv and
    the 2 -> 10 classifier much smaller and the first epochs markedly slower.
    """
    bound = math.sqrt(3.0 / weight[0].numel())
    return weight.uniform_(-bound, bound)





def _stage(c_in: int, c_out: int, pool: nn.Module) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 5, padding=2), nn.PReLU(c_out),
        nn.Conv2d(c_out, c_out, 5, padding=2), nn.PReLU(c_out),
        pool,
    ]


class LeNetPP(nn.Module):
    """conv(32)x2 - pool - conv(64)x2 - pool - conv(128)x2 - pool3 - fc 1152->2 - PReLU - fc 2->10."""

    def __init__(self, num_classes: int = 10, feat_dim: int = 2, classifier_bias: bool = False, net: str = "official"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"net {net!r}: expected one of {', '.join(NETS)}")
        # 28 -> 14 -> 7 -> 3 either way; see the module's docstring for what differs.
        pool3 = nn.MaxPool2d(3, 2, ceil_mode=True) if net == "official" else nn.MaxPool2d(2, 2)
        self.body = nn.Sequential(*_stage(1, 32, nn.MaxPool2d(2, 2)), *_stage(32, 64, nn.MaxPool2d(2, 2)),
                                  *_stage(64, 128, pool3), nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(128 * 3 * 3, feat_dim), nn.PReLU(feat_dim))
        # No bias by default, as in the official net: with one, the class centers do not fan out
        # radially around the origin as in the paper's figures.
        self.classifier = nn.Linear(feat_dim, num_classes, bias=classifier_bias)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                xavier_caffe_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.feature(self.body(x))
        return features, self.classifier(features)


EVAL_BATCH = 1000  # images a forward pass takes at once when evaluating


@torch.inference_mode()
def extract(model: LeNetPP, images: torch.Tensor, batch_size: int = EVAL_BATCH,
            precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """2-D features and logits of `images`, in eval mode, in large batches."""
    model.eval()
    with autocast(precision, images.device):
        outs = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([f for f, _ in outs]).float(), torch.cat([logits for _, logits in outs]).float()
