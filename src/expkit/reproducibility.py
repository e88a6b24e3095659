"""Determinism across interruptions: the random state at each epoch depends only on (seed, epoch).

Lightning restores weights, optimizer and loop counters from a checkpoint but not the global RNG
nor the data order. Reseeding at every epoch start and shuffling with an epoch-seeded generator
make a run resumed from an end-of-epoch checkpoint repeat the uninterrupted run exactly.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import RandomSampler


class EpochSeededSampler(RandomSampler):
    """A random permutation drawn from ``seed + epoch`` (Lightning calls ``set_epoch``).

    A ``RandomSampler`` subclass, so Lightning's DDP keeps shuffling when it swaps in a
    ``DistributedSampler``.
    """

    def __init__(self, data_source, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class EpochSeeder(pl.Callback):
    """Seed python, numpy and torch from ``seed + epoch`` before the first batch of every epoch.

    (Not ``on_train_epoch_start``: Lightning skips that hook for the first epoch after resuming
    from an end-of-epoch checkpoint.)
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            pl.seed_everything(self.seed + trainer.current_epoch + 1, workers=True, verbose=False)
