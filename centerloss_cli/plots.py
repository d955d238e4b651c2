"""The 2-D feature scatter plots, drawn without pyplot so no interactive backend is ever touched."""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.util
import os
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from . import runs
from .config import PLOT_DPI
from .fetch import DATASETS
from .errors import STOP_SIGNALS, CenterLossError, PlotError, stop_signals_blocked
from .runs import EpochFeatures
from .storage import atomic_open

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
        raise CenterLossError(f"figure file {path}: the suffix must be one of {', '.join('.' + f for f in FIGURE_FORMATS)}")
    return fmt


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = PLOT_DPI) -> Path:
    """Save atomically; the format comes from the suffix (png, pdf or svg). SVG keeps its text as text,
    so a figure can be edited for a paper."""
    path = Path(path)
    fmt = check_figure_path(path)
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
    dpi: int = PLOT_DPI,
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
    dpi: int = PLOT_DPI,
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


def panel_title(feats: EpochFeatures, split: str) -> str:
    return f"{settings_text(feats.lam, feats.alpha)}\nepoch {feats.epoch}, {accuracy_text(feats, split)}"


def draw_epoch_plots(run_dir: Path, feats: EpochFeatures, splits: Sequence[str] = runs.SPLITS,
                     centers: bool | None = None, dpi: int = PLOT_DPI) -> list[Path]:
    """plots/{split}_epoch_NNN.png for one epoch: the drawing used by training and `centerloss plot` alike."""
    (Path(run_dir) / runs.PLOTS).mkdir(exist_ok=True)  # a plots/ deleted by hand is drawn again
    out = []
    for split in splits:
        features, labels = feats.split(split)
        out.append(save_feature_plot(runs.plot_path(run_dir, split, feats.epoch), features, labels,
                                     shown_centers(feats, centers), feature_title(feats, split), dpi=dpi,
                                     classes=classes_of(feats)))
    return out


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


def draw_epoch(run_dir: Path, feats: EpochFeatures, history: Sequence[dict[str, float]] = ()) -> list[Path]:
    """What training draws after an epoch: its scatter plots, and the curves up to it."""
    out = draw_epoch_plots(run_dir, feats)
    if history:
        out.append(draw_run_curves(run_dir, history))
    return out


def draw_missing_plots(run_dir: Path, epochs: Sequence[int]) -> list[Path]:
    """Draw the plots of finished epochs that are missing, e.g. after a kill while the worker drew them,
    and the curves when they are missing or older than the checkpoint (a kill before they were drawn)."""
    out = []
    curves, checkpoint = Path(run_dir) / runs.PLOTS / CURVES, Path(run_dir) / runs.CHECKPOINT
    if epochs and checkpoint.is_file() and (not curves.is_file() or curves.stat().st_mtime < checkpoint.stat().st_mtime):
        out.append(draw_run_curves(run_dir))
    for e in epochs:
        missing = tuple(s for s in runs.SPLITS if not runs.plot_path(run_dir, s, e).is_file())
        if missing and runs.features_path(run_dir, e).is_file():
            try:
                feats = runs.load_features(run_dir, e)
            except CenterLossError as err:  # a damaged features file costs its plots, never the run
                print(f"Warning: {err}; its plots are not drawn", file=sys.stderr)
                continue
            out += draw_epoch_plots(run_dir, feats, missing)
    return out


def _exit_with_parent(parent: int) -> None:
    """The worker's watchdog: a trainer killed by SIGKILL never shuts its pool down, so leave on our own."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(parent: int) -> None:
    # Stop signals are the trainer's to handle (a terminal's Ctrl-C, or Slurm's SIGTERM, reach the whole
    # group): it saves, then closes us, so the plots of finished epochs still get drawn.
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


_POOL: ProcessPoolExecutor | None = None


def _plot_process() -> ProcessPoolExecutor:
    """This process's one plotting process, started on first use and kept for the runs that follow (the
    runs of a sweep, a notebook's trainings), so each pays its start-up once. It ends with this process."""
    global _POOL
    if _POOL is None:
        # spawn, not fork: no fork of a process that holds torch threads.
        _POOL = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_init_worker, initargs=(os.getpid(),))
        # Start it now, so that its imports overlap the first epoch rather than delay the first plot.
        with stop_signals_blocked():  # for good: the trainer handles stop signals, this process ignores them
            _POOL.submit(os.getpid)
        # A multiprocessing child (a `sweep --jobs` worker) joins its own children at exit before
        # Python's exit hooks would shut this pool down, and would wait on it forever: shut it down first.
        # (Queues close their feeder threads in finalizers of priority 10; this must run before them.)
        multiprocessing.util.Finalize(None, _POOL.shutdown, exitpriority=100)
    return _POOL


