"""Per-epoch learning curves as a plain CSV in the run directory (DVC plots it; any tool reads it)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl

from expkit.tracking.files import to_number

HISTORY_FILE = "history.csv"


class EpochHistory(pl.Callback):
    """After every training epoch (validation included), append every scalar metric the module
    has logged by then (``trainer.callback_metrics``: ``train/loss``, ``val/mse``, ...) as one row
    of ``<run dir>/history.csv`` (the trainer's ``default_root_dir``).

    The file is rewritten whole each epoch, so an interrupted run leaves a complete table.

    Args:
        filename: file name inside the run directory.
    """

    def __init__(self, filename: str = HISTORY_FILE) -> None:
        self.filename = filename
        self.rows: list[dict[str, float]] = []

    # The rows travel in checkpoints, so a resumed run keeps the curves of its earlier segments.
    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {
            key: to_number(value)
            for key, value in sorted(trainer.callback_metrics.items())
            if getattr(value, "numel", lambda: 1)() == 1
        }
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        path = Path(trainer.default_root_dir) / self.filename
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
