"""Line charts of metrics: one or more runs' curves per epoch, and a sweep's compactness and accuracy
against λ (or α). Pure drawing, like figures.py, whose figure helpers these share."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.ticker import LogFormatter, MaxNLocator

from ..rundir.files import curves_path, read_metrics
from .figures import DPI, new_figure, require_run_folder, save_figure


class PlainLogFormatter(LogFormatter):
    """A log axis's labels as plain numbers ("0.6", "200"), on the ticks matplotlib would label."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


MEAN_ROW = "mean"  # the seed column of a sweep summary's rows that average a (lambda, alpha) over seeds


def save_curves(out: str | os.PathLike, runs_: Sequence[tuple[str, Sequence[dict[str, float]]]],
                dpi: int = DPI) -> Path | None:
    """Per-epoch curves of one or more runs (label, metrics rows): softmax and center loss (train: the
    epoch's mean over its batches, test: after the epoch), train and test accuracy, and the intra/inter
    compactness ratio. One colour per run; solid lines are test, dashed train. Runs with no finished epoch
    have nothing to draw and are left out; None when no run is left. Several runs get one legend below
    the panels, so that long run names cover no curve: a line per run, or side by side when the labels
    are short (a sweep's "λ = 0.01")."""
    runs_ = [(label, rows) for label, rows in runs_ if rows]
    if not runs_:
        return None
    several = len(runs_) > 1
    columns = min(len(runs_), 6) if all(len(label) <= 24 for label, _ in runs_) else 1  # a λ family in a row
    lines = -(-len(runs_) // columns)
    legend_in = 0.22 * lines + 0.2 if several else 0.0  # inches below the panels, for the legend's lines
    fig = new_figure(10.0, 7.0 + legend_in)
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
                        label=(label if split == "test" else None) if several else split)
        if log and all(r[f"{s}_{key}"] > 0 for _, rows in runs_ for r in rows for s in ("train", "test")):
            ax.set_yscale("log")
            # Plain labels ("0.1", "2"), not mathtext ("$10^{-1}$"), whose parsing took half of the drawing.
            ax.yaxis.set_major_formatter(PlainLogFormatter())
            ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        elif key == "ratio":
            ax.set_ylim(bottom=0)  # a ratio is a size: from 0, so differences look their size
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    title = f"{len(runs_)} runs" if several else runs_[0][0]
    fig.suptitle(f"{title}: solid test, dashed train", fontsize=10)
    if several:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=columns, fontsize=7,
                   frameon=False)
        fig.tight_layout(rect=(0, legend_in / (7.0 + legend_in), 1, 1))
    else:
        axes[0].legend(fontsize=7, handlelength=4)  # long enough handles that the train line shows its dashes
        fig.tight_layout()
    return save_figure(fig, out, dpi)


def draw_run_curves(run_dir: str | os.PathLike, history: Sequence[dict[str, float]] | None = None,
                    dpi: int = DPI) -> Path | None:
    """plots/curves.png of one run, from its history (default: its metrics.csv); None before its first epoch."""
    run_dir = Path(run_dir)
    require_run_folder(run_dir)
    history = read_metrics(run_dir) if history is None else history
    if not history:
        return None
    return save_curves(curves_path(run_dir), [(run_dir.name, history)], dpi)


PANEL_LABELS = {"test_ratio": "intra / inter distance (test)", "train_ratio": "intra / inter distance (train)",
                "test_intra": "intra-class distance (test)", "test_inter": "inter-center distance (test)",
                "test_acc": "test accuracy (%)"}
PANEL_TITLES = {"test_ratio": "Compactness: smaller is tighter classes", "test_intra": "Spread around each center",
                "test_inter": "Distance between centers", "test_acc": "Test accuracy"}
SYMBOL = {"lam": "λ", "alpha": "α"}


def save_compactness_plot(out: str | os.PathLike, rows: Sequence[dict[str, Any]],
                          panels: Sequence[str] = ("test_ratio", "test_acc"), dpi: int = DPI) -> Path:
    """One panel per metric of `panels` against lambda on a log axis, one line per alpha; against alpha
    instead when the sweep has a single lambda and several alphas. A value of 0 has no place on a log
    axis: it sits apart at the left edge, labelled 0, behind a dashed break. `rows` are a sweep's summary
    rows: each point is the mean over the seeds of its runs, with an error bar of one standard deviation
    where there are several. Distance axes start at 0, so differences look their size."""
    rows = [r for r in rows if r["seed"] != MEAN_ROW]  # the per-run rows; the means are recomputed per point
    lams, alphas = {r["lam"] for r in rows}, {r["alpha"] for r in rows}
    x_key, line_key = ("alpha", "lam") if len(lams) == 1 and len(alphas) > 1 else ("lam", "alpha")
    positive = sorted({r[x_key] for r in rows if r[x_key] > 0})
    has_zero = any(r[x_key] == 0 for r in rows)
    seeds = max(Counter((r["lam"], r["alpha"]) for r in rows).values())
    fig = new_figure(5.5 * len(panels), 4.2) if len(panels) <= 2 else new_figure(11.0, 8.4)
    columns = min(len(panels), 2)
    for i, key in enumerate(panels):
        ax = fig.add_subplot((len(panels) + 1) // 2, columns, i + 1)
        _draw_against(ax, rows, key, x_key, line_key, error_bars=seeds > 1)
        _log_axis_with_zero(ax, positive, has_zero)
        if key != "test_acc":
            ax.set_ylim(bottom=0)
        ax.set_xlabel("λ (center loss weight)" if x_key == "lam" else "α (center update rate)")
        ax.set_ylabel(PANEL_LABELS.get(key, key))
        ax.set_title(PANEL_TITLES.get(key, key), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    spread = f"; mean ± std over {seeds} seeds" if seeds > 1 else ""
    zero = f"; {SYMBOL[x_key]} = 0 drawn apart, left of the dashed line" if has_zero and positive else ""
    fig.suptitle(f"log {SYMBOL[x_key]} axis{zero}{spread}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi)


def zero_position(positive: Sequence[float]) -> float:
    """Where a value of 0 is drawn on the log axis: a decade left of the smallest positive value."""
    return positive[0] / 10 if positive else 1e-4


def _draw_against(ax, rows: Sequence[dict[str, Any]], key: str, x_key: str, line_key: str, error_bars: bool) -> None:
    """One line per value of `line_key`: the mean of `key` over seeds at each `x_key`, ± one std."""
    scale = 100.0 if key == "test_acc" else 1.0
    zero_x = zero_position(sorted({r[x_key] for r in rows if r[x_key] > 0}))
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
                        yerr=[stds[i] for i in part] if error_bars else None, marker="o", capsize=4,
                        color=f"C{n % 10}", label=f"{SYMBOL[line_key]} = {value:g}" if k == 0 else None)


def _log_axis_with_zero(ax, positive: Sequence[float], has_zero: bool) -> None:
    zero_x = zero_position(positive)
    ax.set_xscale("log")
    ticks = [zero_x] * has_zero + list(positive)
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0" if t == zero_x else f"{t:g}" for t in ticks])
    ax.minorticks_off()
    if has_zero and positive:  # the break between 0 and the log scale
        ax.axvline((zero_x * positive[0]) ** 0.5, color="grey", linestyle="--", linewidth=0.8)
