"""`centerloss report`: runs (a sweep's, or any) as one self-contained HTML page, drawn from their saved
features: a scatter per run laid out as the paper's Figure 3 grid, one epoch slider for all, the class
centers, each panel's accuracy and test ratio, the runs' curves with the shown epoch marked, and under the
mouse the digit itself. It trains nothing, and the page asks nothing of the network: its data and its
script (report.html, plain JavaScript on canvas) are inside the file.

Points are subsampled per split, the same points in every epoch and run (a point keeps its digit as the
epochs move it); features are kept as 16-bit steps of each run's range, digits as 28x28 bytes.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.metrics import compactness
from ..dataset.fetch import DATASETS
from ..errors import CenterLossError
from ..rundir.files import (
    CONFIG_JSON,
    DIVERGED,
    RECORD,
    REPORT,
    SPLITS,
    EpochFeatures,
    load_features,
    recorded_runs,
    saved_epochs,
    sweep_run,
)
from ..rundir.records import read_record, settings_of
from ..rundir.storage import atomic_write_text
from ..settings.schema import printable
from . import DEFAULT_POINTS
from .figures import DIGIT_COLORS, settings_text

# In every report's head: what proves a file a report of the tool's, the only kind --overwrite replaces.
GENERATOR = '<meta name="generator" content="centerloss report">'
TEMPLATE = Path(__file__).with_name("report.html")


@dataclass
class Shown:
    """One run as the report shows it: its settings, its saved epochs' features, and how it ended."""

    path: Path
    record: dict
    feats: list[EpochFeatures]
    state: str  # finished, stopped or diverged: where its last saved epoch stands

    @property
    def order(self) -> tuple:
        seed = self.record.get("seed")
        return (self.feats[0].lam, self.feats[0].alpha, seed if isinstance(seed, int) else -1, self.path.name)


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders `paths` name: each a run folder, or a sweep folder (its record lists its runs)."""
    found: list[Path] = []
    for path in paths:
        if (path / RECORD).is_file():
            names = recorded_runs(path) or []
            found += [sweep_run(path, name) for name in names]
        elif (path / CONFIG_JSON).is_file():
            found.append(path)
        elif path.is_dir():
            raise CenterLossError(f"{printable(str(path))} is neither a run folder (no {CONFIG_JSON}) nor a sweep "
                                  f"folder (no {RECORD}); give a run or a sweep")
        else:
            raise CenterLossError(f"{printable(str(path))} does not exist; give a run or a sweep folder")
    if not found:
        raise CenterLossError("no runs to report: the sweep records none")
    return list(dict.fromkeys(found))


def read_run(path: Path) -> Shown:
    """A run's record and saved epochs, each file checked (a damaged one is a one-line refusal)."""
    record = read_record(path)
    feats = [load_features(path, epoch) for epoch in saved_epochs(path)]
    state = "diverged" if (path / DIVERGED).is_file() else "saved"
    return Shown(path, record, feats, state)


def check_output(out: Path, overwrite: bool) -> None:
    """A report goes to a new file, or with --overwrite over a report the tool wrote; nothing else is replaced."""
    if out.is_dir():
        raise CenterLossError(f"{printable(str(out))} is a folder; give the report's file, e.g. -o report.html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise CenterLossError(f"{printable(str(out))}: a report is an .html file")
    if not out.exists():
        if not out.parent.is_dir():
            raise CenterLossError(f"{printable(str(out.parent))} does not exist; make it, or give another -o")
        return
    if not overwrite:
        raise CenterLossError(f"{printable(str(out))} exists; add --overwrite to replace it (only a report the tool "
                              "wrote is replaced)")
    try:
        head = out.read_bytes()[:4096].decode("utf-8", errors="replace")
    except OSError as e:
        raise CenterLossError(f"{printable(str(out))}: cannot be read ({e.strerror or e})") from None
    if GENERATOR not in head:
        raise CenterLossError(f"{printable(str(out))} is not a report of centerloss's: --overwrite replaces only "
                              "those; give another -o")


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def chosen(n: int, points: int) -> np.ndarray:
    """A fixed choice of `points` of `n` points (all where there are fewer), sorted: the same in every epoch."""
    if n <= points:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, points, replace=False))


