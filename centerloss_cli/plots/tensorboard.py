"""--tensorboard: each epoch's metrics as scalars and its test scatter as an image, in RUN/tensorboard/.

Like metrics.csv, the log follows from the checkpoint: a resumed run purges what a killed process logged
after its last checkpoint and logs that epoch again, so every epoch is logged once, even after a crash
between the checkpoint and the log.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..errors import CenterLossError
from ..rundir.files import TENSORBOARD, EpochFeatures, load_features

MISSING = "--tensorboard needs the tensorboard package: pip install 'centerloss-cli[tensorboard]'"


def check_available() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise CenterLossError(MISSING)


class Logger:
    """A run's SummaryWriter on RUN/tensorboard, purged from the last committed epoch on, which is logged
    again; closed when the `with` block that opened it ends."""

    def __init__(self, run_dir: Path, history: list[dict[str, float]]):
        from torch.utils.tensorboard import SummaryWriter

        last = len(history)
        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD), purge_step=max(last, 1))
        if last:
            try:
                self.log_epoch(history[-1], load_features(run_dir, last))
            except CenterLossError:  # its features are damaged: the scalars are still worth logging
                self.log_epoch(history[-1], None)

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()

    def log_epoch(self, row: dict[str, float], feats: EpochFeatures | None) -> None:
        log_epoch(self.writer, row, feats)


def log_epoch(writer: Any, row: dict[str, float], feats: EpochFeatures | None) -> None:
    """An epoch's metrics.csv row as scalars (losses/, accuracy/, compactness/, schedule/), and its test scatter."""
    epoch = int(row["epoch"])
    for key, value in row.items():
        if key in ("epoch", "step", "seconds"):
            continue
        group = "losses" if key.endswith("_loss") else "accuracy" if key.endswith("_acc") else \
            "compactness" if key.split("_")[-1] in ("intra", "inter", "ratio") else "schedule"
        writer.add_scalar(f"{group}/{key}", value, epoch)
    if feats is not None:
        from .figures import feature_image  # matplotlib, only where --tensorboard asks for it

        writer.add_image("features/test", feature_image(feats, "test"), epoch, dataformats="HWC")
    writer.flush()
