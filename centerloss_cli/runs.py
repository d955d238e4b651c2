"""The run folder: its layout and every path in it, creating, locking, resuming and completing it,
and reading and writing everything it holds.

OUTPUT_DIR/<name>/
  .lock                    the lock: a kernel lock on it is held while a process trains here (the file stays)
  config.json              every resolved setting, the data's fingerprint, the folder's format, versions and device
  metrics.csv              one row per finished epoch, rewritten from the checkpoint's history
  checkpoint.pt            the whole training state (train.TrainState)
  features/epoch_NNN.npz   2-D features, labels and centers of that epoch
  plots/{train,test}_epoch_NNN.png, plots/{train,test}.gif
OUTPUT_DIR/sweeps/<sweep name>/   a sweep's grids, summary and compactness plot
"""
from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import platform
import re
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock, Timeout

from .config import DEFAULTS, SCHEMA, TrainConfig, from_dict, to_dict
from .errors import CenterLossError
from .storage import atomic_write, atomic_write_text, is_temp_file, remove_stale_temp_files

# torch is imported where it is used: the plotting process imports this module, and should start in
# a second, not in the several that importing torch takes.
if TYPE_CHECKING:
    import torch

FORMAT = 2  # of config.json and checkpoint.pt; 2: the official net, exact iterations, the data fingerprint
LOCK = ".lock"
# What a checkpoint holds (train.TrainState.state_dict); one without them was not written by this version.
CHECKPOINT_KEYS = frozenset({"format", "config", "n_train", "model", "center_loss", "optimizer", "scheduler", "epoch",
                             "step", "batch", "loss_sums", "seconds", "threads", "history", "rng"})
CHECKPOINT = "checkpoint.pt"
CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
FEATURES = "features"
PLOTS = "plots"
SWEEPS = "sweeps"
SPLITS = ("train", "test")
# What the tool puts into a run folder: --overwrite deletes these, and nothing else.
TENSORBOARD = "tensorboard"  # --tensorboard's event files
RUN_ENTRIES = frozenset({LOCK, CONFIG_JSON, METRICS_CSV, CHECKPOINT, FEATURES, PLOTS, TENSORBOARD})
METRIC_COLUMNS = [
    "epoch", "step", "lr", "seconds",
    "train_softmax_loss", "train_center_loss", "train_acc",
    "test_softmax_loss", "test_center_loss", "test_acc",
    "train_intra", "train_inter", "train_ratio", "test_intra", "test_inter", "test_ratio",
]


def features_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / FEATURES / f"epoch_{epoch:03d}.npz"


def plot_path(run_dir: Path, split: str, epoch: int) -> Path:
    return Path(run_dir) / PLOTS / f"{split}_epoch_{epoch:03d}.png"


def gif_path(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / PLOTS / f"{split}.gif"


def sweep_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / SWEEPS / name


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

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"{split}_features"), getattr(self, f"{split}_labels")


def save_features(run_dir: Path, feats: EpochFeatures) -> None:
    values = {k: v for k, v in asdict(feats).items() if v is not None}  # None: not known, so not saved
    atomic_write(features_path(run_dir, feats.epoch), lambda f: np.savez_compressed(f, **values))


def load_features(run_dir: str | Path, epoch: int) -> EpochFeatures:
    """The features, labels and centers that epoch `epoch` of a run saved (features/epoch_NNN.npz)."""
    path = features_path(run_dir, epoch)
    try:
        return _read_features(path)
    except OSError as e:
        raise CenterLossError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # a truncated or foreign npz fails in zipfile, numpy or a missing key
        raise CenterLossError(f"{path}: damaged or not a features file ({type(e).__name__})") from None


def _read_features(path: Path) -> EpochFeatures:
    with np.load(path) as z:
        return EpochFeatures(
            train_features=z["train_features"], train_labels=z["train_labels"],
            test_features=z["test_features"], test_labels=z["test_labels"], centers=z["centers"],
            epoch=int(z["epoch"]), lam=float(z["lam"]), alpha=float(z["alpha"]), test_acc=float(z["test_acc"]),
            train_acc=float(z["train_acc"]) if "train_acc" in z else None,
            n_train=int(z["n_train"]) if "n_train" in z else None,
            dataset=str(z["dataset"]) if "dataset" in z else None,
        )


