"""Lightning callbacks of expkit's own (conf/callbacks/default.yaml lists them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from expkit.errors import NonFiniteLoss


class StopOnNonFiniteLoss(pl.Callback):
    """Stop training at the first NaN or infinite training loss, naming the step.

    The run then fails (``NonFiniteLoss``, exit code 1; the run record says ``failed``) instead of
    finishing with a useless model, and no checkpoint is written after the bad step: the last
    checkpoint on disk holds the last good weights. The flag lives on the device and is read every
    ``check_every_n_steps`` steps and before every validation, so there is no per-step
    host synchronisation on a GPU; the step named is the first bad one either way.

    Args:
        check_every_n_steps: how often the flag is read during an epoch.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps} must be at least 1")
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.tensor(-1, device=loss.device)
        bad = ~torch.isfinite(loss.detach()).all()
        # The step as a Python number: a new device tensor each step would be a synchronous copy.
        self._first_bad = torch.where(bad & (self._first_bad < 0), trainer.global_step, self._first_bad)
        if (batch_idx + 1) % self.check_every_n_steps == 0:
            self._raise_if_bad(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: pl.Trainer) -> None:
        if self._first_bad is None:
            return
        first_bad = int(trainer.strategy.reduce(self._first_bad.float(), reduce_op="max").item())
        if first_bad >= 0:
            raise NonFiniteLoss(
                f"the training loss became non-finite (NaN or inf) at step {first_bad} (epoch "
                f"{trainer.current_epoch}); training stopped and no checkpoint was written after it, so "
                "the last checkpoint holds the last good weights. Lower model.optimizer.lr, set "
                "trainer.gradient_clip_val, or check the data for extreme values."
            )
