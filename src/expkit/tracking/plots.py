"""The learning-curve plot every finished run leaves next to its metrics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from expkit.tracking.history import HISTORY_FILE

LEARNING_CURVES_FILE = "learning_curves.png"
NOT_PLOTTED = ("epoch", "step")


def curve_groups(columns: list[str]) -> dict[str, list[str]]:
    """Metric columns grouped by name across stages: ``train/loss`` and ``val/loss`` share the
    panel ``loss``; a name without a stage prefix is its own panel.

    >>> curve_groups(["epoch", "train/loss", "val/loss", "val/mse"])
    {'loss': ['train/loss', 'val/loss'], 'mse': ['val/mse']}
    """
    groups: dict[str, list[str]] = {}
    for column in columns:
        if column not in NOT_PLOTTED:
            groups.setdefault(column.split("/", 1)[-1], []).append(column)
    return groups


def plot_learning_curves(run_dir: Path) -> Path | None:
    """Plot ``history.csv`` (every logged metric per epoch, one panel per metric name, its stages
    together) to ``learning_curves.png``."""
    history = Path(run_dir) / HISTORY_FILE
    if not history.is_file():
        return None
    with history.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        groups = curve_groups(list(reader.fieldnames or []))
    if not rows or not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(groups), 3)
    lines = math.ceil(len(groups) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 4 * lines), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, groups.items(), strict=False):
        for key in keys:
            points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    out = Path(run_dir) / LEARNING_CURVES_FILE
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
