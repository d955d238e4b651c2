"""An epoch's evaluation: test accuracy and losses, the 2-D features of the test set and of the fixed
plotting subset of the training set, and their compactness, as the run folder keeps them."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..core.metrics import compactness
from ..core.model import extract
from ..dataset.loading import LoadedData, subset_indices
from ..rundir.files import SPLITS, EpochFeatures

if TYPE_CHECKING:
    from ..core.state import TrainState


def evaluate(state: TrainState, data: LoadedData, epoch: int) -> tuple[dict[str, float], EpochFeatures]:
    """Test accuracy and losses, and compactness of the test set and of the fixed plotting subset."""
    cfg = state.config
    test_feats, test_logits = extract(state.model, data.test.images, precision=cfg.precision)
    idx = subset_indices(len(data.train), cfg.plot_train_samples)
    train_images = data.train.images if idx is None else data.train.images[idx.to(data.train.images.device)]
    train_labels = data.train.labels if idx is None else data.train.labels[idx.to(data.train.labels.device)]
    train_feats, train_logits = extract(state.model, train_images, precision=cfg.precision)
    with torch.inference_mode():
        metrics = {
            "test_softmax_loss": F.cross_entropy(test_logits, data.test.labels).item(),
            "test_center_loss": state.center_loss(test_feats, data.test.labels).item(),
            "test_acc": (test_logits.argmax(1) == data.test.labels).float().mean().item(),
            "train_acc": (train_logits.argmax(1) == train_labels).float().mean().item(),
        }
    feats = EpochFeatures(
        train_features=train_feats.cpu().numpy(), train_labels=train_labels.cpu().numpy().astype(np.uint8),
        test_features=test_feats.cpu().numpy(), test_labels=data.test.labels.cpu().numpy().astype(np.uint8),
        centers=state.center_loss.centers.detach().float().cpu().numpy().copy(),
        epoch=epoch, lam=cfg.lam, alpha=cfg.alpha, test_acc=metrics["test_acc"], train_acc=metrics["train_acc"],
        n_train=len(data.train), dataset=cfg.dataset,
        train_pred=train_logits.argmax(1).cpu().numpy().astype(np.uint8),
        test_pred=test_logits.argmax(1).cpu().numpy().astype(np.uint8),
    )
    for split in SPLITS:
        metrics.update({f"{split}_{k}": v for k, v in compactness(*feats.split(split)).items()})
    return metrics, feats
