"""``StepTimer``: the Lightning callback that times the plain Lightning and the ``train.py`` runs.

Injected into ``train.py`` without changing expkit, through a Hydra override (the runner puts the
repository root on ``PYTHONPATH``)::

    python train.py +callbacks.bench._target_=benchmarks.timing.StepTimer

On a GPU it can also switch the model to channels-last memory and ``torch.compile`` it, in
``setup``, so plain Lightning and ``train.py`` get exactly the same treatment.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from benchmarks.clock import StepClock


class StepTimer(pl.Callback):
    """Record each training step's start and end; write them (and CUDA peak memory) at the end.

    Args:
        out: JSON file to write (default: ``$BENCH_OUT``).
        channels_last: convert the model to channels-last memory format (CNNs on a GPU).
        compile: wrap the model's network (``net``, else its ``forward``) in ``torch.compile``.
    """

    def __init__(self, out: str | None = None, channels_last: bool = False, compile: bool = False) -> None:
        self.out = out
        self.channels_last = channels_last
        self.compile = compile
        self.clock = StepClock()
        self.cuda = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile and hasattr(pl_module, "net"):
            pl_module.net = torch.compile(pl_module.net)
        elif self.compile:  # a module that is its network (the language model): its forward
            pl_module.forward = torch.compile(pl_module.forward)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cuda = pl_module.device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.end(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.cuda:  # outside the timed steps: the epoch's queued GPU work is counted in its steps
            torch.cuda.synchronize()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.cuda:
            self.clock.extra["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(pl_module.device)
        self.clock.extra["batch_size"] = _batch_size(trainer)
        if trainer.is_global_zero:
            self.clock.write(self.out)


def _batch_size(trainer: pl.Trainer) -> int | None:
    loader = trainer.train_dataloader
    return getattr(loader, "batch_size", None)
