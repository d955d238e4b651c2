"""A run folder's layout, and reading and writing what it holds.

outputs/<name>/
  config.json          every resolved setting, plus versions and device
  metrics.csv          one row per finished epoch, rewritten from the checkpoint's history
  checkpoint.pt        the whole training state (see train.TrainState)
  features/epoch_NNN.npz   2-D features, labels and centers of that epoch
  plots/{train,test}_epoch_NNN.png
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from .errors import CenterLossError
from .storage import atomic_write, atomic_write_text

# torch and the config are imported where they are used: the plotting process imports this module,
# and should start in a second, not in the several that importing torch takes.
if TYPE_CHECKING:
    import torch

    from .config import TrainConfig

CHECKPOINT = "checkpoint.pt"
CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
METRIC_COLUMNS = [
    "epoch", "step", "lr", "seconds",
    "train_softmax_loss", "train_center_loss", "train_acc",
    "test_softmax_loss", "test_center_loss", "test_acc",
    "train_intra", "train_inter", "train_ratio", "test_intra", "test_inter", "test_ratio",
]
SPLITS = ("train", "test")


@dataclass
class EpochFeatures:
    """What one epoch's features/epoch_NNN.npz holds."""

    train_features: np.ndarray  # (N, 2) float32
    train_labels: np.ndarray  # (N,) uint8
    test_features: np.ndarray
    test_labels: np.ndarray
    centers: np.ndarray  # (10, 2) float32
    epoch: int
    lam: float
    alpha: float
    test_acc: float

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"{split}_features"), getattr(self, f"{split}_labels")


def features_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "features" / f"epoch_{epoch:03d}.npz"


def plot_path(run_dir: Path, split: str, epoch: int) -> Path:
    return Path(run_dir) / "plots" / f"{split}_epoch_{epoch:03d}.png"


def save_features(run_dir: Path, feats: EpochFeatures) -> None:
    atomic_write(features_path(run_dir, feats.epoch), lambda f: np.savez_compressed(f, **asdict(feats)))


def load_features(run_dir: Path, epoch: int) -> EpochFeatures:
    with np.load(features_path(run_dir, epoch)) as z:
        return EpochFeatures(
            train_features=z["train_features"], train_labels=z["train_labels"],
            test_features=z["test_features"], test_labels=z["test_labels"], centers=z["centers"],
            epoch=int(z["epoch"]), lam=float(z["lam"]), alpha=float(z["alpha"]), test_acc=float(z["test_acc"]),
        )


def saved_epochs(run_dir: Path) -> list[int]:
    """The epochs whose features the run saved, in order; an error naming the folder when there are none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CenterLossError(f"run folder {run_dir} does not exist")
    epochs = sorted(
        int(m.group(1)) for p in (run_dir / "features").glob("epoch_*.npz")
        if (m := re.fullmatch(r"epoch_(\d+)\.npz", p.name))
    )
    if not epochs:
        raise CenterLossError(f"run folder {run_dir} has no saved features (features/epoch_NNN.npz); train it first")
    return epochs


def write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    atomic_write_text(Path(run_dir) / METRICS_CSV, buf.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / METRICS_CSV, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_config(run_dir: Path, config: TrainConfig, environment: dict[str, str]) -> None:
    from .config import to_dict

    atomic_write_text(Path(run_dir) / CONFIG_JSON, json.dumps({**to_dict(config), **environment}, indent=2) + "\n")


def read_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run folder was made with (its config.json, less the environment entries)."""
    from .config import TrainConfig, from_dict, to_dict

    path = Path(run_dir) / CONFIG_JSON
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CenterLossError(f"{path}: cannot read the run's settings ({e})") from None
    known = set(to_dict(TrainConfig()))
    return from_dict({k: v for k, v in saved.items() if k in known}, where=f" in {path}")


def save_checkpoint(run_dir: Path, state_dict: dict[str, Any]) -> None:
    import torch

    atomic_write(Path(run_dir) / CHECKPOINT, lambda f: torch.save(state_dict, f))


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    path = Path(run_dir) / CHECKPOINT
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a damaged file surfaces as many exception types; all mean the same here
        raise CenterLossError(f"{path}: cannot be loaded ({type(e).__name__}); use --overwrite to start again") from e
