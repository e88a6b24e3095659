"""Per-epoch learning curves as a plain CSV in the run directory (DVC plots it; any tool reads it)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytorch_lightning as pl

from expkit.tracking.files import to_number, write_atomic

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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A resumed run re-logs to W&B the epochs its earlier segments' W&B records lack."""
        if self.rows and trainer.is_global_zero:
            relog_lost_epochs(trainer, self.rows)

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
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(Path(trainer.default_root_dir) / self.filename, text.getvalue())


def relog_lost_epochs(trainer: pl.Trainer, rows: list[dict[str, float]]) -> list[int]:
    """Log to the W&B run the epochs of ``rows`` (the restored history) that no earlier offline
    segment of this run recorded; returns them.

    W&B writes an offline run's record from a service process: a job killed with ``kill -9`` (or
    requeued) loses what that process had not written yet, and W&B 0.31 continues an offline run
    in a new segment (``offline-run-*-<id>-1``). The run's own ``history.csv`` (restored from the
    checkpoint) says which epochs happened; the earlier segments' ``.wandb`` files say which W&B
    has: each epoch ends up in the W&B record exactly once. Online runs continue the same run, whose
    steps W&B keeps on its server: nothing is re-logged there.
    """
    from pytorch_lightning.loggers import WandbLogger

    from expkit.tracking.wandb_log import find_run_logs, read_run_log

    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if not loggers or not getattr(loggers[0].experiment, "offline", False):
        return []
    run = loggers[0].experiment
    current = Path(run.dir).parent.resolve()
    logged: set[int] = set()
    for log in find_run_logs(Path(trainer.default_root_dir) / "wandb"):
        if log.parent.resolve() == current or run.id not in log.name:
            continue
        try:
            history = read_run_log(log)["history"]
        except Exception:  # noqa: BLE001 - an unreadable segment holds nothing we can count on
            continue
        logged |= {int(item["epoch"]) for item in history if "epoch" in item}
    lost = [row for row in rows if int(row["epoch"]) not in logged]
    for row in lost:
        metrics = {k: v for k, v in row.items() if k != "step"}
        loggers[0].log_metrics(metrics, step=int(row["step"]))
    return [int(row["epoch"]) for row in lost]