def saved_epochs(run_dir: Path) -> list[int]:
    """The epochs whose features the run saved, in order; an error naming the folder when there are none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CenterLossError(f"run folder {run_dir} does not exist")
    epochs = sorted(
        int(m.group(1)) for p in (run_dir / FEATURES).glob("epoch_*.npz")
        if (m := re.fullmatch(r"epoch_(\d+)\.npz", p.name))
    )
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


def _recorded_epochs(run_dir: Path) -> int:
    """How many finished epochs metrics.csv records (it is written only after their checkpoint)."""
    try:
        return len(read_metrics(run_dir))
    except (OSError, ValueError):
        return 0


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / METRICS_CSV, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_history(run_dir: str | Path) -> list[dict[str, float]]:
    """metrics.csv's rows, for a user's command: a folder without a readable one is a one-line error."""
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError, TypeError) as e:
        path = Path(run_dir) / METRICS_CSV
        raise CenterLossError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e}); is {run_dir} a run folder?") from None


def environment(device: torch.device) -> dict[str, str]:
    """What config.json records of the machine beside the settings."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        # From the package's metadata: importing torchvision only for its version takes seconds.
        "torch_version": torch.__version__, "torchvision_version": importlib.metadata.version("torchvision"),
        "python_version": platform.python_version(), "resolved_device": str(device), "device_name": name,
    }


def write_config(run_dir: Path, config: TrainConfig, record: dict[str, Any]) -> None:
    """config.json: the settings (user-facing keys), then `record` (format, data fingerprint, environment)."""
    atomic_write_text(Path(run_dir) / CONFIG_JSON, json.dumps({**to_dict(config), **record}, indent=2) + "\n")


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """config.json as saved: the settings and the record beside them."""
    path = Path(run_dir) / CONFIG_JSON
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        return saved
    except (OSError, ValueError) as e:
        raise CenterLossError(f"{path}: cannot read the run's settings ({e})") from None


def read_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run folder was made with (its config.json, less the record beside them)."""
    path = Path(run_dir) / CONFIG_JSON
    saved = read_record(run_dir)
    return from_dict({k: v for k, v in saved.items() if k in to_dict(DEFAULTS)}, where=f" in {path}")


def save_checkpoint(run_dir: Path, state_dict: dict[str, Any]) -> None:
    import torch

    atomic_write(Path(run_dir) / CHECKPOINT, lambda f: torch.save(state_dict, f))


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint, on the CPU (the training state moves each part to its device)."""
    import torch

    path = Path(run_dir) / CHECKPOINT
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file surfaces as many exception types; all mean the same here
        raise CenterLossError(f"{path}: cannot be loaded ({type(e).__name__}); use --overwrite to start again") from e


# --- a run's life: open (checked, locked), create, resume, complete --------------------------------

