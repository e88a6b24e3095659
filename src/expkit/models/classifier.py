"""The LightningModule every model config builds: a network, a loss, torchmetrics, an optimizer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from expkit.metrics import ACCURACY, LOSS, STAGES, metric_key

RUN_CONFIG_KEY = "expkit_run_config"


class Classifier(pl.LightningModule):
    """Multiclass classification with cross-entropy.

    Args:
        net: partial network constructor; called with ``input_shape`` and ``num_classes``.
        optimizer: partial optimizer; called with the parameters.
        scheduler: partial LR scheduler or ``None``; called with the optimizer.
        input_shape: shape of one sample (from the datamodule's spec).
        num_classes: number of classes (from the datamodule's spec).
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.

    ``run_config`` (set by the task after construction) is the run's resolved config; it is saved
    in every checkpoint under ``RUN_CONFIG_KEY`` so ``eval.py`` can rebuild model and data from
    the checkpoint alone.
    """

    def __init__(
        self,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        input_shape: Sequence[int],
        num_classes: int,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = metric_key("val", LOSS),
    ) -> None:
        super().__init__()
        # Shapes go into the checkpoint; the partials are rebuilt from run_config.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.run_config: dict | None = None
        self.net = net(input_shape=tuple(input_shape), num_classes=num_classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # Keys "train"/"val"/"test" would clash with nn.Module.train, hence the suffix.
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    # validate_args=False: the datamodule checks labels once; the per-batch checks cost
                    # host time and, on a GPU, a synchronisation every step.
                    {ACCURACY: MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)},
                    prefix=f"{stage}/",
                )
                for stage in STAGES
            }
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.run_config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metrics = self.metrics[f"{stage}_metrics"]
        first_batch = batch_idx == 0 or not any(m.update_called for m in metrics.values(copy_state=False))
        metrics.update(logits, y)
        # Epoch-level only: no per-step host synchronisation; torchmetrics syncs across ranks.
        self.log(metric_key(stage, LOSS), loss, on_step=False, on_epoch=True, batch_size=len(y),
                 prog_bar=stage != "train", sync_dist=stage != "train")
        if first_batch:
            # Lightning keeps the metric objects, computes them at the epoch's end and resets them:
            # handing them over once an epoch gives the same values as every step, without the
            # ~0.15 ms of host work each log_dict call costs.
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # null, or the empty model/scheduler=none
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor, "interval": "epoch"},
        }
