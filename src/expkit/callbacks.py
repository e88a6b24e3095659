"""Lightning callbacks of expkit's own (conf/callbacks/default.yaml lists them)."""

from __future__ import annotations

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
    checkpoint on disk holds the last good weights.

    A step only keeps a reference to its (detached) loss: no device work and no host
    synchronisation in the hot loop. The kept losses are checked together, with one read of the
    device, every ``check_every_n_steps`` steps, before every validation and at the end of every
    epoch; the step named is the first bad one.

    Args:
        check_every_n_steps: how often the kept losses are checked during an epoch.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps} must be at least 1")
        self.check_every_n_steps = check_every_n_steps
        self._losses: list[torch.Tensor] = []  # the unchecked steps' losses, and their global steps
        self._steps: list[int] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._losses.append(loss.detach())
        self._steps.append(trainer.global_step)
        if len(self._losses) >= self.check_every_n_steps:
            self._raise_if_bad(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: pl.Trainer) -> None:
        losses, steps = self._losses, self._steps
        self._losses, self._steps = [], []
        first_bad = -1
        if losses and not torch.isfinite(torch.cat([loss.reshape(-1).float() for loss in losses])).all().item():
            first_bad = next(step for loss, step in zip(losses, steps, strict=True) if not torch.isfinite(loss).all())
        if trainer.world_size > 1:  # every rank stops together, or the others would wait for it forever
            flag = torch.tensor(float(first_bad), device=trainer.strategy.root_device)
            first_bad = int(trainer.strategy.reduce(flag, reduce_op="max").item())
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