def pack_split(run: Shown, split: str, points: int) -> dict:
    """A run's split over its epochs: the chosen points' features as 16-bit steps of the run's range (x and y
    alike, so the aspect stays), their labels and predicted classes, the centers, the accuracy and the ratio."""
    features = [f.split(split)[0] for f in run.feats]
    labels = run.feats[-1].split(split)[1]
    idx = chosen(len(labels), points)
    stacked = np.stack([f[idx] for f in features]).astype(np.float64)  # (E, N, 2)
    finite = stacked[np.isfinite(stacked)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    span = hi - lo or 1.0
    steps = np.round((np.nan_to_num(stacked, nan=lo) - lo) / span * 65535).clip(0, 65535).astype("<u2")
    preds = [getattr(f, f"{split}_pred") for f in run.feats]
    acc = [f.test_acc if split == "test" else f.train_acc for f in run.feats]
    return {
        "index": b64(idx.astype("<u4")), "labels": b64(labels[idx].astype(np.uint8)), "lo": lo, "span": span,
        "features": b64(steps), "preds": b64(np.stack([p[idx] for p in preds]).astype(np.uint8))
        if all(p is not None for p in preds) else None,
        "centers": [np.round(f.centers.astype(np.float64), 4).tolist() for f in run.feats],
        "acc": [None if a is None else round(float(a), 5) for a in acc],
        "ratio": [round(compactness(f, labels)["ratio"], 5) for f in features],
    }


def pack_run(run: Shown, points: int) -> dict:
    last = run.feats[-1]
    seed = run.record.get("seed")
    title = settings_text(last.lam, last.alpha) + (f", seed {seed}" if isinstance(seed, int) else "")
    return {"name": printable(run.path.name), "title": title, "lam": last.lam, "alpha": last.alpha,
            "epochs": [f.epoch for f in run.feats], "state": run.state,
            "splits": {split: pack_split(run, split, points) for split in SPLITS}}


def digits(run: Shown, points: int, loaded: dict) -> tuple[dict | None, str]:
    """The chosen points' own images (28x28 bytes a digit) from the data the run trained on, loaded once per
    data (`loaded`); None, and why, where that data is not here or is not the run's (its fingerprint). Runs
    of one data share one dict: the page holds each digit once."""
    import torch

    from ..dataset.loading import load_dataset, subset_indices

    try:
        config = settings_of(run.record, run.path / CONFIG_JSON)
    except CenterLossError as e:
        return None, f"its settings cannot be read ({e})"
    key = (config.dataset, config.data_dir, config.verify, config.train_limit, config.test_limit)
    if (key, config.plot_train_samples) in loaded:
        return loaded[key, config.plot_train_samples], ""
    if key not in loaded:
        try:
            loaded[key] = load_dataset(config.data_dir, "cpu", config.train_limit, config.test_limit, config.verify,
                                       may_create=False, dataset=config.dataset)
        except CenterLossError as e:
            loaded[key] = e
    data = loaded[key]
    if isinstance(data, CenterLossError):
        return None, f"its data is not here ({data})"
    if data.fingerprint != run.record.get("data_fingerprint", data.fingerprint):
        return None, f"the data at {config.data_dir or 'the default root'} is not the data it trained on"
    pixels = {}
    for split in SPLITS:
        images = (data.test if split == "test" else data.train).images
        if split == "train" and (sub := subset_indices(len(images), config.plot_train_samples)) is not None:
            images = images[sub]
        idx = chosen(len(images), points)
        raw = (images[idx] * 128 + 127.5).round().clamp(0, 255).to(dtype=torch.uint8).numpy()  # the scaling undone
        pixels[split] = b64(raw.reshape(len(idx), 28 * 28))
    loaded[key, config.plot_train_samples] = pixels
    return pixels, ""


def default_output(paths: list[Path]) -> Path:
    """Where a report goes unless told: into the one sweep's (or run's) folder, else the folder the runs share."""
    if len(paths) == 1 and ((paths[0] / RECORD).is_file() or (paths[0] / CONFIG_JSON).is_file()):
        return paths[0] / REPORT
    parents = {p.resolve().parent for p in paths}
    return (parents.pop() if len(parents) == 1 else Path.cwd()) / REPORT


def write_report(paths: Sequence[str | Path], out: str | Path, points: int = DEFAULT_POINTS,
                 overwrite: bool = False) -> Path:
    """The report of the runs `paths` name (run or sweep folders), written atomically to `out`; every input is
    read and checked first."""
    paths, out = [Path(p) for p in paths], Path(out)
    if points < 1:
        raise CenterLossError(f"points = {points}: expected an integer >= 1")
    check_output(out, overwrite)
    runs = sorted((read_run(p) for p in run_folders(paths)), key=lambda r: r.order)
    loaded: dict = {}
    packed, images = [], []  # images: each data's digits once; a run names its own by their place
    for run in runs:
        entry = pack_run(run, points)
        pixels, entry["no_digits"] = digits(run, points, loaded)
        if pixels is not None and not any(pixels is seen for seen in images):
            images.append(pixels)
        entry["digits"] = next((i for i, seen in enumerate(images) if seen is pixels), None)
        packed.append(entry)
    classes = DATASETS[runs[0].feats[-1].dataset or "mnist"].classes
    data = {"runs": packed, "digits": images, "classes": list(classes), "colors": DIGIT_COLORS, "points": points,
            "written": datetime.now().isoformat(timespec="seconds"),
            "sources": [printable(str(p)) for p in paths]}
    # UTF-8 as it is (λ, α), and "</" written "<\/" so that no name can end the script it sits in.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    page = TEMPLATE.read_text(encoding="utf-8").replace("/*REPORT-DATA*/null", text)
    atomic_write_text(out, page)
    return out
