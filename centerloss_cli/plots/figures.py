"""The 2-D feature scatter plots: one epoch's, a grid of runs (the paper's Figures 2 and 3), a GIF over
epochs, and the image TensorBoard shows. Pure drawing: a figure in, a file out. Drawn without pyplot,
so no interactive backend is ever touched, and without torch, so a plotting process starts in a second.
Where they are drawn (a background process) is service.py's and drawing.py's business.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..dataset.fetch import DATASETS
from ..errors import CenterLossError, StorageError
from ..rundir.files import SPLITS, EpochFeatures, gif_path, load_features, plot_path, recorded_seed, saved_epochs
from ..rundir.storage import atomic_open, storage_error
from ..settings.config import DEFAULTS

DPI = DEFAULTS.plot_dpi  # the default; every drawing takes its own


# One fixed colour per digit, the same in every figure (matplotlib's tab10).
DIGIT_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
FIGURE_FORMATS = ("png", "pdf", "svg")
POINT_SIZE = 4.0  # opaque dots, as in the paper's figures


def square_limits(*point_sets: np.ndarray, margin: float = 0.1) -> tuple[tuple[float, float], tuple[float, float]]:
    """Equal-length x and y ranges that hold every point of every set, with a margin."""
    pts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in point_sets])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    mid = (lo + hi) / 2
    half = max(float((hi - lo).max()) / 2, 1e-6) * (1 + margin)
    return (mid[0] - half, mid[0] + half), (mid[1] - half, mid[1] + half)


def draw_features(
    ax,
    features: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray | None,
    title: str,
    limits: tuple[tuple[float, float], tuple[float, float]] | None = None,
    legend: bool | str = True,
    class_names: Sequence[str] | None = None,
) -> None:
    """The one drawing of a feature scatter: per-class colours, opaque vector points, and, when `centers`
    are given, white c0..c9 markers labelled outward from the middle so that labels do not collide."""
    for digit in range(10):
        pts = features[labels == digit]
        name = class_names[digit] if class_names else str(digit)
        ax.scatter(pts[:, 0], pts[:, 1], s=POINT_SIZE, c=DIGIT_COLORS[digit], label=name, linewidths=0)
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=40, c="white", edgecolors="black", linewidths=1.0, zorder=3)
        middle = centers.mean(axis=0)
        for j, (x, y) in enumerate(centers):
            # Centers lie around the middle (the classes' spokes): a label pushed outward along its own
            # direction stays clear of its neighbours, where a fixed offset made "c6c5".
            d = np.array([x, y]) - middle
            d = d / (np.linalg.norm(d) or 1.0)
            ax.annotate(f"c{j}", (x, y), xytext=(12 * d[0], 12 * d[1]), textcoords="offset points", fontsize=7,
                        ha="center", va="center", zorder=4,
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    xlim, ylim = limits or square_limits(features, *([] if centers is None else [centers]))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=3, fontsize=7, frameon=False,
                  title=legend if isinstance(legend, str) else None, title_fontsize=7)


def classes_of(feats: EpochFeatures) -> tuple[tuple[str, ...], str]:
    """The class names of the run's dataset, and what the legend calls a class."""
    dataset = feats.dataset or "mnist"  # files of earlier versions: all MNIST
    return DATASETS[dataset].classes, "digit" if dataset == "mnist" else "class"


def shown_centers(feats: EpochFeatures, centers: bool | None = None) -> np.ndarray | None:
    """The centers to draw: with λ > 0; with λ = 0 (the paper's Figure 2 has none) only when asked."""
    return feats.centers if (feats.lam > 0 if centers is None else centers) else None


def settings_text(lam: float, alpha: float) -> str:
    """λ, and α where it acts: with λ = 0 the centers do not touch training, so α is left out."""
    return f"λ = {lam:g}, α = {alpha:g}" if lam > 0 else "λ = 0 (softmax only)"


def accuracy_text(feats: EpochFeatures, split: str) -> str:
    """A train plot gives the train accuracy (on the plotted subset), a test plot the test's; files of
    earlier versions saved the test accuracy only, and say so."""
    if split == "train" and feats.train_acc is not None:
        return f"train acc {100 * feats.train_acc:.2f}%"
    return f"test acc {100 * feats.test_acc:.2f}%"