class CheckMonitoredMetric(pl.Callback):
    """Stop a run whose monitored metric (``monitor.metric``) the module never logs, with a
    did-you-mean over the names it does log.

    Checkpointing, early stopping, a plateau scheduler and sweeps all read ``monitor.metric``; a
    name the module never logs would otherwise fail inside one of them, or silently never improve.
    Checked at the end of Lightning's sanity check (before the first training step) when the name
    has the prefix of the validation metrics logged there (``val/mse`` against ``val/loss``), the
    same at the end of the first real validation (also without a sanity check, and when that is
    a later epoch's: ``check_val_every_n_epoch=2``), at the end of every training epoch when the
    name has the prefix of a metric logged by then (``train/los`` against ``train/loss``), and at
    the latest at the end of the first epoch in which validation ran (every training and
    validation metric has been logged by then), or of the first epoch when the run has no
    validation loop (no val dataloader, ``limit_val_batches=0``). expkit's train task adds it to
    every run.

    Args:
        monitor: the metric's name, as the module logs it (``self.log(name, ...)``).
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.found = False
        self._validated = False  # a validation (not the sanity check) has run
        self._before_validation: set[str] = set()
        self._prefix = monitor.split("/", 1)[0] + "/" if "/" in monitor else None  # val/loss: val/

    def _check(self, trainer: pl.Trainer, final: bool) -> None:
        from expkit.errors import ConfigError

        logged = sorted(trainer.callback_metrics)
        if self.monitor in logged:
            self.found = True
            return
        if final or self._prefix and any(name.startswith(self._prefix) for name in logged):
            from expkit.config.suggest import did_you_mean

            raise ConfigError(
                f"monitor.metric={self.monitor}: the module never logs it.{did_you_mean(self.monitor, logged, 'monitor.metric={}')} "
                f"It logs: {', '.join(logged) or 'nothing'}. Set monitor.metric to one of them (and monitor.mode to min or max)."
            )

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.found:
            self._check(trainer, final=False)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_validation = set(trainer.callback_metrics)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._validated:
            return
        self._validated = True
        # Judged now when validation logged names of the name's prefix (before early stopping or
        # checkpointing fail on it); a training metric may still come at the epoch's end.
        logged_here = set(trainer.callback_metrics) - self._before_validation
        if not self.found and self._prefix and any(name.startswith(self._prefix) for name in logged_here):
            self._check(trainer, final=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.found:
            self._check(trainer, final=self._validated or not self._will_validate(trainer))

    @staticmethod
    def _will_validate(trainer: pl.Trainer) -> bool:
        """Whether a validation may still run: the run has a validation loop (a val dataloader, a
        ``validation_step``, ``limit_val_batches`` > 0) that is not known to have 0 batches. The
        validation data is only loaded for the first epoch that validates, so an empty
        ``num_val_batches`` before then means "not loaded yet" (``check_val_every_n_epoch=2``)."""
        if not trainer.enable_validation:
            return False
        batches = trainer.num_val_batches
        return not batches or sum(batches) > 0


class StopSignals:
    """Process-wide record of a SIGTERM, SIGINT (Ctrl-C) or SIGHUP asking the run to stop.

    ``install()`` (main thread only; idempotent) replaces the handlers with one that only records
    the signal and puts the previous handler back, so a second signal of the same kind is handled
    as before (Python's KeyboardInterrupt, Lightning's or the default). The run's task
    (``expkit.tasks.common.run_job``) installs it for the whole job, so a signal during start-up
    is seen too; :class:`SaveOnSignal` acts on it at a step boundary. A SIGHUP the process ignores
    (``nohup``) stays ignored.
    """

    NAMES = ("SIGTERM", "SIGINT", "SIGHUP")

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.received = signum
        signal.signal(signum, self._previous.pop(signum, signal.SIG_DFL))

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.NAMES:
            number = getattr(signal, name)
            if name == "SIGHUP" and signal.getsignal(number) == signal.SIG_IGN:
                continue  # nohup: the user asked for the run to outlive the terminal
            if signal.getsignal(number) != self._handle:
                self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for number, handler in list(self._previous.items()):
            if signal.getsignal(number) == self._handle:
                signal.signal(number, handler)
        self._previous.clear()
        self.received = None


STOP_SIGNALS = StopSignals()


class SaveOnSignal(pl.Callback):
    """Stop training cleanly on SIGTERM, SIGINT (Ctrl-C) or SIGHUP: finish the current step (at an
    epoch's last step, that epoch's validation and end too, but for the last epoch), save
    ``<run dir>/checkpoints/last.ckpt`` and raise :class:`~expkit.errors.Interrupted`; the run is
    recorded ``interrupted``, W&B is finished, and the process exits with 128 + the signal's number
    (143, 130, 129). ``expkit resume`` continues it from that checkpoint. A signal before training
    starts stops the run there (nothing to save); a second signal is handled as without expkit
    (:class:`StopSignals`). The reference behaviour is NVIDIA NeMo's ``PreemptionCallback``;
    SLURM's pre-timeout signal is submitit's to handle (``launcher=slurm`` requeues the job, which
    resumes from ``last.ckpt``).

    Under DDP the ranks agree every ``sync_every_n_steps`` steps (one small all-reduce), so they
    stop together; a single process checks every step (no device work).

    Args:
        sync_every_n_steps: how often DDP ranks agree on whether a signal arrived.
    """

    def __init__(self, sync_every_n_steps: int = 10) -> None:
        self.sync_every_n_steps = sync_every_n_steps
        self._deferred: int | None = None  # a signal seen at an epoch's last training step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        STOP_SIGNALS.install()
        self._deferred = None
        if STOP_SIGNALS.received is not None and trainer.world_size == 1:
            self._stop(trainer, STOP_SIGNALS.received, save=False)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._deferred is not None:  # the last epoch has ended whole (validation, checkpoints, history)
            signum, self._deferred = self._deferred, None
            self._stop(trainer, signum, save=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        received = STOP_SIGNALS.received
        if trainer.world_size > 1:
            if (trainer.global_step % self.sync_every_n_steps) != 0:
                return
            flag = torch.tensor(float(received or 0), device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max").item()) or None
        if received is None:
            return
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        if batch_idx + 1 >= trainer.num_training_batches and not last_epoch:
            # The epoch's last step: a checkpoint saved now resumes at the next epoch, so this one's
            # validation would never run. Stop when the next epoch starts instead.
            self._deferred = received
            return
        self._stop(trainer, received, save=True)

    def _stop(self, trainer: pl.Trainer, signum: int, save: bool) -> None:
        import signal
        from pathlib import Path

        from expkit.errors import Interrupted
        from expkit.tracking.files import CHECKPOINT_DIR

        path = Path(trainer.default_root_dir) / CHECKPOINT_DIR / "last.ckpt"
        if save:
            trainer.save_checkpoint(path)
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch})"
        raise Interrupted(f"stopped by {signal.Signals(signum).name} at {where}"
                          + (f"; the latest state is in {path}: `expkit resume {trainer.default_root_dir}` continues the run."
                             if save else " before training started."), signum)
