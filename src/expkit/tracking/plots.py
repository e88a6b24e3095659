"""The learning-curve plot every finished run leaves next to its metrics."""

from __future__ import annotations

import csv
from pathlib import Path

from expkit.metrics import ACCURACY, LOSS
from expkit.tracking.history import HISTORY_FILE

LEARNING_CURVES_FILE = "learning_curves.png"


def plot_learning_curves(run_dir: Path) -> Path | None:
    """Plot ``history.csv`` (loss and accuracy per epoch, train and val) to ``learning_curves.png``."""
    history = Path(run_dir) / HISTORY_FILE
    if not history.is_file():
        return None
    with history.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, (LOSS, ACCURACY), strict=True):
        for stage in ("train", "val"):
            key = f"{stage}/{name}"
            points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    out = Path(run_dir) / LEARNING_CURVES_FILE
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