def feature_title(feats: EpochFeatures, split: str) -> str:
    return f"{split}: {settings_text(feats.lam, feats.alpha)}, epoch {feats.epoch}, {accuracy_text(feats, split)}"


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def check_figure_path(path: str | os.PathLike) -> str:
    """The format of a figure file from its suffix; an error unless it is png, pdf or svg."""
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FIGURE_FORMATS:
        suffixes = ", ".join("." + f for f in FIGURE_FORMATS)
        raise CenterLossError(f"figure file {path}: the suffix must be one of {suffixes}")
    return fmt


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Save atomically; the format comes from the suffix (png, pdf or svg). SVG keeps its text as text,
    so a figure can be edited for a paper. A folder that cannot be written is one line."""
    path = Path(path)
    fmt = check_figure_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a plots/ deleted by hand is made again
    except OSError as e:
        raise storage_error(path, e) from None
    with atomic_open(path) as f, matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    return path


def save_feature_plot(
    path: str | os.PathLike,
    features: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray | None,
    title: str,
    limits: tuple[tuple[float, float], tuple[float, float]] | None = None,
    dpi: int = DPI,
    classes: tuple[Sequence[str], str] | None = None,
) -> Path:
    """One scatter plot; `classes`: the class names and the legend's title (default: digits, untitled)."""
    fig = new_figure(5.6, 4.6)
    names, kind = classes or (None, True)
    draw_features(fig.add_subplot(1, 1, 1), features, labels, centers, title, limits, legend=kind, class_names=names)
    return save_figure(fig, path, dpi)


def grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, 3 if n in (5, 6, 9) else 4)
    return -(-n // cols), cols


def save_grid(
    path: str | os.PathLike,
    panels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]],
    suptitle: str | None = None,
    dpi: int = DPI,
    classes: tuple[Sequence[str], str] = (DATASETS["mnist"].classes, "digit"),
) -> Path:
    """One panel per (features, labels, centers, title), each with its own limits, a shared legend."""
    rows, cols = grid_shape(len(panels))
    names, kind = classes
    wide = max(len(n) for n in names) > 2  # class names need more room than digits
    fig = new_figure(3.6 * cols + (1.6 if wide else 0.8), 3.6 * rows + (0.4 if suptitle else 0))
    for i, (features, labels, centers, title) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        draw_features(ax, features, labels, centers, title, legend=False, class_names=names)
    handles, labels_ = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="center right", markerscale=3, fontsize=8, frameon=False, title=kind)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0, 1 - (1.5 if wide else 0.7) / fig.get_figwidth(), 1))
    return save_figure(fig, path, dpi)


def panel_title(feats: EpochFeatures, split: str, seed: int | None = None) -> str:
    seeded = "" if seed is None else f", seed {seed}"
    return f"{settings_text(feats.lam, feats.alpha)}{seeded}\nepoch {feats.epoch}, {accuracy_text(feats, split)}"


def draw_epoch_plots(run_dir: Path, feats: EpochFeatures, splits: Sequence[str] = SPLITS,
                     centers: bool | None = None, dpi: int = DPI) -> list[Path]:
    """plots/{split}_epoch_NNN.png for one epoch: the drawing used by training and `centerloss plot` alike."""
    require_run_folder(run_dir)
    out = []
    for split in splits:
        features, labels = feats.split(split)
        out.append(save_feature_plot(plot_path(run_dir, split, feats.epoch), features, labels,
                                     shown_centers(feats, centers), feature_title(feats, split), dpi=dpi,
                                     classes=classes_of(feats)))
    return out


def require_run_folder(run_dir: str | os.PathLike) -> None:
    """A run's plots go into its folder only while it exists: a folder deleted or moved while the run trained
    is not made again by its plots (which would leave a folder without the mark, blocking the name)."""
    if not Path(run_dir).is_dir():
        raise StorageError(f"could not draw the plots of {run_dir}: the run folder is gone (deleted or moved while "
                           "it trained)")


def draw_saved_epoch(run_dir: Path, epoch: int, splits: Sequence[str] = SPLITS, dpi: int = DPI) -> str | None:
    """An epoch's plots from its saved features; a damaged features file costs its plots, never the run:
    then the line to say about it."""
    try:
        feats = load_features(run_dir, epoch)
    except CenterLossError as err:
        return f"Warning: {err}; its plots are not drawn"
    draw_epoch_plots(run_dir, feats, splits, dpi=dpi)
    return None


def feature_image(feats: EpochFeatures, split: str = "test", dpi: int = 80) -> np.ndarray:
    """An epoch's scatter plot as an (H, W, 3) uint8 array, for TensorBoard."""
    fig = new_figure(5.6, 4.6)
    fig.subplots_adjust(left=0.12, right=0.78)
    names, kind = classes_of(feats)
    draw_features(fig.add_subplot(1, 1, 1), *feats.split(split), shown_centers(feats), feature_title(feats, split),
                  legend=kind, class_names=names)
    fig.set_dpi(dpi)
    return figure_pixels(fig)


