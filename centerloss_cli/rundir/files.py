"""The files of a run folder: their names, and how each one is read and written.

OUTPUT_DIR/<name>/
  .lock                    the lock: a kernel lock on it is held while a process trains here (the file stays)
  .centerloss              the mark: this folder was made by centerloss (a folder without it is never written)
  config.json              every resolved setting, the data's fingerprint, the folder's format, the tool's
                           version and commit, the libraries' versions and the device (records.py)
  metrics.csv              one row per finished epoch, rewritten from the checkpoint's history
  checkpoint.pt            the whole training state (engine/run.py), and the authority on the run's settings
  features/epoch_NNN.npz   2-D features, labels, predicted classes and centers of that epoch
  plots/{train,test}_epoch_NNN.png, plots/{train,test}.gif, plots/curves.png
  report.html              centerloss report's page of the run, where one was asked for
  tensorboard/             --tensorboard's event files
OUTPUT_DIR/sweeps/<sweep name>/   a sweep's grids, summary, compactness plot and report

A folder is the tool's when it holds the mark (or, made before the mark existed, a checkpoint or a
config.json of the tool's: records.py); in it, only regular files of these names are the tool's:
--overwrite deletes those and nothing else. Nothing here imports torch or the settings, so that a plotting
process, which imports this module for its paths, starts in a second. How a folder is opened, locked and
resumed is folder.py's.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CenterLossError
from .storage import atomic_write, atomic_write_text, writer_of

if TYPE_CHECKING:
    pass

FORMAT = 2  # of config.json and checkpoint.pt; 2: the official net, exact iterations, the data fingerprint
LOCK = ".lock"
MARK = ".centerloss"  # in a run or sweep folder the tool made: its proof that the folder is its own
CHECKPOINT = "checkpoint.pt"
CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
FEATURES = "features"
PLOTS = "plots"
TENSORBOARD = "tensorboard"
CURVES = "curves.png"
DIVERGED = "diverged.txt"  # why the run stopped: its loss became NaN or inf (gone once an epoch commits again)
SWEEPS = "sweeps"
RECORD = "sweep.json"  # in a sweep's folder: the runs it is made of
SPLITS = ("train", "test")
# What every row of metrics.csv has, whichever version wrote it: what `list`, the curves and the pages read.
REQUIRED_METRICS = {"epoch", "step", "test_acc", "test_ratio"}
METRIC_COLUMNS = [
    "epoch", "step", "lr", "seconds",
    "train_softmax_loss", "train_center_loss", "train_acc",
    "test_softmax_loss", "test_center_loss", "test_acc",
    "train_intra", "train_inter", "train_ratio", "test_intra", "test_inter", "test_ratio",
]
TOOL_ENTRIES = frozenset({LOCK, MARK, CONFIG_JSON, METRICS_CSV, CHECKPOINT, DIVERGED, FEATURES, PLOTS, TENSORBOARD})
# The files the tool makes, by folder: --overwrite deletes exactly these (and the tool's own temp files).
REPORT = "report.html"  # `centerloss report`'s page of the run (or of a sweep, in its folder)
FILES = {"": re.compile("|".join(map(re.escape, (CONFIG_JSON, METRICS_CSV, CHECKPOINT, DIVERGED, REPORT)))),
         FEATURES: re.compile(r"epoch_\d{3,}\.npz"),
         PLOTS: re.compile(rf"(train|test)_epoch_\d{{3,}}\.png|(train|test)\.gif|{re.escape(CURVES)}"),
         TENSORBOARD: re.compile(r"events\.out\.tfevents\..+")}


def features_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / FEATURES / f"epoch_{epoch:03d}.npz"


def plot_path(run_dir: Path, split: str, epoch: int) -> Path:
    return Path(run_dir) / PLOTS / f"{split}_epoch_{epoch:03d}.png"


def gif_path(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / PLOTS / f"{split}.gif"


def curves_path(run_dir: Path) -> Path:
    return Path(run_dir) / PLOTS / CURVES


def sweep_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / SWEEPS / name


def tool_files(run_dir: Path) -> list[Path]:
    """Every file in the run folder that the tool made (its own temp files too), by name."""
    out = []
    for sub, pattern in FILES.items():
        folder = Path(run_dir) / sub
        if folder.is_dir() and not folder.is_symlink():
            out += [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                    and (pattern.fullmatch(p.name) or writer_of(p) is not None)]
    return out


# --- what a run folder holds -------------------------------------------------------------------------

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
    train_acc: float | None = None  # on the plotted training subset; None in files of earlier versions
    n_train: int | None = None  # training images the run trains on; None in files of earlier versions
    dataset: str | None = None  # None in files of earlier versions, which were all MNIST
    train_pred: np.ndarray | None = None  # (N,) uint8: the network's class for each point; None in earlier files
    test_pred: np.ndarray | None = None

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"{split}_features"), getattr(self, f"{split}_labels")


def save_features(run_dir: Path, feats: EpochFeatures) -> None:
    values = {k: v for k, v in asdict(feats).items() if v is not None}  # None: not known, so not saved
    atomic_write(features_path(run_dir, feats.epoch), lambda f: np.savez_compressed(f, **values))


def load_features(run_dir: str | Path, epoch: int) -> EpochFeatures:
    """The features, labels and centers that epoch `epoch` of a run saved (features/epoch_NNN.npz)."""
    path = features_path(run_dir, epoch)
    try:
        with np.load(path) as z:
            feats = EpochFeatures(
                train_features=z["train_features"], train_labels=z["train_labels"],
                test_features=z["test_features"], test_labels=z["test_labels"], centers=z["centers"],
                epoch=int(z["epoch"]), lam=float(z["lam"]), alpha=float(z["alpha"]), test_acc=float(z["test_acc"]),
                train_acc=float(z["train_acc"]) if "train_acc" in z else None,
                n_train=int(z["n_train"]) if "n_train" in z else None,
                dataset=str(z["dataset"]) if "dataset" in z else None,
                train_pred=z["train_pred"] if "train_pred" in z else None,
                test_pred=z["test_pred"] if "test_pred" in z else None,
            )
    except OSError as e:
        raise CenterLossError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # a truncated or foreign npz fails in zipfile, numpy or a missing key
        raise CenterLossError(f"{path}: damaged or not a features file ({type(e).__name__})") from None
    for split in SPLITS:
        features, labels = feats.split(split)
        if features.ndim != 2 or features.shape[1] != 2 or labels.shape != (len(features),):
            raise CenterLossError(
                f"{path}: damaged or not a features file ({split} features of shape {features.shape})")
        pred = getattr(feats, f"{split}_pred")
        if pred is not None and pred.shape != labels.shape:
            raise CenterLossError(f"{path}: damaged or not a features file ({split} predictions of shape {pred.shape})")
    return feats


def saved_epochs(run_dir: Path) -> list[int]:
    """The epochs whose features the run saved, in order; an error naming the folder when there are none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CenterLossError(f"run folder {run_dir} does not exist")
    epochs = sorted(int(m.group(1)) for p in (run_dir / FEATURES).glob("epoch_*.npz")
                    if (m := re.fullmatch(r"epoch_(\d+)\.npz", p.name)))
    if not epochs:
        raise CenterLossError(f"run folder {run_dir} has no saved features ({FEATURES}/epoch_NNN.npz); train it first")
    return epochs


