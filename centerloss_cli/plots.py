"""The 2-D feature scatter plots, drawn without pyplot so no interactive backend is ever touched."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .storage import atomic_open

# One fixed colour per digit, the same in every figure (matplotlib's tab10).
DIGIT_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
FIGURE_FORMATS = ("png", "pdf", "svg")


def square_limits(*point_sets: np.ndarray, margin: float = 0.06) -> tuple[tuple[float, float], tuple[float, float]]:
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
    legend: bool = True,
) -> None:
    """The one drawing of a feature scatter: per-digit colours, white c0..c9 centers, no point cut off."""
    for digit in range(10):
        pts = features[labels == digit]
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c=DIGIT_COLORS[digit], label=str(digit),
                   alpha=0.6, linewidths=0, rasterized=True)
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=36, c="white", edgecolors="black", linewidths=1.0, zorder=3)
        for j, (x, y) in enumerate(centers):
            ax.annotate(f"c{j}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7,
                        zorder=4, bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
    xlim, ylim = limits or square_limits(features, *([] if centers is None else [centers]))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=5, fontsize=7, frameon=False)


def feature_title(lam: float, alpha: float, epoch: int, accuracy: float, split: str) -> str:
    return f"{split}: λ = {lam:g}, α = {alpha:g}, epoch {epoch}, test acc {100 * accuracy:.2f}%"


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save atomically; the format comes from the suffix (png, pdf or svg)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"figure format {fmt!r}: expected one of {', '.join(FIGURE_FORMATS)}")
    with atomic_open(path) as f:
        fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    return path


def save_feature_plot(
    path: str | os.PathLike,
    features: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray | None,
    title: str,
    limits: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Path:
    fig = new_figure(5.6, 4.6)
    draw_features(fig.add_subplot(1, 1, 1), features, labels, centers, title, limits)
    return save_figure(fig, path)


def grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, 3 if n in (5, 6, 9) else 4)
    return -(-n // cols), cols


def save_grid(
    path: str | os.PathLike,
    panels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]],
    suptitle: str | None = None,
) -> Path:
    """One panel per (features, labels, centers, title), each with its own limits, a shared legend."""
    rows, cols = grid_shape(len(panels))
    fig = new_figure(3.6 * cols + 0.8, 3.6 * rows + (0.4 if suptitle else 0))
    for i, (features, labels, centers, title) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        draw_features(ax, features, labels, centers, title, legend=False)
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", markerscale=6, fontsize=8, frameon=False, title="digit")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0, 1 - 0.7 / fig.get_figwidth(), 1))
    return save_figure(fig, path)