def figure_pixels(fig: Figure) -> np.ndarray:
    """The figure rendered as an (H, W, 3) uint8 array (a GIF frame, a TensorBoard image)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def pick_epochs(run_dir: Path, epoch: str) -> list[int]:
    """The saved epochs that `epoch` ("all", "last" or a number) names."""
    saved = saved_epochs(run_dir)
    if epoch == "all":
        return saved
    if epoch == "last":
        return saved[-1:]
    if not re.fullmatch(r"[0-9]+", epoch) or int(epoch) not in saved:  # not isdigit(): "²" is a digit to it
        raise CenterLossError(
            f"epoch {epoch!r} for {run_dir}: expected all, last or one of the saved epochs {saved[0]}..{saved[-1]}"
        )
    return [int(epoch)]


def replot_run(run_dir: str | os.PathLike, epoch: str = "all", splits: Sequence[str] = SPLITS,
               centers: bool | None = None, dpi: int = DPI) -> list[Path]:
    """Re-draw a run's per-epoch scatter plots from its saved features; never trains."""
    run_dir = Path(run_dir)
    out = []
    for e in pick_epochs(run_dir, epoch):
        out += draw_epoch_plots(run_dir, load_features(run_dir, e), splits, centers, dpi)
    return out


def check_fps(fps: float) -> None:
    if not (math.isfinite(fps) and 0.1 <= fps <= 50):
        raise CenterLossError(f"--fps {fps:g}: expected a number of frames per second in [0.1, 50]")


def save_gif(run_dir: str | os.PathLike, split: str, fps: float = 2.0, centers: bool | None = None,
             dpi: int = DPI) -> Path:
    """plots/{split}.gif: one frame per saved epoch, with limits fixed across frames so nothing jumps, and
    the last frame held for two seconds (or two frames' time, if longer) so the end can be seen. Frames
    are drawn at half `dpi` (100 at the default 200): a GIF of 20 full-resolution frames would be tens of MB."""
    check_fps(fps)
    run_dir = Path(run_dir)
    frames = [load_features(run_dir, e) for e in saved_epochs(run_dir)]
    limits = square_limits(*(f.split(split)[0] for f in frames), *(f.centers for f in frames))
    fig = new_figure(5.6, 4.6)
    fig.set_dpi(dpi / 2)
    fig.subplots_adjust(left=0.12, right=0.8)  # room for the legend outside the axes, the same in every frame
    ax = fig.add_subplot(1, 1, 1)
    images = []
    for f in frames:
        ax.clear()
        features, labels = f.split(split)
        names, kind = classes_of(f)
        draw_features(ax, features, labels, shown_centers(f, centers), feature_title(f, split), limits, legend=kind,
                      class_names=names)
        images.append(Image.fromarray(figure_pixels(fig)))
    frame_ms = round(1000 / fps)
    durations = [frame_ms] * (len(images) - 1) + [max(2000, 2 * frame_ms)]
    path = gif_path(run_dir, split)
    with atomic_open(path) as out:
        images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def grid_panels(run_dirs: Sequence[str | os.PathLike], epoch: str = "last", splits: Sequence[str] = ("test",),
                centers: bool | None = None) -> tuple[list[tuple], list[EpochFeatures]]:
    """(features, labels, centers, title) per run and split at `epoch`, runs ordered by lambda, then alpha;
    and the epochs' features they come from."""
    chosen = [(load_features(Path(d), pick_epochs(Path(d), epoch)[-1]), recorded_seed(Path(d))) for d in run_dirs]
    chosen.sort(key=lambda fs: (fs[0].lam, fs[0].alpha, fs[1] if fs[1] is not None else -1))
    # Runs of one lambda and alpha (a sweep over seeds) are told apart by their seed.
    labels = [settings_text(f.lam, f.alpha) for f, _ in chosen]
    seeded = len(set(labels)) < len(labels)
    # Beside each other, each panel names its split: its accuracy does, except in files of earlier versions.
    named = lambda f, s: len(splits) == 1 or accuracy_text(f, s).startswith(s)  # noqa: E731
    panels = [(*f.split(s), shown_centers(f, centers), panel_title(f, s, seed if seeded else None)
               + ("" if named(f, s) else f" ({s})")) for f, seed in chosen for s in splits]
    return panels, [f for f, _ in chosen]


def grid_of_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, epoch: str = "last",
                 splits: Sequence[str] = ("test",), centers: bool | None = None, dpi: int = DPI) -> Path:
    """The paper's Figure 3 layout: one panel per run (and split), each with its own limits, since
    softmax-only features are far larger; the same colours and center markers everywhere."""
    check_figure_path(out)
    panels, feats = grid_panels(run_dirs, epoch, splits, centers)
    epochs = sorted({f.epoch for f in feats})
    which = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
    sizes = sorted({f.n_train for f in feats if f.n_train})
    trained = f", trained on {sizes[0]:,} images" if len(sizes) == 1 else ""
    datasets = {f.dataset or "mnist" for f in feats}
    if len(datasets) > 1:
        raise CenterLossError(
            f"these runs are of different datasets ({', '.join(sorted(datasets))}): one grid, one dataset")
    return save_grid(out, panels, suptitle=f"{DATASETS[datasets.pop()].title} {' and '.join(splits)} features at "
                     f"{which}{trained}", dpi=dpi, classes=classes_of(feats[0]))