def metrics_text(history: list[dict[str, float]]) -> str:
    """metrics.csv as it follows from a checkpoint's history."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})  # "": a column newer than the row
    return buf.getvalue()


def write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    atomic_write_text(Path(run_dir) / METRICS_CSV, metrics_text(history))


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """metrics.csv's rows; one line naming the file when it cannot be read or is not one of ours."""
    path = Path(run_dir) / METRICS_CSV
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        missing = sorted(REQUIRED_METRICS - set(rows[0] if rows else METRIC_COLUMNS))
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        parsed = [{k: float(v) for k, v in row.items() if k is not None and v not in (None, "")} for row in rows]
        for n, row in enumerate(parsed, start=2):  # line 1 is the header
            if not REQUIRED_METRICS <= set(row):
                raise ValueError(f"line {n} has no {', '.join(sorted(REQUIRED_METRICS - set(row)))}")
        return parsed
    except (OSError, ValueError, TypeError, csv.Error) as e:
        reason = getattr(e, "strerror", None) or (e if not isinstance(e, UnicodeDecodeError) else "not UTF-8 text")
        raise CenterLossError(f"{path}: cannot be read ({reason}); is {run_dir} a run folder?") from None


def contents(folder: Path) -> set[str]:
    """The names of what a folder holds, less its lock and the tool's temp files: what decides whether the
    folder is empty, and what a refusal names."""
    return {p.name for p in Path(folder).iterdir() if writer_of(p) is None} - {LOCK}


def unproven(folder: Path, names: set[str]) -> str:
    """The start of the refusal of a folder that holds `names` and no proof that the tool made it."""
    shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
    mark = Path(folder) / MARK
    if mark.is_symlink() or mark.exists():
        kind = "a symbolic link" if mark.is_symlink() else "a folder" if mark.is_dir() else "not a regular file"
        why = f"its {MARK} is {kind}, not the file the tool writes, and no checkpoint or config.json of the tool's"
    else:
        why = f"no {MARK}"
    return f"{folder} holds {shown}, but nothing that shows centerloss made it ({why}), so"


def write_mark(folder: Path) -> None:
    """Mark a folder as the tool's (MARK), once: what it says is for a person who wonders whose it is."""
    from .. import __version__

    if not (Path(folder) / MARK).is_file():
        atomic_write_text(Path(folder) / MARK, f"made by centerloss {__version__}; its files are the tool's to "
                                               "rewrite and, on --overwrite, to delete\n")


def recorded_seed(run_dir: Path) -> int | None:
    """The seed a run's config.json records, to tell a sweep's seeds apart in a figure; None where it cannot be
    read (the features alone still draw)."""
    try:
        seed = json.loads((Path(run_dir) / CONFIG_JSON).read_text(encoding="utf-8")).get("seed")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def sweep_run(folder: Path, name: str) -> Path:
    """Where the run `name` of the sweep folder `folder` lives: sweeps sit in OUTPUT/sweeps/, their runs in OUTPUT/."""
    return folder.parent.parent / name


def recorded_runs(folder: Path) -> list[str] | None:
    """The names of the runs a sweep folder's record lists, in its order; None when it has no record."""
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
        if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
            raise ValueError("runs is not a list of run names")
        return runs
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise CenterLossError(f"{path}: damaged; move the sweep folder {folder} away to write this sweep") from None