class PlotWorker:
    """Draws one training's epoch plots in the background plotting process, so training never waits
    for matplotlib.

    At most `max_pending` epochs are outstanding (each holds up to 20k features); `submit` waits for
    the oldest beyond that. `close` returns only when every plot is written. A failure in the worker
    is raised here, at the next submit or at close.
    """

    def __init__(self, max_pending: int = 2):
        self._pool = _plot_process()
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending

    @staticmethod
    def _wait(future: Future) -> None:
        global _POOL
        try:
            future.result()
        except BrokenProcessPool as e:
            _POOL = None  # the process died: the next training starts a new one
            raise PlotError(f"drawing plots failed: the plotting process died ({e})") from e
        except Exception as e:  # the drawing's own error
            raise PlotError(f"drawing plots failed: {type(e).__name__}: {e}") from e

    def submit(self, run_dir: Path, feats: EpochFeatures, history: Sequence[dict[str, float]] = ()) -> None:
        """Queue one epoch's plots (and the run's curves up to it, given its `history`); waits while
        `max_pending` epochs are outstanding."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._max_pending):
            self._wait(self._pending.popleft())
        # Absolute: the plotting process outlives this training and keeps the working folder it started in.
        self._pending.append(self._pool.submit(draw_epoch, Path(run_dir).absolute(), feats, list(history)))

    def close(self) -> None:
        """Wait until every queued plot is written; raise if any failed."""
        while self._pending:
            self._wait(self._pending.popleft())

    def __enter__(self) -> "PlotWorker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()  # the plots of finished epochs still get written
        except PlotError:
            pass  # the error already on its way out matters more


def pick_epochs(run_dir: Path, epoch: str) -> list[int]:
    """The saved epochs that `epoch` ("all", "last" or a number) names."""
    saved = runs.saved_epochs(run_dir)
    if epoch == "all":
        return saved
    if epoch == "last":
        return saved[-1:]
    if not re.fullmatch(r"[0-9]+", epoch) or int(epoch) not in saved:  # not isdigit(): "²" is a digit to it
        raise CenterLossError(
            f"epoch {epoch!r} for {run_dir}: expected all, last or one of the saved epochs {saved[0]}..{saved[-1]}"
        )
    return [int(epoch)]


def replot_run(run_dir: str | os.PathLike, epoch: str = "all", splits: Sequence[str] = runs.SPLITS,
               centers: bool | None = None, dpi: int = PLOT_DPI) -> list[Path]:
    """Re-draw a run's per-epoch scatter plots from its saved features; never trains."""
    run_dir = Path(run_dir)
    out = []
    for e in pick_epochs(run_dir, epoch):
        out += draw_epoch_plots(run_dir, runs.load_features(run_dir, e), splits, centers, dpi)
    return out


def save_gif(run_dir: str | os.PathLike, split: str, fps: float = 2.0, centers: bool | None = None) -> Path:
    """plots/{split}.gif: one frame per saved epoch, with limits fixed across frames so nothing jumps, and
    the last frame held for two seconds (or two frames' time, if longer) so the end can be seen."""
    if not (math.isfinite(fps) and 0 < fps <= 50):
        raise CenterLossError(f"--fps {fps:g}: expected a number of frames per second in (0, 50]")
    run_dir = Path(run_dir)
    frames = [runs.load_features(run_dir, e) for e in runs.saved_epochs(run_dir)]
    limits = square_limits(*(f.split(split)[0] for f in frames), *(f.centers for f in frames))
    fig = new_figure(5.6, 4.6)
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
    path = runs.gif_path(run_dir, split)
    with atomic_open(path) as out:
        images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def grid_panels(run_dirs: Sequence[str | os.PathLike], epoch: str = "last", splits: Sequence[str] = ("test",),
                centers: bool | None = None) -> tuple[list[tuple], list[EpochFeatures]]:
    """(features, labels, centers, title) per run and split at `epoch`, runs ordered by lambda, then alpha;
    and the epochs' features they come from."""
    chosen = [runs.load_features(Path(d), pick_epochs(Path(d), epoch)[-1]) for d in run_dirs]
    chosen.sort(key=lambda f: (f.lam, f.alpha))
    suffix = len(splits) > 1
    panels = [(*f.split(s), shown_centers(f, centers), panel_title(f, s) + (f" ({s})" if suffix else ""))
              for f in chosen for s in splits]
    return panels, chosen


def grid_of_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, epoch: str = "last",
                 splits: Sequence[str] = ("test",), centers: bool | None = None, dpi: int = PLOT_DPI) -> Path:
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
        raise CenterLossError(f"these runs are of different datasets ({', '.join(sorted(datasets))}): one grid, one dataset")
    return save_grid(out, panels, suptitle=f"{DATASETS[datasets.pop()].title} {' and '.join(splits)} features at "
                     f"{which}{trained}", dpi=dpi, classes=classes_of(feats[0]))


MEAN_ROW = "mean"  # the seed column of a sweep summary's rows that average a (lambda, alpha) over seeds


CURVES = "curves.png"  # in a run's plots/: its losses, accuracy and compactness per epoch


