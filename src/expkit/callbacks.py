"""Lightning callbacks of expkit's own (conf/callbacks/default.yaml lists them)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from expkit.errors import NonFiniteLoss


def ends_epoch(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether training batch ``batch_idx`` is its epoch's last: the data ran out, the epoch's
    batch limit (``limit_train_batches``) is reached, or ``max_steps`` ends training here."""
    return (
        trainer.is_last_batch
        or batch_idx + 1 >= trainer.num_training_batches
        or 0 <= trainer.max_steps <= trainer.global_step
    )


class StopOnNonFiniteLoss(pl.Callback):
    """Stop training at the first NaN or infinite training loss, naming the step.

    The run then fails (``NonFiniteLoss``, exit code 1; the run record says ``failed``) instead of
    finishing with a useless model, and no checkpoint is written after the bad step: the last
    checkpoint on disk holds the last good weights. On an accelerator the flag lives on the device
    and is read every ``check_every_n_steps`` steps and before every validation, so there is no
    per-step host synchronisation; on a CPU the loss is read each step (that waits for nothing).
    The step named is the first bad one either way.

    Args:
        check_every_n_steps: how often the flag is read during an epoch.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps} must be at least 1")
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | int | None = None  # the first bad step; -1: none yet

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if loss.device.type == "cpu":
            # Reading a CPU tensor waits for nothing: a Python number is the cheapest flag.
            if not isinstance(self._first_bad, int):
                self._first_bad = -1
            if self._first_bad < 0 and not math.isfinite(loss.detach().sum().item()):
                self._first_bad = trainer.global_step
        else:
            if not isinstance(self._first_bad, torch.Tensor) or self._first_bad.device != loss.device:
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
        flag = torch.tensor(self._first_bad) if isinstance(self._first_bad, int) else self._first_bad
        first_bad = int(trainer.strategy.reduce(flag.float(), reduce_op="max").item())
        if first_bad >= 0:
            raise NonFiniteLoss(
                f"the training loss became non-finite (NaN or inf) at step {first_bad} (epoch "
                f"{trainer.current_epoch}); training stopped and no checkpoint was written after it, so "
                "the last checkpoint holds the last good weights. Lower model.optimizer.lr, set "
                "trainer.gradient_clip_val, or check the data for extreme values."
            )


class ThrottledRichProgressBar(pl.callbacks.RichProgressBar):
    """Lightning's ``RichProgressBar``, its training bar updated at most ``refresh_rate`` times a
    second.

    Lightning's bar updates its task and recomputes the progress-bar metrics after every training
    batch, although the screen is redrawn only ``refresh_rate`` times a second: about 0.1 ms of
    host work a step, several percent of a small model's step. Updates between two redraws are
    skipped (nothing on screen changes); the last batch of an epoch is always shown.

    Args:
        refresh_rate: redraws (and updates) per second.
        **kwargs: the other arguments of ``RichProgressBar``.
    """

    def __init__(self, refresh_rate: int = 10, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._next_update = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        if now < self._next_update and not ends_epoch(trainer, batch_idx):
            return
        self._next_update = now + 1 / max(self.refresh_rate, 1)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