@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    history: list[dict[str, float]]
    trained_epochs: int  # epochs trained by this call (0 when the run was already complete)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def resume_command(config: TrainConfig) -> str:
    """The command that continues this run, quoted so that it pastes safely into a shell."""
    return shlex.join(["centerloss", "train", "--resume", "--output-dir", config.output_dir, "--name", config.run_name])


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    """An epoch is ceil(n / batch) steps: every image once, and the last batch filled from the next pass."""
    return -(-n_train // config.batch_size)


def total_steps(config: TrainConfig, n_train: int) -> int:
    """--epochs whole epochs, else exactly --iterations steps (the official solver's 10,000)."""
    if config.epochs is not None:
        return config.epochs * steps_per_epoch(config, n_train)
    return config.iterations


def epoch_end(start: int, total: int, per_epoch: int) -> int:
    """The step at which the epoch that starts at step `start` ends: epochs end on multiples of the steps
    per epoch, and at the last step (10,000 steps of 128 on 60k images: 21 epochs of 469 and one of 151)."""
    return min((start // per_epoch + 1) * per_epoch, total)


def epochs_left(start: int, total: int, per_epoch: int) -> int:
    """How many epochs, this one included, run from step `start` to step `total`."""
    count = 0
    while start < total:
        start, count = epoch_end(start, total, per_epoch), count + 1
    return count


def named_for_data(config: TrainConfig) -> TrainConfig:
    """The config, its default name suffixed with the data's fingerprint when the data is not the
    dataset's own (only --no-verify lets such data through), so runs on other data never share the
    dataset's folders."""
    from .fetch import DATASETS

    if config.name is not None or config.verify:
        return config
    fp = _fingerprint(config)
    return config if fp == DATASETS[config.dataset].fingerprint else config.with_(name=f"{config.run_name}_data{fp[:8]}")


def _remedy(sweep: bool) -> str:
    if sweep:
        return "give the sweep another --output-dir, or move that folder away"
    return "drop those flags to continue it as saved, give --name to train a new run beside it, or --overwrite to replace it"


def reconcile(saved: TrainConfig, given: TrainConfig, explicit: set[str] | None, sweep: bool = False) -> TrainConfig:
    """The config of a resumed run: the saved one, with only the settings that may change taken from `given`.

    `explicit` names the user-facing keys the user actually gave (None: all of them)."""
    given_d, saved_d = to_dict(given), to_dict(saved)
    # A name given by hand that equals the one derived from the settings names the same run.
    given_d["name"], saved_d["name"] = given.run_name, saved.run_name
    resumable = {s.key for s in SCHEMA.values() if s.resumable}
    if saved.center_update == given.center_update == "caffe":
        resumable.add("alpha")  # caffe's update does not use alpha
    keys = set(given_d) if explicit is None else set(explicit)
    differ = [k for k in sorted(keys) if given_d[k] != saved_d[k] and k not in resumable]
    if differ:
        shown = ", ".join(f"{k}: saved {saved_d[k]!r}, given {given_d[k]!r}" for k in differ)
        raise CenterLossError(f"cannot resume {saved.run_dir}: its settings differ ({shown}); {_remedy(sweep)}")
    changes = {f: getattr(given, f) for f, s in SCHEMA.items() if s.key in keys and s.resumable}
    return saved.with_(**changes)


def _check_not_edited(run_dir: Path, checkpointed: dict[str, Any]) -> None:
    """The checkpoint holds the settings the run trained with; a config.json edited since (by hand) would
    make a resume train on with others, so any difference in a setting that a resume may not change is
    refused. The name and output folder are where the run lives now, not part of what it trained with."""
    on_disk = to_dict(read_config(run_dir))
    fixed = {s.key for s in SCHEMA.values() if not s.resumable} - {"name"}
    if checkpointed.get("center_update") == "caffe":
        fixed.discard("alpha")  # caffe's update does not use alpha, so a resume may change it (see reconcile)
    differ = sorted(k for k in fixed if k in checkpointed and checkpointed[k] != on_disk[k])
    if differ:
        shown = ", ".join(f"{k}: checkpoint {checkpointed[k]!r}, {CONFIG_JSON} {on_disk[k]!r}" for k in differ)
        raise CenterLossError(f"cannot resume {run_dir}: its {CONFIG_JSON} was edited after training ({shown}); "
                              f"nothing was changed. Put the checkpoint's values back in {CONFIG_JSON} to resume, "
                              "or train the new settings as a new run")


def _check_writable(run_dir: Path) -> None:
    parent = run_dir
    while not parent.exists():
        if parent.is_symlink():  # exists() follows links: a dangling one, or a loop, ends here
            raise CenterLossError(f"{parent} is a symbolic link to nothing (dangling, or a loop); "
                                  "choose another --output-dir or --name")
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CenterLossError(f"output folder {parent} is not writable; choose another with --output-dir")


def _fingerprint(config: TrainConfig) -> str:
    from .data import data_fingerprint  # imports torch

    return data_fingerprint(config.data_dir, config.verify, config.dataset)


def completed_result(config: TrainConfig, sweep: bool = False) -> RunResult | None:
    """The result of a run whose folder holds all of its epochs; None when it has more to do."""
    with RunFolder(config, resume=True, sweep=sweep) as folder:
        if not folder.complete:
            return None
        folder.repair()
        return folder.result()


class RunFolder:
    """One run folder, checked and locked while this object is open (`with RunFolder(...) as run:`).

    Opening changes nothing on disk but the lock file of a folder that already exists: it refuses a
    folder that is busy, occupied without --resume or --overwrite, or saved with other settings, and
    loads the checkpoint (once). `create` then lays the folder out; call it only once everything
    else (the data above all) has been checked.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 explicit: set[str] | None = None, sweep: bool = False):
        if resume and overwrite:
            raise CenterLossError("--resume and --overwrite contradict each other: give one")
        self.config, self.overwrite = config, overwrite
        self.path = config.run_dir
        self.checkpoint: dict[str, Any] | None = None
        self._lock: FileLock | None = None
        if self.path.exists() and not self.path.is_dir():
            raise CenterLossError(f"run folder {self.path} exists and is not a folder")
        _check_writable(self.path)
        if not self.path.is_dir():
            self.fingerprint = _fingerprint(self.config)
            return
        self._acquire()
        try:
            entries = {p.name for p in self.path.iterdir() if not is_temp_file(p)} - {LOCK}
            foreign = sorted(entries - RUN_ENTRIES)
            if foreign and CONFIG_JSON not in entries:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise CenterLossError(
                    f"{self.path} is not a run folder (it holds {shown} and no {CONFIG_JSON}), so it is left "
                    "alone, --overwrite or not; choose another --name or --output-dir"
                )
            occupied = bool(entries)
            if occupied and not (resume or overwrite):
                raise CenterLossError(
                    f"run folder {self.path} already exists: add --resume to continue it or --overwrite to start again"
                )
            record = read_record(self.path) if resume and (self.path / CONFIG_JSON).is_file() else None
            if record is not None and record.get("format") != FORMAT:
                raise CenterLossError(
                    f"cannot resume {self.path}: it was made by an older centerloss (folder format "
                    f"{record.get('format', 1)}, this one writes {FORMAT}: another network and schedule); "
                    f"{_remedy(sweep) if sweep else 'give --name to train a new run beside it, or --overwrite to replace it'}"
                )
            if resume and (self.path / CHECKPOINT).is_file():
                self.checkpoint = load_checkpoint(self.path)
                missing = sorted(CHECKPOINT_KEYS - set(self.checkpoint))
                if missing or self.checkpoint.get("format") != FORMAT:
                    what = f"it lacks {', '.join(missing)}" if missing else f"format {self.checkpoint.get('format')}"
                    raise CenterLossError(f"{self.path / CHECKPOINT} is not a checkpoint of this version ({what}); "
                                          "use --overwrite to start again")
                if record is not None:  # before the settings given are compared with config.json's
                    _check_not_edited(self.path, self.checkpoint["config"])
            elif resume and (recorded := _recorded_epochs(self.path)):
                # Starting again would rewrite metrics.csv from an empty history: refuse, and touch nothing.
                raise CenterLossError(
                    f"cannot resume {self.path}: its {CHECKPOINT} is missing, but {METRICS_CSV} records {recorded} "
                    f"finished epoch(s); nothing was changed. Put {CHECKPOINT} back to resume, or use --overwrite "
                    "to start again, which deletes them"
                )
            if record is not None:
                # The run lives where it was found, whatever config.json says of where it was made.
                saved = reconcile(read_config(self.path), config, explicit, sweep).with_(output_dir=config.output_dir)
                self.config = saved if saved.run_dir == self.path else saved.with_(name=self.path.name)
            self.fingerprint = _fingerprint(self.config)
            if record is not None and record.get("data_fingerprint") != self.fingerprint:
                raise CenterLossError(
                    f"cannot resume {self.path}: it was trained on other data (data fingerprint: saved "
                    f"{str(record.get('data_fingerprint'))[:8]}, given {self.fingerprint[:8]}, from "
                    f"{self.config.data_dir or '$CENTERLOSS_DATA or ./data'}); {_remedy(sweep)}"
                )
        except BaseException:
            self.close()
            raise

    def _acquire(self) -> None:
        def record_pid(fd: int) -> None:  # only to name the holder in a refusal; the kernel lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)

        lock = FileLock(self.path / LOCK, timeout=0, on_acquired=record_pid)
        try:
            lock.acquire()
        except Timeout:
            try:
                pid = int((self.path / LOCK).read_text())
            except (OSError, ValueError):
                pid = None
            if pid == os.getpid():
                raise CenterLossError(f"run folder {self.path} is already open in this process: "
                                      "two runs of this command map to the same folder") from None
            holder = f" (pid {pid})" if pid else ""
            raise CenterLossError(f"run folder {self.path} is in use by another process{holder}") from None
        self._lock = lock

    @property
    def complete(self) -> bool:
        """Whether the checkpoint holds every step the config asks for, its last epoch finished."""
        if self.checkpoint is None:
            return False
        ckpt = self.checkpoint
        return ckpt["step"] >= total_steps(self.config, ckpt["n_train"]) and ckpt["batch"] == 0

    def repair(self) -> None:
        """Bring what derives from the checkpoint in line with it, as a crash may have left it: temp files
        of killed writes go, metrics.csv is the checkpoint's history, and saved epochs get their missing
        plots. Called on every opened run that exists on disk, complete or about to train."""
        from . import plots  # plots imports this module

        remove_stale_temp_files(self.path)
        history = list(self.checkpoint["history"]) if self.checkpoint else []
        try:
            current = (self.path / METRICS_CSV).read_text()
        except OSError:
            current = None
        if current != metrics_text(history):
            write_metrics(self.path, history)
        (self.path / PLOTS).mkdir(exist_ok=True)
        plots.draw_missing_plots(self.path, range(1, len(history) + 1))

    def result(self, trained_epochs: int = 0, history: list[dict[str, float]] | None = None) -> RunResult:
        if history is None:
            history = list(self.checkpoint["history"]) if self.checkpoint else []
        return RunResult(self.path, self.config, history, trained_epochs)

    def check_data(self, n_train: int, fingerprint: str) -> None:
        """A run trains only on the data it was opened for, and a checkpoint resumes only on as many
        training images as it was trained on."""
        if fingerprint != self.fingerprint:
            raise CenterLossError(f"run {self.path}: the data loaded ({fingerprint[:8]}) is not the data "
                                  f"checked when it was opened ({self.fingerprint[:8]}); did the files change?")
        if self.checkpoint is not None and self.checkpoint["n_train"] != n_train:
            raise CenterLossError(
                f"cannot resume {self.path}: it trained on {self.checkpoint['n_train']} images, this data has {n_train}"
            )

    def create(self, env: dict[str, str]) -> None:
        """Lay the folder out and record the settings: from here on the disk changes. Call `repair`
        next, which also removes the temp files of killed writes."""
        try:
            self._create(env)
        except OSError as e:  # /proc, a read-only mount, a file that will not go: one line, not a traceback
            where = e.filename or self.path
            raise CenterLossError(f"run folder {self.path}: cannot write {where} ({e.strerror or e})") from None

    def _create(self, env: dict[str, str]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._acquire()
            if any(p.name != LOCK for p in self.path.iterdir()):
                raise CenterLossError(f"run folder {self.path} was created by another process meanwhile")
        if self.overwrite:  # only what the tool made: files of the user's own stay
            doomed = [p for p in self.path.iterdir() if p.name in RUN_ENTRIES and p.name != LOCK]
            for p in doomed:  # all or nothing: refuse before the first deletion, not halfway through
                for folder in [p.parent, *(Path(d) for d, _, _ in os.walk(p) if not p.is_symlink())]:
                    if not os.access(folder, os.W_OK | os.X_OK):
                        raise CenterLossError(f"--overwrite: {folder} cannot be emptied (no write permission); "
                                              "nothing was deleted")
            for p in doomed:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        (self.path / FEATURES).mkdir(exist_ok=True)
        (self.path / PLOTS).mkdir(exist_ok=True)
        write_config(self.path, self.config, {"format": FORMAT, "data_fingerprint": self.fingerprint, **env})

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
