"""A regressor LightningModule: a network, mean squared error, torchmetrics MSE/MAE/R², an optimizer.

It logs ``train/loss`` (the epoch's MSE) and, for validation and test, ``{stage}/mse``,
``{stage}/mae``, ``{stage}/r2`` and ``{stage}/loss`` (the MSE again, under the name expkit's default
``monitor.metric`` uses), all in the targets' own units and epoch-level.

Targets are scaled inside the module: the network predicts ``(y - target_mean) / target_std``
and :meth:`Regressor.forward` maps that back to target units. The two statistics are buffers
(saved in every checkpoint, so evaluation, prediction and export reproduce the trained model),
set once per fit in :meth:`Regressor.setup` from the training targets of datamodules that hold
them as tensors (``datamodule.datasets["train"].tensors[-1]``, as expkit's do); a resumed fit
restores the checkpoint's after that. Without them the network predicts raw targets (mean 0,
std 1). Why: scikit-learn's diabetes targets span 25..346 (mean 152); an MLP initialised
around 0 spends most of a short budget learning that offset and that scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

LOSS = "loss"
EVAL_STAGES = ("val", "test")


class Regressor(pl.LightningModule):
    """Regression of one or more real-valued targets with mean squared error.

    Batches are ``(x, y)``: features ``(batch, *input_shape)`` and targets ``(batch,)`` (one
    target) or ``(batch, *target_shape)`` with ``num_targets = prod(target_shape)`` numbers each.
    Outputs are shaped like the targets: ``(batch,)`` for one target, else ``(batch, num_targets)``
    from :meth:`forward` (reshaped to the targets' shape in the steps).

    Args:
        net: partial network constructor; called with ``input_shape`` and ``num_outputs``.
        optimizer: partial optimizer; called with the parameters.
        input_shape: shape of one sample (from the data's ``sizes``, see ``expkit.build``).
        num_targets: numbers predicted per sample (from the data's ``sizes``).
        scheduler: partial LR scheduler or ``None``; called with the optimizer.
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.

    Raises:
        ValueError: ``num_targets`` is below 1.
    """

    def __init__(
        self,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        input_shape: Sequence[int],
        num_targets: int,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/mse",
    ) -> None:
        super().__init__()
        if num_targets < 1:
            raise ValueError(f"model.num_targets={num_targets}: a regressor predicts at least 1 number per sample.")
        # Shapes go into the checkpoint; the partials are rebuilt from the run's recorded config.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.num_targets = int(num_targets)
        self.net = net(input_shape=tuple(input_shape), num_outputs=self.num_targets)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # Target scaling (see the module docstring), per target; identity until setup("fit") sets it.
        self.register_buffer("target_mean", torch.zeros(self.num_targets))
        self.register_buffer("target_std", torch.ones(self.num_targets))
        # Keys "val"/"test" would clash with nn.Module methods, hence the suffix. torchmetrics
        # accumulates over the epoch and syncs across ranks itself.
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()},
                    prefix=f"{stage}/",
                )
                for stage in EVAL_STAGES
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in target units: ``(batch,)`` for one target, else ``(batch, num_targets)``."""
        # reshape(-1, ...), not len(x): an exported graph keeps the batch size dynamic.
        out = self.net(x).reshape(-1, self.num_targets) * self.target_std + self.target_mean
        return out.squeeze(-1) if self.num_targets == 1 else out

    # -- target scaling ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Before fitting: the training targets' mean and std (Lightning calls this after the
        datamodule's ``setup`` and before restoring a checkpoint, whose statistics then win)."""
        if stage != "fit":
            return
        targets = training_targets(self.trainer.datamodule)
        if targets is None or len(targets) == 0:
            return
        targets = targets.reshape(len(targets), -1).double()
        if targets.shape[1] != self.num_targets:
            return  # not this module's targets: leave the scaling alone
        self.target_mean.copy_(targets.mean(dim=0))
        # The population std (every target equal: std 0 -> 1, the network then learns the offset only).
        std = targets.std(dim=0, unbiased=False)
        self.target_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        # The loss is the MSE in target units; Adam-type optimizers do not see the constant
        # factor target_std², so this trains as on standardized targets, and train/loss reads
        # like val/mse.
        loss = F.mse_loss(self(x).reshape(y.shape), y)
        self.log(f"train/{LOSS}", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> None:
        x, y = batch
        n = len(y)
        predictions = self(x).reshape(n, -1)
        targets = y.reshape(n, -1)
        if self.num_targets == 1:  # R2Score takes (n,) for one output
            predictions, targets = predictions.squeeze(-1), targets.squeeze(-1)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(predictions, targets)
        # Lightning computes the metric objects at the epoch's end (synced across ranks) and
        # resets them; handing them over every step is what epoch-level logging of metrics needs.
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=n, prog_bar=stage == "val")
        # The objective under the name every expkit module gives it (monitor.metric's default, val/loss).
        self.log(f"{stage}/{LOSS}", F.mse_loss(predictions, targets), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx):
        """Predictions ``(batch,)`` or ``(batch, num_targets)`` for a bare tensor or an ``(x, ...)`` tuple."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # null, or the empty model/scheduler=none
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor, "interval": "epoch"},
        }


def training_targets(datamodule: Any) -> torch.Tensor | None:
    """The training split's targets of a datamodule holding tensor datasets (``datasets["train"]``
    whose last tensor is the targets, as ``expkit.data.ArrayDataModule``); ``None`` otherwise."""
    datasets = getattr(datamodule, "datasets", None)
    train = datasets.get("train") if isinstance(datasets, dict) else None
    tensors = getattr(train, "tensors", None)
    if not tensors or len(tensors) < 2 or not torch.is_tensor(tensors[-1]) or not tensors[-1].is_floating_point():
        return None
    return tensors[-1]

