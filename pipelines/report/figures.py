"""Pictures of a run's numbers: training curves, the confusion matrix and per-class accuracy of the best fusion.

matplotlib is optional (the ``report`` extra). It is imported only inside these functions, and figures are drawn
on the Agg canvas directly (no pyplot, no display, no global state), so a report can be written on a headless
machine or inside a worker. Every figure has a fixed size in pixels at ``DPI``; ``save`` writes it atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flow.atomic import atomic_output
from flow.errors import InputError

DPI = 100
INSTALL_HINT = "matplotlib is needed for reports and attention pictures: pip install 'mars-sta[report]'"
CURVES_SIZE = (12.0, 3.0)  # inches: training curves, 1200 x 300 px


class ReportUnavailable(InputError):
    """matplotlib is missing; the message says how to install it."""


def require_matplotlib() -> None:
    """Raise ReportUnavailable (one line, with the install command) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportUnavailable(None, INSTALL_HINT) from None


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas, with constrained layout, ``width`` x ``height`` inches at ``DPI``."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Any, path: str | Path) -> Path:
    """Render ``figure`` to PNG under a temporary name and rename it into place."""
    with atomic_output(path) as handle:
        figure.savefig(handle, format="png", dpi=DPI)
    return Path(path)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _plot(axes: Any, rows: Sequence[dict[str, Any]], key: str, label: str, **style: Any) -> bool:
    epochs, values = _series(rows, key)
    if epochs:
        axes.plot(epochs, values, marker="o", markersize=3, label=label, **style)
    return bool(epochs)


def training_curves(rows: Sequence[dict[str, Any]], title: str) -> Any:
    """Four panels per stream: losses, the MARS MSE term, train/validation accuracy, learning rate."""
    figure = new_figure(*CURVES_SIZE)
    from matplotlib.ticker import MaxNLocator

    loss, mse, accuracy, rate = figure.subplots(1, 4)
    figure.suptitle(title, fontsize=11)
    is_mars = any(row.get("mse") is not None for row in rows)
    _plot(loss, rows, "loss", "train loss" + (" (CE + α·MSE)" if is_mars else ""))
    if is_mars:
        _plot(loss, rows, "ce", "train CE", linestyle="--")
    _plot(loss, rows, "val_loss", "validation CE")
    loss.set_title("loss", fontsize=10)
    if is_mars:
        _plot(mse, rows, "mse", "MSE term", color="tab:purple")
        mse.set_title("MSE to the teacher's features", fontsize=10)
    else:
        mse.text(0.5, 0.5, "no MSE term\n(not a MARS stream)", ha="center", va="center", color="0.4",
                 transform=mse.transAxes)
        mse.set_title("MSE term", fontsize=10)
        mse.set_xticks([])
        mse.set_yticks([])
    _plot(accuracy, rows, "train_acc", "train")
    _plot(accuracy, rows, "val_acc", "validation")
    accuracy.set_title("top-1 (%)", fontsize=10)
    if _plot(rate, rows, "lr", "lr", color="tab:green"):
        rate.set_yscale("log")
    rate.set_title("learning rate", fontsize=10)
    plotted = (loss, mse, accuracy, rate) if is_mars else (loss, accuracy, rate)
    last_epoch = max((row["epoch"] for row in rows), default=1)
    for axes in plotted:
        axes.set_xlim(0.5, last_epoch + 0.5)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for axes in (loss, accuracy):
        axes.legend(fontsize=8)
    return figure


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> Any:
    """Counts with true classes as rows and predictions as columns; cells annotated while the matrix is small."""
    matrix = np.asarray(confusion)
    count = len(classes)
    side = float(np.clip(0.45 * count + 2.5, 4.5, 14.0))
    figure = new_figure(side + 1.0, side)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="videos")
    if count <= 40:
        ticks = np.arange(count)
        axes.set_xticks(ticks, classes, rotation=90, fontsize=8)
        axes.set_yticks(ticks, classes, fontsize=8)
    if count <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, col), value in np.ndenumerate(matrix):
            if value:
                axes.text(col, row, str(value), ha="center", va="center", fontsize=8,
                          color="white" if value > threshold else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    return figure


def per_class_figure(accuracy: dict[str, float | None], title: str) -> Any:
    """Horizontal bars of per-class top-1, in class order (classes without test videos are left empty)."""
    names = list(accuracy)
    values = [np.nan if accuracy[name] is None else accuracy[name] for name in names]
    figure = new_figure(7.0, float(np.clip(0.22 * len(names) + 1.2, 2.5, 24.0)))
    axes = figure.subplots()
    positions = np.arange(len(names))
    axes.barh(positions, values, color="tab:blue")
    axes.set_yticks(positions, names, fontsize=8 if len(names) <= 40 else 5)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("top-1 (%)")
    axes.grid(axis="x", alpha=0.3)
    if not np.all(np.isnan(values)):
        mean = float(np.nanmean(values))
        axes.axvline(mean, color="tab:red", linestyle="--", linewidth=1)
        title += f"\nred line: mean class accuracy {mean:.1f}%"
    axes.set_title(title, fontsize=10)
    return figure