def save_curves(out: str | os.PathLike, runs_: Sequence[tuple[str, Sequence[dict[str, float]]]]) -> Path:
    """Per-epoch curves of one or more runs (label, metrics rows): softmax and center loss (train: the
    epoch's mean over its batches, test: after the epoch), train and test accuracy, and the intra/inter
    compactness ratio. One colour per run; solid lines are test, dashed train."""
    fig = new_figure(10.0, 7.0)
    panels = [("softmax loss", "softmax_loss", True), ("center loss", "center_loss", True),
              ("accuracy (%)", "acc", False), ("compactness: intra / inter", "ratio", False)]
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    for (ylabel, key, log), ax in zip(panels, axes):
        for n, (label, rows) in enumerate(runs_):
            color = f"C{n % 10}"
            epochs = [int(r["epoch"]) for r in rows]
            scale = 100.0 if key == "acc" else 1.0
            for split, style in (("train", "--"), ("test", "-")):
                ys = [scale * r[f"{split}_{key}"] for r in rows]
                ax.plot(epochs, ys, style, color=color, marker="o", markersize=3,
                        label=f"{label} ({split})" if len(runs_) > 1 else split)
        if log and all(r[f"{s}_{key}"] > 0 for _, rows in runs_ for r in rows for s in ("train", "test")):
            ax.set_yscale("log")
        elif key == "ratio":
            ax.set_ylim(bottom=0)  # a ratio is a size: from 0, so differences look their size
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    title = runs_[0][0] if len(runs_) == 1 else f"{len(runs_)} runs"
    fig.suptitle(f"{title}: solid test, dashed train", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def draw_run_curves(run_dir: str | os.PathLike, history: Sequence[dict[str, float]] | None = None) -> Path | None:
    """plots/curves.png of one run, from its history (default: its metrics.csv); None before its first epoch."""
    run_dir = Path(run_dir)
    history = runs.run_history(run_dir) if history is None else history
    if not history:
        return None
    (run_dir / runs.PLOTS).mkdir(exist_ok=True)
    return save_curves(run_dir / runs.PLOTS / CURVES, [(run_dir.name, history)])


def save_compactness_plot(out: str | os.PathLike, rows: Sequence[dict[str, Any]], metric: str = "test_ratio") -> Path:
    """Two panels against lambda on a log axis, one line per alpha: `metric` (the compactness) and the
    test accuracy; against alpha instead when the sweep has a single lambda and several alphas. A value
    of 0 has no place on a log axis: it sits apart at the left edge, labelled 0, behind a dashed break.
    `rows` are a sweep's summary rows: each point is the mean over the seeds of its runs, with an error
    bar of one standard deviation where there are several. The compactness axis starts at 0, so
    differences look their size."""
    rows = [r for r in rows if r["seed"] != MEAN_ROW]  # the per-run rows; the means are recomputed per point
    lambdas, alphas = {r["lambda"] for r in rows}, {r["alpha"] for r in rows}
    x_key, line_key = ("alpha", "lambda") if len(lambdas) == 1 and len(alphas) > 1 else ("lambda", "alpha")
    positive = sorted({r[x_key] for r in rows if r[x_key] > 0})
    has_zero = any(r[x_key] == 0 for r in rows)
    zero_x = positive[0] / 10 if positive else 1e-4
    fig = new_figure(11.0, 4.2)
    symbol = {"lambda": "λ", "alpha": "α"}
    seeds = max(Counter((r["lambda"], r["alpha"]) for r in rows).values())
    panels = [(metric, "intra / inter distance (test)" if metric == "test_ratio" else metric, 1.0),
              ("test_acc", "test accuracy (%)", 100.0)]
    for i, (key, ylabel, scale) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for n, value in enumerate(sorted({r[line_key] for r in rows})):
            xs = sorted({r[x_key] for r in rows if r[line_key] == value})
            ys = [[scale * r[key] for r in rows if r[line_key] == value and r[x_key] == x] for x in xs]
            means = [float(np.mean(y)) for y in ys]
            stds = [float(np.std(y, ddof=1)) if len(y) > 1 else 0.0 for y in ys]
            # The point at 0 is drawn alone: a line from it would cross the break as if 0 were on the scale.
            parts = [part for part in ([i for i, x in enumerate(xs) if x == 0], [i for i, x in enumerate(xs) if x > 0])
                     if part]
            for k, part in enumerate(parts):
                ax.errorbar([xs[i] or zero_x for i in part], [means[i] for i in part],
                            yerr=[stds[i] for i in part] if seeds > 1 else None, marker="o", capsize=4,
                            color=f"C{n % 10}", label=f"{symbol[line_key]} = {value:g}" if k == 0 else None)
        ax.set_xscale("log")
        ticks = [zero_x] * has_zero + positive
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0" if t == zero_x else f"{t:g}" for t in ticks])
        ax.minorticks_off()
        if has_zero and positive:  # the break between 0 and the log scale
            ax.axvline((zero_x * positive[0]) ** 0.5, color="grey", linestyle="--", linewidth=0.8)
        if key == metric:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("λ (center loss weight)" if x_key == "lambda" else "α (center update rate)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    spread = f"; mean ± std over {seeds} seeds" if seeds > 1 else ""
    zero = f"; {symbol[x_key]} = 0 drawn apart, left of the dashed line" if has_zero and positive else ""
    fig.axes[0].set_title("Compactness: smaller is tighter classes", fontsize=10)
    fig.axes[1].set_title("Test accuracy", fontsize=10)
    fig.suptitle(f"log {symbol[x_key]} axis{zero}{spread}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)
