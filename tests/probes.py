"""Callbacks that tests inject into ``train.py`` runs (``+callbacks.<name>._target_=tests.probes.X``)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytorch_lightning as pl


class GcProbe(pl.Callback):
    """Write the garbage collector's state when the callback is built (during start-up) and when
    training starts, as JSON to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.states = {"built": _gc_state()}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states["train_start"] = _gc_state()
        self.out.write_text(json.dumps(self.states))


def _gc_state() -> dict:
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}


class SignalAtEpochEnd(pl.Callback):
    """Send this process SIGTERM at the end of training epoch ``epoch``, in the run's first segment
    only (a resumed run, whose ``run.json`` has more segments, goes on): a real interruption."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import os
        import signal

        record = Path(trainer.default_root_dir) / "run.json"
        segments = json.loads(record.read_text())["segments"] if record.is_file() else [None]
        if trainer.current_epoch == self.epoch and len(segments) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
